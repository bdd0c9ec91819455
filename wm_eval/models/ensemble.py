"""A probabilistic ensemble of Gaussian MLPs (PETS, Chua et al. 2018), after mbrl-lib's ``GaussianMLP``."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from wm_eval.models.base import Prediction, WorldModel
from wm_eval.models.normalization import Normalizer

__all__ = ["FUSED_MIN_ROWS", "GaussianMLPEnsemble", "fused_inference_available"]

INFERENCE_DTYPES = (torch.float32, torch.bfloat16)
#: batches smaller than this use the batched-matmul path even when fused inference is on (faster there).
FUSED_MIN_ROWS = 256


@functools.cache
def fused_inference_available() -> bool:
    """Whether this torch build runs the oneDNN convolution with fused SiLU that fused inference uses
    (tried once on a tiny input)."""
    try:
        x = torch.ones(1, 2, 3, 1).to(memory_format=torch.channels_last)
        torch.ops.mkldnn._convolution_pointwise(x, torch.ones(4, 1, 1, 1), torch.zeros(4), [0, 0], [1, 1], [1, 1], 2,
                                                "swish", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


class _Workspace:
    """Tensors that :meth:`GaussianMLPEnsemble._infer` reuses between calls: one buffer per name
    (replaced when the shape, dtype or device changes) and the weights cast or reshaped for the
    inference mode (redone when a parameter changes). Copies and pickles of the model start with
    an empty workspace."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._cast: dict[tuple[torch.dtype, bool], tuple[Any, list[torch.Tensor], list[torch.Tensor]]] = {}

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_Workspace, ())

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of ``shape``, the same one as last time when that fits."""
        tensor = self._buffers.get(name)
        if tensor is None or tensor.shape != shape or tensor.dtype != dtype or tensor.device != device:
            tensor = self._buffers[name] = torch.empty(shape, dtype=dtype, device=device)
        return tensor

    def weights(self, model: GaussianMLPEnsemble, dtype: torch.dtype,
                fused: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The layers' weights and biases in ``dtype`` (the parameters themselves for unfused float32);
        ``fused``: as grouped 1x1 convolution weights ``[E * out, in, 1, 1]`` and biases ``[E * out]``."""
        weights, biases = list(model.weights), list(model.biases)
        if dtype == torch.float32 and not fused:
            return weights, biases
        key = tuple((p.device, p.data_ptr(), p._version) for p in weights + biases)
        cached = self._cast.get((dtype, fused))
        if cached is None or cached[0] != key:
            if fused:
                weights = [w.detach().transpose(1, 2).reshape(-1, w.shape[1], 1, 1) for w in weights]
                biases = [b.detach().reshape(-1) for b in biases]
            cached = self._cast[dtype, fused] = (key, [w.to(dtype).contiguous() for w in weights],
                                                 [b.to(dtype).contiguous() for b in biases])
        return cached[1], cached[2]


