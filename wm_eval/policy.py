"""Policies: anything that maps a batch of observations to a batch of actions.

(The policy contract and every way of naming a policy, which share its checks; zoo manifests are read by
:mod:`wm_eval.zoo_manifests`.)

:func:`load_policies` turns what a user names on the command line or passes in code
into :class:`LoadedPolicy` objects, all with the same batched contract::

    from wm_eval.policy import load_policies

    policies = load_policies("zoo", task="HalfCheetah-v5",
                             observation_space=env.observation_space, action_space=env.action_space)
    actions = policies[0].act(observations)  # [B, 17] -> [B, 6] float32, deterministic

Accepted specs:

* a path to a Stable-Baselines3 ``.zip`` (PPO, A2C, SAC, TD3, DDPG, detected from the
  file), rebuilt without unpickling any code (:mod:`wm_eval.sb3_loading`);
* a zoo manifest (``.../manifest.json``, format ``wm_eval.zoo/1``), or a folder holding
  one: all its policies (SB3 zips, or for the ``envs/`` tasks the scripted expert at given knobs); ``"<manifest>#<name>"`` selects one; ``"zoo"`` / ``"zoo:<task>"``
  is the shipped zoo of the task;
* ``"random"``: uniform random actions (:class:`RandomPolicy`, seeded by the observation);
* ``"module:callable"``: a class or argument-free factory whose result has ``predict(obs)``
  (SB3 style, ``(action, state)`` tuples welcome) or ``act(obs)``, an object with one of
  those, or a function ``obs -> action``;
* the same objects in memory (their ``source`` is then ``None``).

Such user objects are called with a whole batch ``obs [B, *observation_shape]`` and must return
``[B, *action_shape]``, once per step. One written for a single observation declares it with a
``batched = False`` attribute (on the object, its class or the function: ``one_obs.batched = False``);
it is then called once per row, ``obs [*observation_shape] -> action [*action_shape]``. Nothing
is guessed: an undeclared object whose batch call raises or returns the wrong shape gets a
:class:`~wm_eval.errors.PolicyError` (the original error chained) that says how to declare it,
and it is never called a second time on the same observations, so stateful policies see each
step once.
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces

from wm_eval.errors import PolicyError, SpaceMismatchError, WmEvalError, did_you_mean
from wm_eval.zoo_manifests import ZOO_FORMAT, load_manifest, zoo_manifest, zoo_tasks

__all__ = ["ZOO_FORMAT", "POLICY_BLOCK", "Policy", "LoadedPolicy", "ConstantPolicy", "LinearPolicy", "RandomPolicy",
           "act_in_blocks", "load_policies", "policy_file", "zoo_manifest", "zoo_tasks"]

_MODULE_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


POLICY_BLOCK = 64
"""Rows per policy call in :func:`act_in_blocks`."""


def act_in_blocks(policy: Any, obs: np.ndarray, block: int = POLICY_BLOCK) -> np.ndarray:
    """``policy.act`` on ``obs`` ``[K, obs_dim]`` in padded blocks of ``block`` rows; ``[K, act_dim]``.

    Every call has the same shape, so a row's action does not depend on how many other rows are
    acting (a batched matrix product may round differently for a different batch size); evaluation
    and collection call policies through it. A policy declared single-observation (``batched = False``)
    acts row by row anyway: no padding."""
    k = len(obs)
    if getattr(getattr(policy, "actor", None), "batched", True) is False:
        return policy.act(obs)
    padded = -(-k // block) * block
    rows = np.concatenate([obs, np.repeat(obs[:1], padded - k, axis=0)])
    return np.concatenate([policy.act(rows[lo:lo + block]) for lo in range(0, padded, block)])[:k]


@runtime_checkable
class Policy(Protocol):
    """What the rollout loops need: a ``name``, the ``action_space``, a ``source`` and a batched ``act``.

    ``act(obs)`` takes ``obs`` of shape ``[B, *observation_shape]`` and returns finite
    float32 actions of shape ``[B, *action_shape]`` inside the action bounds.
    :class:`LoadedPolicy` (what :func:`load_policies` returns) is the implementation; raw
    user objects such as :class:`LinearPolicy` become one through :func:`load_policies`.
    """

    name: str
    """Shown in reports; unique within an evaluation."""

    action_space: spaces.Box
    """The task's action space; ``act`` returns actions inside its bounds."""

    source: str | None
    """A spec from which another process reloads the identical policy with :func:`load_policies`
    (so ground-truth rollouts may run in worker processes), or ``None`` for an object that exists
    only in this process's memory."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``[B, *action_shape]`` for observations ``[B, *observation_shape]``."""
        ...


