"""The :class:`WorldModel` contract every learned model of wm_eval fulfils."""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import torch
from torch import nn

from wm_eval.errors import InvalidActionError, SpaceMismatchError

__all__ = ["PROPAGATIONS", "InvalidActionError", "Prediction", "WorldModel"]

PROPAGATIONS = ("mean", "ts1", "ts_inf")


class Prediction(NamedTuple):
    """One predicted transition for a batch of ``B`` rows.

    Attributes:
        next_obs: ``[B, obs_dim]`` float32, the predicted next observation.
        reward: ``[B]`` float32, the predicted reward of the transition.
        terminated: ``[B]`` bool, ``termination_prob > 0.5``.
        termination_prob: ``[B]`` float32 in ``[0, 1]``, the predicted probability that
            the next state is terminal.
        uncertainty: ``[B]`` float32 ``>= 0``, the disagreement of the ensemble members
            (see :class:`WorldModel`).
        member: ``[B]`` int64, the member whose prediction was used, or ``-1`` for the
            mean over members.
    """

    next_obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    termination_prob: torch.Tensor
    uncertainty: torch.Tensor
    member: torch.Tensor


class WorldModel(nn.Module, abc.ABC):
    """A learned, action-conditioned model of one task's dynamics, reward and termination.

    The interface is stateful so that latent or recurrent model families fit without
    changing the environments and the evaluation code that drive it::

        state = model.initial_state(obs)                      # obs: [B, obs_dim]
        state, pred = model.step(state, action)               # action: [B, act_dim]
        pred.next_obs, pred.reward, pred.terminated, pred.uncertainty

    ``predict(obs, action)`` is ``step(initial_state(obs), action)[1]``. All inputs are
    batched (a leading axis ``B``, possibly 1); they may be tensors or arrays and are
    converted to float32 on the model's device. Wrong shapes raise
    :class:`~wm_eval.errors.SpaceMismatchError`; NaN or infinite actions raise
    :class:`InvalidActionError` (non-finite states are passed through, so a diverging
    rollout shows up in the results instead of stopping the evaluation). Returned
    tensors may be made under ``torch.inference_mode``: read them, convert them, or
    ``clone()`` them before modifying them in place.

    Propagation (how an ensemble turns its members into one prediction per row):

    - ``"mean"``: the average of the members' predicted means (``member == -1``).
    - ``"ts1"``: each row uses a member drawn uniformly at random, anew every step,
      from ``generator`` (trajectory sampling TS1 of PETS, Chua et al. 2018).
    - ``"ts_inf"``: row ``i`` uses member ``members[i]``; the caller draws ``members``
      once per rollout and passes it at every step (TS-infinity). Without ``members``
      this raises ``ValueError``.

    ``sample=True`` draws the next observation and reward from the chosen member's
    Gaussian instead of using its mean, with standard normals ``noise`` ``[B, obs_dim + 1]``
    when given (else from ``generator``) (for ``"mean"``: from the
    Gaussian with the members' average mean and average variance); termination is
    always ``termination_prob > 0.5``.

    ``uncertainty`` is computed from all members at every call, whatever the
    propagation: the standard deviation across members (population, so one member
    gives 0) of the predicted mean of the normalised next-observation change
    ``(next_obs - obs - mean_delta) / std_delta``, averaged over observation dimensions.

    Attributes:
        task: the Gymnasium id of the task the model was trained on (``"Hopper-v5"``).
        obs_dim: observation size.
        act_dim: action size.
        num_members: number of ensemble members used for prediction.
        obs_scale: ``[obs_dim]`` buffer, the per-dimension standard deviation of the
            training observations; divide state errors by it to compare dimensions.
        coverage: what the training data covered (:class:`~wm_eval.models.coverage.Coverage`,
            set when loaded from a checkpoint that stores it), or ``None``: trust then rests on
            disagreement alone.

    Subclasses implement :meth:`_step`, :meth:`nll` and :meth:`spec`, and may override
    :meth:`initial_state` and :attr:`state_shape` for a latent state. ``cls(**spec())``
    must rebuild a model whose state_dict has the same keys and shapes.
    """

    task: str
    obs_dim: int
    act_dim: int
    num_members: int
    obs_scale: torch.Tensor
    coverage: Any = None

    def __init__(self, *, task: str, obs_dim: int, act_dim: int, num_members: int) -> None:
        super().__init__()
        self.task = task
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.num_members = int(num_members)
        self.register_buffer("obs_scale", torch.ones(self.obs_dim))

    @property
    def device(self) -> torch.device:
        """The device the model's tensors live on."""
        return self.obs_scale.device

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one row of the model state (``(obs_dim,)`` unless latent)."""
        return (self.obs_dim,)

    def initial_state(self, obs: Any) -> torch.Tensor:
        """The model state for observations ``obs`` of shape ``[B, obs_dim]`` (here: ``obs``)."""
        return self._batch(obs, (self.obs_dim,), "observation")

    def step(
        self,
        state: Any,
        action: Any,
        *,
        propagation: str = "mean",
        members: Any = None,
        generator: torch.Generator | None = None,
        sample: bool = False,
        noise: Any = None,
    ) -> tuple[torch.Tensor, Prediction]:
        """Advance ``state`` ``[B, *state_shape]`` by ``action`` ``[B, act_dim]``.

        Returns the new state and the :class:`Prediction` of the transition. See the
        class docstring for ``propagation``, ``members`` (``[B]`` int: required for
        ``"ts_inf"``, this step's draws for ``"ts1"``), ``generator``, ``sample`` and
        ``noise`` (``[B, obs_dim + 1]`` standard normals for ``sample=True``).
        """
        state = self._batch(state, self.state_shape, "state")
        action = self._batch(action, (self.act_dim,), "action")
        if len(state) != len(action):
            raise SpaceMismatchError(f"state has batch size {len(state)} but action has {len(action)}; pass one action per row")
        if not bool(torch.isfinite(action).all()):
            raise InvalidActionError("action contains NaN or infinite values; check the policy's output")
        if propagation not in PROPAGATIONS:
            raise ValueError(f"unknown propagation {propagation!r}; use one of {', '.join(PROPAGATIONS)}")
        if propagation == "ts_inf" or (propagation == "ts1" and members is not None):
            members = self._members(members, len(action))
        if sample and noise is not None:
            noise = self._batch(noise, (self.obs_dim + 1,), "noise")
        return self._step(state, action, propagation=propagation, members=members, generator=generator,
                          sample=sample, noise=noise)

    def predict(self, obs: Any, action: Any, **kwargs: Any) -> Prediction:
        """One transition from observations ``[B, obs_dim]``: ``step(initial_state(obs), action, **kwargs)[1]``."""
        return self.step(self.initial_state(obs), action, **kwargs)[1]

    @abc.abstractmethod
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
        """:meth:`step` on validated float32 inputs (``members`` is set for ``"ts_inf"``, and for
        ``"ts1"`` when the caller drew them; ``noise`` ``[B, obs_dim + 1]`` or ``None``)."""

    @abc.abstractmethod
    def nll(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """``[B]`` negative log-likelihood of the observed transitions, per normalised output dimension."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able constructor arguments: ``type(self)(**self.spec())`` rebuilds the architecture."""

    def _batch(self, x: Any, shape: tuple[int, ...], name: str) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            expected = "[B, " + ", ".join(str(s) for s in shape) + "]"
            raise SpaceMismatchError(
                f"{self.task} world model expects {name} of shape {expected}, got {list(x.shape)}; add a batch axis or check the task"
            )
        return x

    def _members(self, members: Any, batch: int) -> torch.Tensor:
        if members is None:
            raise ValueError('propagation "ts_inf" needs members (one member index per row, drawn once per rollout)')
        members = torch.as_tensor(members, dtype=torch.long, device=self.device)
        if members.shape != (batch,):
            raise SpaceMismatchError(f"members must have shape [{batch}] (one index per row), got {list(members.shape)}")
        if batch and (int(members.min()) < 0 or int(members.max()) >= self.num_members):
            raise ValueError(f"members must lie in [0, {self.num_members - 1}] for this {self.num_members}-member model")
        return members