class GaussianMLPEnsemble(WorldModel):
    """``ensemble_size`` MLPs, each predicting a Gaussian over the next observation change and the reward.

    Member ``e`` maps the normalised input ``(obs, action)`` through ``layers`` hidden
    layers of ``hidden`` SiLU units to the mean and log-variance of the normalised
    target ``(next_obs - obs, reward)`` and to a termination logit. The log-variance
    is bounded softly by learned per-member ``max_logvar`` and ``min_logvar``, as in
    PETS (Appendix A.1) and mbrl-lib. Weights are stored as ``[E, in, out]`` tensors,
    so every layer evaluates all members in one ``torch.baddbmm``. The input and target
    normalisers are buffers fitted on the training data (:meth:`fit_normalizers`).

    Prediction follows the :class:`~wm_eval.models.base.WorldModel` contract. Inference
    runs in float32 unless :meth:`set_inference_dtype` selects bfloat16, in which case
    the layers run in bfloat16 (as under ``torch.autocast``) and everything else stays
    float32. Tensors returned by :meth:`step` are made under ``torch.inference_mode``:
    clone them before modifying them in place outside it. :meth:`step` reuses the
    layers' output buffers from call to call, so one model must not be stepped from
    several threads at once.

    Args:
        task: Gymnasium id of the task.
        obs_dim: observation size.
        act_dim: action size.
        ensemble_size: number of members ``E``.
        hidden: units per hidden layer.
        layers: number of hidden layers.
        generator: random generator for the initial weights (for reproducible training).
    """

    def __init__(
        self,
        *,
        task: str,
        obs_dim: int,
        act_dim: int,
        ensemble_size: int = 7,
        hidden: int = 200,
        layers: int = 4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(task=task, obs_dim=obs_dim, act_dim=act_dim, num_members=ensemble_size)
        self.hidden = int(hidden)
        self.layers = int(layers)
        self.target_dim = self.obs_dim + 1
        sizes = [self.obs_dim + self.act_dim] + [self.hidden] * self.layers + [2 * self.target_dim + 1]
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(ensemble_size, n_in, n_out)) for n_in, n_out in pairwise(sizes))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(ensemble_size, 1, n_out)) for n_out in sizes[1:])
        self.min_logvar = nn.Parameter(torch.full((ensemble_size, 1, self.target_dim), -10.0))
        self.max_logvar = nn.Parameter(torch.full((ensemble_size, 1, self.target_dim), 0.5))
        self.input_norm = Normalizer(self.obs_dim + self.act_dim)
        self.target_norm = Normalizer(self.target_dim)
        self.inference_dtype = torch.float32
        self.fused_inference = False
        self._workspace = _Workspace()
        self.reset_parameters(generator)

    def spec(self) -> dict[str, Any]:
        """Constructor arguments (task, sizes); ``GaussianMLPEnsemble(**spec)`` rebuilds the architecture."""
        return {
            "task": self.task,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "ensemble_size": self.num_members,
            "hidden": self.hidden,
            "layers": self.layers,
        }

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Truncated-normal weights with std ``1 / (2 sqrt(fan_in))`` (as mbrl-lib), zero biases."""
        for weight, bias in zip(self.weights, self.biases):
            std = 1.0 / (2.0 * math.sqrt(weight.shape[1]))
            nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std, generator=generator)
            bias.zero_()

    @torch.no_grad()
    def fit_normalizers(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor) -> None:
        """Fit the input and target normalisers and ``obs_scale`` on training transitions (``[N, ...]``)."""
        self.input_norm.fit(torch.cat([obs, action], dim=-1))
        self.target_norm.fit(self.targets(obs, next_obs, reward))
        self.obs_scale.copy_(self.input_norm.std[: self.obs_dim])

    def targets(self, obs: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """``[..., obs_dim + 1]`` unnormalised regression targets ``(next_obs - obs, reward)``."""
        return torch.cat([next_obs - obs, reward.unsqueeze(-1)], dim=-1)

    def set_inference_dtype(self, dtype: torch.dtype, *, fused: bool = False) -> None:
        """Run the layers of :meth:`step` in ``dtype`` (``torch.float32`` or ``torch.bfloat16``).

        ``fused=True`` runs each layer of all members, on the CPU and from
        :data:`FUSED_MIN_ROWS` rows up, as one grouped 1x1 oneDNN convolution with the SiLU
        fused in: about 2x faster in float32 on CPUs where MKL's matrix products fall back
        to AVX2 (AMD), but float32 results then differ from :meth:`forward` by rounding
        (about 1e-6 relative) and slightly with the batch size. Off by default, so float32
        inference is bitwise what :meth:`forward` computes. Needs
        :func:`fused_inference_available`.
        """
        if dtype not in INFERENCE_DTYPES:
            raise ValueError(f"inference dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        if fused and not fused_inference_available():
            raise ValueError("fused inference needs a torch build with oneDNN (mkldnn); use fused=False")
        self.inference_dtype, self.fused_inference = dtype, bool(fused)

    def select_members(self, indices: Sequence[int]) -> GaussianMLPEnsemble:
        """A new ensemble made of copies of the members ``indices`` (for keeping the elites)."""
        index = torch.as_tensor(list(indices), dtype=torch.long, device=self.device)
        model = type(self)(**{**self.spec(), "ensemble_size": len(index)}).to(self.device)
        member_keys = {name for name, _ in self.named_parameters()}
        state = {key: value[index] if key in member_keys else value for key, value in self.state_dict().items()}
        model.load_state_dict(state)
        model.inference_dtype, model.fused_inference = self.inference_dtype, self.fused_inference
        return model.train(self.training)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw outputs of all members for normalised inputs ``[B, in]`` (shared) or ``[E, B, in]``.

        Returns:
            ``(mean, logvar, termination_logit)`` of shapes ``[E, B, obs_dim + 1]``,
            ``[E, B, obs_dim + 1]`` and ``[E, B]``, in normalised target units.
        """
        hidden = inputs.expand(self.num_members, -1, -1) if inputs.ndim == 2 else inputs
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            hidden = torch.baddbmm(bias, hidden, weight)
            if i < last:
                hidden = F.silu(hidden, inplace=not torch.is_grad_enabled())
        hidden = hidden.float()
        mean, raw_logvar = hidden[..., : self.target_dim], hidden[..., self.target_dim : 2 * self.target_dim]
        return mean, self._bound_logvar(raw_logvar), hidden[..., -1]

    def member_losses(
        self, inputs: torch.Tensor, targets: torch.Tensor, terminated: torch.Tensor, *, pos_weight: float = 1.0
    ) -> torch.Tensor:
        """``[E]`` training loss per member on normalised ``inputs`` and ``targets``.

        The Gaussian negative log-likelihood (without its constant) averaged over batch
        and target dimensions, plus the binary cross-entropy of the termination logit
        (``pos_weight`` up-weights the rare terminal transitions). ``inputs`` is
        ``[B, in]`` or ``[E, B, in]``; ``targets`` and ``terminated`` match its batch axes.
        """
        mean, logvar, logit = self(inputs)
        targets, terminated = targets.expand_as(mean), terminated.to(logit.dtype).expand_as(logit)
        nll = 0.5 * ((mean - targets).square() * torch.exp(-logvar) + logvar)
        weight = torch.tensor(pos_weight, dtype=logit.dtype, device=logit.device)
        bce = F.binary_cross_entropy_with_logits(logit, terminated, pos_weight=weight, reduction="none")
        return nll.mean(dim=(1, 2)) + bce.mean(dim=1)

    def logvar_bound_penalty(self) -> torch.Tensor:
        """``0.01 * (sum(max_logvar) - sum(min_logvar))``: keeps the learned bounds tight (PETS)."""
        return 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())

    def nll(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """``[B]`` negative log-likelihood of ``(next_obs - obs, reward)`` under the equal-weight mixture of
        the members, in normalised target units, divided by ``obs_dim + 1``."""
        with torch.inference_mode():
            inputs = self.input_norm.normalize(torch.cat([obs, action], dim=-1))
            targets = self.target_norm.normalize(self.targets(obs, next_obs, reward))
            mean, logvar, _ = self(inputs)
            log_prob = -0.5 * ((mean - targets).square() * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)
            mixture = torch.logsumexp(log_prob, dim=0) - math.log(self.num_members)
            return -mixture / self.target_dim

    def _bound_logvar(self, logvar: torch.Tensor) -> torch.Tensor:
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        return self.min_logvar + F.softplus(logvar - self.min_logvar)

    def _step(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        *,
        propagation: str,
        members: torch.Tensor | None,
        generator: torch.Generator | None,
        sample: bool,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Prediction]:
        with torch.inference_mode():
            inputs = self.input_norm.normalize(torch.cat([state, action], dim=-1))
            raw = self._infer(inputs)
            mean, logit = raw[..., : self.target_dim], raw[..., -1]
            batch = len(state)
            average = mean.mean(dim=0)
            spread = mean[..., : self.obs_dim] - average[:, : self.obs_dim]
            uncertainty = spread.square_().mean(dim=0).sqrt_().mean(dim=-1)
            probs = torch.sigmoid(logit)
            logvar = self._bound_logvar(raw[..., self.target_dim : 2 * self.target_dim]) if sample else None
            if propagation == "mean":
                member = torch.full((batch,), -1, dtype=torch.long, device=self.device)
                chosen_mean, termination_prob = average, probs.mean(dim=0)
                chosen_logvar = torch.logsumexp(logvar, dim=0) - math.log(self.num_members) if sample else None
            else:
                if propagation == "ts1" and members is None:
                    member = torch.randint(self.num_members, (batch,), generator=generator, device=self.device)
                else:
                    member = members
                rows = torch.arange(batch, device=self.device)
                chosen_mean, termination_prob = mean[member, rows], probs[member, rows]
                chosen_logvar = logvar[member, rows] if sample else None
            if chosen_logvar is not None:
                if noise is None:
                    noise = torch.randn(chosen_mean.shape, generator=generator, device=self.device)
                chosen_mean = torch.addcmul(chosen_mean, noise, torch.exp(0.5 * chosen_logvar))
            target = self.target_norm.denormalize(chosen_mean)
            next_obs = state + target[:, : self.obs_dim]
            prediction = Prediction(
                next_obs=next_obs,
                reward=target[:, self.obs_dim],
                terminated=termination_prob > 0.5,
                termination_prob=termination_prob,
                uncertainty=uncertainty,
                member=member,
            )
            return next_obs, prediction

    def _infer(self, inputs: torch.Tensor) -> torch.Tensor:
        """:meth:`forward`'s raw outputs ``[E, B, 2 * target_dim + 1]`` (float32) for inputs ``[B, in]``, fast.

        The same operations as :meth:`forward`, so float32 results are bitwise equal,
        but each layer writes into a buffer kept for the next call of the same batch
        size (large fresh tensors cost a page fault per 4 KiB), and for bfloat16 the
        weights are cast once per change of the parameters instead of at every call.
        Must run under ``torch.inference_mode``; the result is overwritten by the next call.
        With fused inference on (:meth:`set_inference_dtype`), large CPU batches go to
        :meth:`_infer_fused` instead.
        """
        dtype = self.inference_dtype
        if self.fused_inference and inputs.device.type == "cpu" and len(inputs) >= FUSED_MIN_ROWS:
            return self._infer_fused(inputs)
        weights, biases = self._workspace.weights(self, dtype)
        hidden = inputs.to(dtype).expand(self.num_members, -1, -1)
        last = len(weights) - 1
        for i, (weight, bias) in enumerate(zip(weights, biases)):
            name = f"hidden{i % 2}" if i < last else "output"
            out = self._workspace.buffer(name, (self.num_members, len(inputs), weight.shape[-1]), dtype, self.device)
            hidden = torch.baddbmm(bias, hidden, weight, out=out)
            if i < last:
                F.silu(hidden, inplace=True)
        if dtype != torch.float32:
            hidden = self._workspace.buffer("output_f32", hidden.shape, torch.float32, self.device).copy_(hidden)
        return hidden

    def _infer_fused(self, inputs: torch.Tensor) -> torch.Tensor:
        """:meth:`_infer` as grouped 1x1 oneDNN convolutions: the ``B`` rows are the pixels of a
        channels-last image whose channels are the members' units (group ``e`` = member ``e``;
        the first layer is ungrouped, as all members read the same input), SiLU fused in."""
        rows, members = len(inputs), self.num_members
        weights, biases = self._workspace.weights(self, self.inference_dtype, fused=True)
        hidden = inputs.to(self.inference_dtype).reshape(1, rows, 1, -1).permute(0, 3, 1, 2)
        last = len(weights) - 1
        for i, (weight, bias) in enumerate(zip(weights, biases)):
            groups, activation = members if i else 1, "swish" if i < last else "none"
            hidden = torch.ops.mkldnn._convolution_pointwise(
                hidden, weight, bias, [0, 0], [1, 1], [1, 1], groups, activation, [], "")
        return hidden.permute(0, 2, 3, 1).reshape(rows, members, -1).transpose(0, 1).float()