@dataclass(frozen=True, eq=False)
class LoadedPolicy:
    """A policy checked against a task's spaces, with a validated batched :meth:`act`.

    Attributes:
        name: shown in reports (file stem, manifest name, ``module:callable`` or the object's name).
        source: a string from which another process reloads the identical policy with
            :func:`load_policies` (absolute zip path, ``"<manifest>#<name>"`` or
            ``"module:callable"``), or ``None`` for an object passed in memory.
        observation_space, action_space: the task's spaces.
        actor: the raw batched function ``obs -> action``.
        algorithm: ``"PPO"``, ``"A2C"``, ``"SAC"``, ``"TD3"`` or ``"DDPG"`` for SB3 zips, else ``None``.
        metadata: the zoo manifest entry (``training_steps``, ``true_return``, ...), else empty.
    """

    name: str
    source: str | None
    observation_space: spaces.Box
    action_space: spaces.Box
    actor: Callable[[np.ndarray], Any] = field(repr=False)
    algorithm: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Float32 actions ``[B, act_dim]`` for ``obs [B, obs_dim]``, clipped to the action bounds.

        Raises:
            SpaceMismatchError: ``obs`` is not a batch of the task's observations.
            PolicyError: the policy raised, or returned the wrong shape, NaN or inf.
        """
        obs = np.asarray(obs)
        if obs.ndim != 1 + len(self.observation_space.shape) or obs.shape[1:] != self.observation_space.shape:
            raise SpaceMismatchError(f"policy '{self.name}' got observations of shape {obs.shape}; "
                                     f"expected (batch, {', '.join(map(str, self.observation_space.shape))})")
        try:
            out = _to_array(self.actor(obs))
        except WmEvalError:
            raise
        except Exception as e:  # user code: report it as a policy problem, with the original chained
            raise PolicyError(f"policy '{self.name}' raised {type(e).__name__}: {_first_line(e)}") from e
        expected = (len(obs), *self.action_space.shape)
        if out.shape != expected:
            raise PolicyError(f"policy '{self.name}' returned shape {out.shape} for a batch of {len(obs)}; "
                              f"expected {expected}")
        if not np.isfinite(out).all():
            raise PolicyError(f"policy '{self.name}' returned NaN or inf for a batch of {len(obs)}")
        return np.clip(out, self.action_space.low, self.action_space.high).astype(np.float32, copy=False)

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """SB3's ``PolicyPredictor`` interface: ``(actions, state)``; one observation gives one action.

        ``deterministic`` is accepted for compatibility: SB3 zips always act deterministically
        here, other policies act as they were written.
        """
        obs = np.asarray(observation)
        if obs.shape == self.observation_space.shape:
            return self.act(obs[None])[0], state
        return self.act(obs), state


class ConstantPolicy:
    """Always the same ``action`` (clipped to the task's bounds once loaded)."""

    def __init__(self, action: Any, *, name: str = "constant") -> None:
        self.action = np.asarray(action, dtype=np.float32)
        self.name = name

    def act(self, obs: np.ndarray) -> np.ndarray:
        """``action`` repeated for each of the ``B`` rows of ``obs``."""
        return np.tile(self.action, (len(obs), 1))


class RandomPolicy:
    """Uniform random actions in the task's bounds (infinite bounds: [-1, 1]), drawn from a generator seeded
    by each observation's bytes: a fixed function of the observation, so episodes reproduce whatever the
    batch composition, and the imagined and true episodes diverge only where their observations do (an
    observation met twice gets the same action; ``collect``'s random behaviour draws from its own streams)."""

    def __init__(self, action_space: spaces.Box) -> None:
        self.low = np.where(np.isfinite(action_space.low), action_space.low, -1.0)
        self.high = np.where(np.isfinite(action_space.high), action_space.high, 1.0)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """``[B, *observation_shape] -> [B, *action_shape]``."""
        rows = np.ascontiguousarray(obs, dtype=np.float64).reshape(len(obs), -1)
        draws = [np.random.default_rng(np.frombuffer(row.tobytes(), dtype=np.uint32)).random(self.low.shape)
                 for row in rows]
        return (self.low + (self.high - self.low) * np.asarray(draws).reshape(len(obs), *self.low.shape)
                ).astype(np.float32)


class LinearPolicy:
    """``action = obs @ W + b``, with ``W [obs_dim, act_dim]`` (clipped to the task's bounds once loaded)."""

    def __init__(self, W: Any, b: Any = None, *, name: str = "linear") -> None:
        self.W = np.asarray(W, dtype=np.float32)
        self.b = np.zeros(self.W.shape[1], np.float32) if b is None else np.asarray(b, dtype=np.float32)
        self.name = name

    def act(self, obs: np.ndarray) -> np.ndarray:
        """``obs [B, obs_dim] @ W + b``."""
        return np.asarray(obs, dtype=np.float32) @ self.W + self.b


def load_policies(spec: str | os.PathLike[str] | Any, *, observation_space: spaces.Box, action_space: spaces.Box,
                  device: str = "cpu", task: str | None = None) -> list[LoadedPolicy]:
    """Load the policies named by ``spec`` (see the module docstring) for a task's spaces.

    Args:
        spec: a path, ``"zoo[:<task>]"``, ``"<manifest>#<name>"``, ``"random"``, ``"module:callable"`` or an object.
        observation_space, action_space: the task's spaces; SB3 zips are checked against them.
        device: torch device for SB3 policies.
        task: the task id; a zoo manifest for another task is refused, and ``"zoo"`` needs it.

    Raises:
        PolicyError: a spec that cannot be resolved or loaded.
        SpaceMismatchError: a policy trained for other spaces.
    """
    spaces_ = {"observation_space": observation_space, "action_space": action_space}
    if isinstance(spec, LoadedPolicy):
        if spec.observation_space.shape != observation_space.shape or spec.action_space.shape != action_space.shape:
            raise SpaceMismatchError(f"policy '{spec.name}' was loaded for observations {spec.observation_space.shape}"
                                     f" and actions {spec.action_space.shape}, but the task has "
                                     f"{observation_space.shape} and {action_space.shape}")
        return [spec]
    if not isinstance(spec, (str, os.PathLike)):
        name = _object_name(spec)
        return [LoadedPolicy(name, None, actor=_actor(spec, f"policy '{name}'", action_space), **spaces_)]
    text = os.fspath(spec)
    if text == "random":
        return [LoadedPolicy("random", "random", actor=RandomPolicy(action_space).act, **spaces_)]
    base, sep, select = text.partition("#")
    chosen = select if sep else None
    if base == "zoo" or base.startswith("zoo:"):
        zoo_task = base[4:] or task
        if not zoo_task:
            raise PolicyError("policy spec 'zoo' needs a task: write 'zoo:<task>' or give the task")
        return _from_manifest(zoo_manifest(zoo_task), chosen, task, device, spaces_)
    path = Path(base)
    if path.is_dir() and (path / "manifest.json").is_file():
        path = path / "manifest.json"
    if path.suffix == ".json":
        return _from_manifest(path, chosen, task, device, spaces_)
    if sep:
        raise PolicyError(f"policy spec '{text}': '#<name>' selects a policy of a zoo manifest (.json) only")
    if path.suffix != ".zip" and not path.exists():
        if _MODULE_SPEC.fullmatch(text):
            return [LoadedPolicy(text, text, actor=_actor(_import(text), f"policy '{text}'", action_space),
                                 **spaces_)]
        raise PolicyError(f"policy spec '{text}' is not an existing .zip or manifest .json, 'zoo[:<task>]' "
                          "or 'module:callable'")
    from wm_eval.sb3_loading import load_sb3_zip

    actor = load_sb3_zip(path, name=path.stem, device=device, **spaces_)
    return [LoadedPolicy(path.stem, str(path.resolve()), actor=actor, algorithm=actor.algorithm, **spaces_)]


def policy_file(policy: LoadedPolicy) -> Path | None:
    """The file holding a loaded policy's weights: its SB3 zip (also for a zoo manifest entry), the
    manifest for a scripted expert (its knobs), or ``None`` for ``module:callable`` and in-memory policies."""
    if policy.source is None:
        return None
    if "scripted" in policy.metadata:
        return Path(policy.source.partition("#")[0])
    if "file" in policy.metadata:  # a zoo manifest entry: "<manifest>#<name>"
        return Path(policy.source.partition("#")[0]).parent / policy.metadata["file"]
    return Path(policy.source) if policy.algorithm is not None else None


def _from_manifest(path: Path, select: str | None, task: str | None, device: str,
                   spaces_: dict[str, spaces.Box]) -> list[LoadedPolicy]:
    return [LoadedPolicy(p.name, p.source, actor=p.actor, algorithm=p.algorithm, metadata=p.metadata, **spaces_)
            for p in load_manifest(path, select, task, device, spaces_)]


def _import(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or any error raised by the module's own code
        raise PolicyError(f"policy '{spec}': importing '{module_name}' failed ({type(e).__name__}: "
                          f"{_first_line(e)})") from e
    try:
        return functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        hint = did_you_mean(f"{module_name}:{attr}", [f"{module_name}:{n}" for n in dir(module) if not n.startswith("_")])
        raise PolicyError(f"policy '{spec}': module '{module_name}' has no attribute '{attr}'; {hint}".rstrip("; ")) from None


def _actor(obj: Any, where: str, action_space: spaces.Box) -> Callable[[np.ndarray], np.ndarray]:
    """The batched function behind ``obj`` (see the module docstring for what ``obj`` may be)."""
    if inspect.isclass(obj) or (callable(obj) and not _has(obj, "predict") and not _has(obj, "act")
                                and _takes_no_positional(obj)):
        try:
            obj = obj()
        except Exception as e:
            raise PolicyError(f"{where}: calling it without arguments raised {type(e).__name__}: "
                              f"{_first_line(e)}") from e
    batched = _declared_batched(obj, where)
    if _has(obj, "predict"):
        return _UserActor(_deterministic(obj.predict), action_space.shape, where, batched)
    if _has(obj, "act"):
        return _UserActor(obj.act, action_space.shape, where, batched)
    if callable(obj):
        return _UserActor(obj, action_space.shape, where, batched)
    raise PolicyError(f"{where} is {type(obj).__name__}: not callable and without predict(obs) or act(obs)")


def _declared_batched(obj: Any, where: str) -> bool | None:
    """The object's ``batched`` attribute: ``True``/``False`` as declared, ``None`` when absent."""
    declared = getattr(obj, "batched", None)
    if declared is None or isinstance(declared, bool):
        return declared
    raise PolicyError(f"{where}: its 'batched' attribute is {declared!r}; set it to True (takes a batch of "
                      "observations) or False (takes one observation at a time)")


class _UserActor:
    """A user's policy callable with the batched contract ``obs [B, ...] -> actions [B, ...]``.

    ``batched`` is fixed when loading, never guessed from a failure: ``False`` (declared
    single-observation) calls ``fn`` once per row; otherwise ``fn`` gets the whole batch, and
    when it raises or returns the wrong shape the error is a :class:`PolicyError` (the original
    chained) that, if nothing was declared, says how to declare a single-observation policy.
    ``fn`` is called exactly once per observation either way.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], action_shape: tuple[int, ...], where: str,
                 declared: bool | None) -> None:
        self.fn = fn
        self.action_shape = action_shape
        self.where = where
        self.declared = declared
        self.batched = declared is not False

    def _hint(self) -> str:
        if self.declared is not None:
            return ""
        return ("; wm_eval calls policies with a batch of observations [B, ...]: if this one takes one "
                "observation at a time, set `batched = False` on it")

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if not self.batched:
            return self._rows(obs)
        try:
            out = _to_array(self.fn(obs))
        except WmEvalError:
            raise
        except Exception as e:  # user code: a policy problem, with the original chained
            raise PolicyError(f"{self.where} raised {type(e).__name__}: {_first_line(e)}{self._hint()}") from e
        expected = (len(obs), *self.action_shape)
        if out.shape != expected:
            raise PolicyError(f"{self.where} returned shape {out.shape} for a batch of {len(obs)}; expected "
                              f"{expected}{self._hint()}")
        return out

    def _rows(self, obs: np.ndarray) -> np.ndarray:
        size = int(np.prod(self.action_shape))
        rows = [_to_array(self.fn(row)) for row in obs]
        bad = next((r.shape for r in rows if r.size != size), None)
        if bad is not None:
            raise PolicyError(f"{self.where} (batched = False) returned shape {bad} for one observation; "
                              f"expected {self.action_shape}")
        return np.stack([r.reshape(self.action_shape) for r in rows]) if rows else \
            np.zeros((0, *self.action_shape), np.float32)


def _to_array(out: Any) -> np.ndarray:
    """A policy's output as a float32 array: SB3 ``(action, state)`` tuples and torch tensors unwrapped."""
    if isinstance(out, tuple) and len(out) == 2 and (out[1] is None or isinstance(out[0], np.ndarray)):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


def _deterministic(predict: Callable[..., Any]) -> Callable[..., Any]:
    """``predict`` with ``deterministic=True`` when it takes that keyword (SB3 models default to sampling)."""
    try:
        params = inspect.signature(predict).parameters.values()
    except (TypeError, ValueError):
        return predict
    if any(p.name == "deterministic" or p.kind is p.VAR_KEYWORD for p in params):
        return functools.partial(predict, deterministic=True)
    return predict


def _has(obj: Any, method: str) -> bool:
    return not inspect.isclass(obj) and callable(getattr(obj, method, None))


def _takes_no_positional(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _object_name(obj: Any) -> str:
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) else getattr(obj, "__name__", type(obj).__name__)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
