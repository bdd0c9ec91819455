"""Load Stable-Baselines3 ``.zip`` policies without running any pickled code.

(Over 400 lines on purpose: the whole parser of one untrusted file format, kept in one module so every
safety check on it can be reviewed in one place.)

An SB3 zip holds ``data`` (JSON; every value JSON cannot hold is a cloudpickled,
base64 ``":serialized:"`` entry next to a few readable fields), ``policy.pth``
(the policy's ``state_dict``) and optimizer/variable ``.pth`` files. Unpickling
``data`` would run whatever code the file names, so instead:

* the algorithm is detected from the file: the policy class is read from the
  pickle's opcodes (:func:`read_pickle_literal`, which never imports or calls
  anything) and PPO/A2C, TD3/DDPG are told apart by plain JSON fields
  (``clip_range`` only exists for PPO; DDPG is TD3 with ``policy_delay == 1`` and
  ``target_noise_clip == 0``);
* the recorded spaces are checked through their readable ``_shape``/``low``/``high``
  fields, while the spaces used are the caller's (the task's);
* ``policy_kwargs`` is read from its opcodes the same way: the activation
  function must be a class of ``torch.nn.modules.activation``; gSDE, custom
  feature extractors and unknown keys are refused with a :class:`PolicyError`;
* the layer sizes come from the ``state_dict`` shapes;
* the file is read into memory once and every entry comes from those bytes (no second
  open of the path, so the file cannot change between the checks and the load); the CRC
  of every entry is checked, so a damaged download is reported even where it hits an
  unused entry;
  ``policy.pth`` alone is read, with ``torch.load(..., weights_only=True)``, and loaded
  strictly; the other ``.pth`` entries (optimizer and training state, never needed to act)
  are not loaded at all, and a warning names them.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import pickle
import pickletools
import stat
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from wm_eval.errors import PolicyError, SpaceMismatchError

__all__ = ["ALGORITHMS", "PickledGlobal", "Opaque", "read_pickle_literal", "SB3Actor", "IgnoredEntriesWarning",
           "load_sb3_zip"]

ALGORITHMS = ("PPO", "A2C", "SAC", "TD3", "DDPG")

_FAMILIES = {  # the SB3 policy classes an MLP policy of each algorithm pickles as
    ("stable_baselines3.common.policies", "ActorCriticPolicy"): "actor_critic",
    ("stable_baselines3.sac.policies", "SACPolicy"): "sac",
    ("stable_baselines3.td3.policies", "TD3Policy"): "td3",
}
_FLATTEN = ("stable_baselines3.common.torch_layers", "FlattenExtractor")
# policy_kwargs that only matter for initialisation, training or gSDE (refused separately),
# or whose effect is fixed by the state_dict shapes.
_IGNORED_KWARGS = {"net_arch", "n_critics", "ortho_init", "log_std_init", "optimizer_class", "optimizer_kwargs",
                   "full_std", "use_expln", "clip_mean"}
_PASSED_KWARGS = {"share_features_extractor", "normalize_images"}
_CHECKED_KWARGS = {"activation_fn", "features_extractor_class", "features_extractor_kwargs", "use_sde",
                   "squash_output"}


SB3_TRAINING_STATE = ("policy.optimizer.pth", "pytorch_variables.pth")
"""Entries every SB3 zip holds besides ``policy.pth``: training state, never loaded, ignored silently."""


class IgnoredEntriesWarning(UserWarning):
    """An SB3 zip holds ``.pth`` entries besides ``policy.pth`` (optimizer state, ...) that were not loaded."""


@dataclass(frozen=True)
class PickledGlobal:
    """A class or function a pickle refers to by name (never imported by the reader)."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Opaque:
    """A value only running code could rebuild (``REDUCE``, ``NEWOBJ``, ...): ``what`` names the callable."""

    what: str


_LITERALS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
             "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "BINUNICODE8", "SHORT_BINUNICODE", "BINBYTES",
             "BINBYTES8", "SHORT_BINBYTES", "BYTEARRAY8"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_EMPTY = {"EMPTY_LIST": list, "EMPTY_DICT": dict, "EMPTY_TUPLE": tuple, "EMPTY_SET": set}
_FROM_MARK = {"TUPLE": tuple, "LIST": list, "FROZENSET": frozenset,
              "DICT": lambda items: dict(zip(items[::2], items[1::2]))}
_CALLS = {"REDUCE": 1, "NEWOBJ": 1, "NEWOBJ_EX": 2, "OBJ": 0}  # opcodes that call code: how many arguments
_IGNORED_OPS = {"PROTO", "FRAME"}


def read_pickle_literal(data: bytes) -> Any:
    """Read a pickle's plain values by walking its opcodes with :func:`pickletools.genops`.

    Strings, numbers, bytes, ``None``/bools, lists, tuples, dicts and sets come back as
    themselves; a global reference as :class:`PickledGlobal`; anything built by calling
    code as :class:`Opaque`. Nothing is imported or executed. Raises ``ValueError`` for a
    malformed pickle or an opcode outside this subset (extension registry, persistent ids).
    """
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        nonlocal stack
        items, stack = stack, marks.pop()
        return items

    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name == "STOP":
                return stack.pop()
            if name in _IGNORED_OPS:
                continue
            if name in _LITERALS:
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name in _EMPTY:
                stack.append(_EMPTY[name]())
            elif name in _FROM_MARK:
                value = _FROM_MARK[name](pop_mark())  # pop_mark() rebinds ``stack``: call it first
                stack.append(value)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items, stack[-n:] = stack[-n:], []
                stack.append(tuple(items))
            elif name == "MARK":
                marks.append(stack)
                stack = []
            elif name == "POP_MARK":
                pop_mark()
            elif name == "POP":
                stack.pop()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("APPEND", "APPENDS", "ADDITEMS"):
                items = [stack.pop()] if name == "APPEND" else pop_mark()
                if isinstance(stack[-1], list):
                    stack[-1].extend(items)
                elif isinstance(stack[-1], set):
                    stack[-1].update(items)
            elif name in ("SETITEM", "SETITEMS"):
                items = pop_mark() if name == "SETITEMS" else [stack.pop(-2), stack.pop()]
                if isinstance(stack[-1], dict):
                    stack[-1].update(zip(items[::2], items[1::2]))
            elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "GLOBAL":
                stack.append(PickledGlobal(*arg.split(" ", 1)))
            elif name == "STACK_GLOBAL":
                qualname = stack.pop()
                stack.append(PickledGlobal(stack.pop(), qualname))
            elif name in _CALLS:
                args = pop_mark() if name == "OBJ" else [stack.pop() for _ in range(_CALLS[name])]
                func = args[0] if name == "OBJ" else stack.pop()
                stack.append(Opaque(str(func)))
            elif name == "INST":
                pop_mark()
                stack.append(Opaque(arg.replace(" ", ".")))
            elif name == "BUILD":  # sets state on an object that is already Opaque
                stack.pop()
            else:
                raise ValueError(f"unsupported pickle opcode {name}")
    except (IndexError, KeyError, TypeError) as e:
        raise ValueError(f"malformed pickle ({type(e).__name__}: {e})") from e
    raise ValueError("pickle has no STOP opcode")


class SB3Actor:
    """A rebuilt SB3 policy network as a batched, deterministic ``obs [B, obs_dim] -> action [B, act_dim]``.

    One forward pass per call (``policy._predict(obs, deterministic=True)`` under
    :func:`torch.inference_mode`), then the action is unscaled (squashed policies:
    SAC, TD3, DDPG) or clipped to the action bounds, exactly as SB3's ``predict`` does.
    """

    def __init__(self, policy: Any, algorithm: str) -> None:
        self.policy = policy
        self.algorithm = algorithm

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        policy = self.policy
        with torch.inference_mode():
            obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=policy.device)
            actions = policy._predict(obs_t, deterministic=True).cpu().numpy()
        actions = actions.reshape((-1, *policy.action_space.shape))
        if policy.squash_output:
            return policy.unscale_action(actions)
        return np.clip(actions, policy.action_space.low, policy.action_space.high)


def _is_serialized(value: Any) -> bool:
    return isinstance(value, dict) and ":serialized:" in value


def _decode(raw: dict[str, Any], key: str, where: str) -> Any:
    """The value of ``raw[key]``: plain JSON as is, a serialized entry read from its opcodes."""
    value = raw.get(key)
    if not _is_serialized(value):
        return value
    try:
        return read_pickle_literal(base64.b64decode(value[":serialized:"], validate=True))
    except (ValueError, binascii.Error) as e:
        raise PolicyError(f"{where}: the '{key}' entry is corrupt ({e})") from e


@dataclass(frozen=True)
class _Archive:
    """What is used of an SB3 zip, taken from one in-memory copy of the file."""

    raw: dict[str, Any]  # the ``data`` entry (JSON)
    policy_pth: bytes  # the ``policy.pth`` entry: the policy's state_dict, still serialized
    ignored: tuple[str, ...]  # the other ``.pth`` entries, never deserialized


def _read_file(path: Path) -> bytes:
    """The bytes of the regular file at ``path``, from a single open (a FIFO or device is refused unread)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise PolicyError(f"policy file '{path}' does not exist") from None
    except OSError as e:
        raise PolicyError(f"cannot read policy file '{path}': {e.strerror or e}") from e
    with open(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise PolicyError(f"policy file '{path}' is not a file")
        try:
            return file.read()
        except OSError as e:
            raise PolicyError(f"cannot read policy file '{path}': {e.strerror or e}") from e


def _open_archive(data: bytes, path: Path) -> _Archive:
    """The ``data`` JSON and the ``policy.pth`` bytes of an SB3 zip held in memory as ``data``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            missing = [n for n in ("data", "policy.pth") if n not in names]
            if missing:
                raise PolicyError(f"'{path}' is truncated or corrupt, or not a Stable-Baselines3 model zip (no "
                                  f"{' or '.join(missing)} entry); save policies with model.save()")
            damaged = archive.testzip()  # CRC of every entry, the unused ones too: none is deserialized
            if damaged is not None:
                raise PolicyError(f"'{path}' is truncated or corrupt (its {damaged} entry fails the CRC check)")
            raw = json.loads(archive.read("data").decode("utf-8"))
            policy_pth = archive.read("policy.pth")
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, json.JSONDecodeError,
            NotImplementedError, RuntimeError) as e:  # NotImplementedError/RuntimeError: odd compression, encryption
        raise PolicyError(f"'{path}' is not a readable zip file ({type(e).__name__}: {e}); "
                          "it may be truncated or corrupt") from e
    if not isinstance(raw, dict):
        raise PolicyError(f"'{path}' is not a Stable-Baselines3 model zip (its 'data' is not a JSON object)")
    ignored = tuple(sorted({n for n in names if n.endswith(".pth") and n != "policy.pth"}))
    return _Archive(raw, policy_pth, ignored)


def _load_state(policy_pth: bytes, where: str) -> dict[str, torch.Tensor]:
    """The policy's state_dict, deserialized with ``torch.load(weights_only=True)`` (tensors and containers only)."""
    try:
        state = torch.load(io.BytesIO(policy_pth), map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise PolicyError(f"{where}: cannot read its weights ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}); the file may be truncated or corrupt") from e
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise PolicyError(f"{where}: policy.pth holds no state_dict of tensors")
    return state


def _detect(raw: dict[str, Any], where: str) -> tuple[str, str]:
    """``(family, algorithm)`` from the pickled policy class and plain JSON fields."""
    cls = _decode(raw, "policy_class", where)
    if not isinstance(cls, PickledGlobal):
        raise PolicyError(f"{where}: its policy class is defined in the training script (pickled by value) and "
                          "cannot be rebuilt without running that code; only SB3's MlpPolicy can be loaded")
    family = _FAMILIES.get((cls.module, cls.name))
    if family is None:
        if cls.module.startswith("stable_baselines3."):
            raise PolicyError(f"{where}: uses SB3's {cls.name}, which needs image or dict observations; "
                              "wm_eval loads MlpPolicy on Box spaces only")
        raise PolicyError(f"{where}: uses the custom policy class {cls}, which cannot be rebuilt without running "
                          "pickled code; only SB3's MlpPolicy (PPO, A2C, SAC, TD3, DDPG) can be loaded")
    if family == "actor_critic":
        return family, "PPO" if "clip_range" in raw else "A2C"
    if family == "sac":
        return family, "SAC"
    ddpg = raw.get("policy_delay") == 1 and raw.get("target_noise_clip") == 0.0
    return family, "DDPG" if ddpg else "TD3"


def _parse_bounds(text: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """The bound array printed by ``str(ndarray)``, or None if it was summarised (``...``)."""
    if not isinstance(text, str) or "..." in text:
        return None
    values = np.array(text.replace("[", " ").replace("]", " ").split(), dtype=np.float64)
    return values.reshape(shape) if values.size == int(np.prod(shape)) else None


def _recorded_box(raw: dict[str, Any], key: str, where: str) -> tuple[tuple[int, ...], np.ndarray | None,
                                                                         np.ndarray | None]:
    entry = raw.get(key)
    kind = entry.get(":type:", "?") if isinstance(entry, dict) else type(entry).__name__
    if not isinstance(entry, dict) or not kind.endswith(".Box'>"):
        raise PolicyError(f"{where}: its {key} is {kind}; wm_eval loads policies for Box spaces only")
    shape = tuple(int(n) for n in entry.get("_shape", entry.get("shape", ())))
    return shape, _parse_bounds(entry.get("low"), shape), _parse_bounds(entry.get("high"), shape)


def _check_spaces(raw: dict[str, Any], name: str, where: str, observation_space: spaces.Box,
                  action_space: spaces.Box) -> None:
    obs_shape, _, _ = _recorded_box(raw, "observation_space", where)
    act_shape, low, high = _recorded_box(raw, "action_space", where)
    if obs_shape != observation_space.shape or act_shape != action_space.shape:
        raise SpaceMismatchError(
            f"policy '{name}' was trained for observations {obs_shape} and actions {act_shape}, but the task has "
            f"observations {observation_space.shape} and actions {action_space.shape}; pick a policy of this task")
    for label, recorded, task in (("low", low, action_space.low), ("high", high, action_space.high)):
        if recorded is not None and not np.allclose(recorded, task, rtol=1e-6, atol=1e-6, equal_nan=True):
            raise SpaceMismatchError(f"policy '{name}' was trained with action {label} bound {recorded.tolist()}, "
                                     f"but the task's is {task.tolist()}; pick a policy of this task")


def _policy_kwargs(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The constructor keywords that change the network, read without unpickling."""
    if raw.get("use_sde"):
        raise PolicyError(f"{where}: uses gSDE (use_sde=True), which wm_eval cannot rebuild safely; "
                          "retrain with use_sde=False")
    kwargs = _decode(raw, "policy_kwargs", where) or {}
    if not isinstance(kwargs, dict):
        raise PolicyError(f"{where}: its policy_kwargs cannot be read without unpickling ({kwargs})")
    unknown = sorted(set(kwargs) - _IGNORED_KWARGS - _PASSED_KWARGS - _CHECKED_KWARGS)
    if unknown:
        raise PolicyError(f"{where}: policy_kwargs {unknown} are not understood; wm_eval rebuilds plain MLP "
                          "policies only (net_arch, activation_fn, ...)")
    if kwargs.get("use_sde") or kwargs.get("squash_output"):
        raise PolicyError(f"{where}: uses gSDE (use_sde/squash_output in policy_kwargs), which wm_eval cannot "
                          "rebuild safely; retrain with use_sde=False")
    extractor = kwargs.get("features_extractor_class", PickledGlobal(*_FLATTEN))
    if extractor != PickledGlobal(*_FLATTEN) or kwargs.get("features_extractor_kwargs"):
        raise PolicyError(f"{where}: uses a custom features extractor ({extractor}), which wm_eval cannot rebuild "
                          "without running pickled code; only SB3's FlattenExtractor is supported")
    out = {k: kwargs[k] for k in _PASSED_KWARGS & set(kwargs) if isinstance(kwargs[k], bool)}
    if "activation_fn" in kwargs:
        out["activation_fn"] = _activation(kwargs["activation_fn"], where)
    return out


def _activation(ref: Any, where: str) -> type[torch.nn.Module]:
    if isinstance(ref, PickledGlobal) and ref.module in ("torch.nn.modules.activation", "torch.nn"):
        cls = getattr(torch.nn.modules.activation, ref.name, None)
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            return cls
    raise PolicyError(f"{where}: its activation_fn ({ref}) is not a torch.nn activation class, so it cannot be "
                      "rebuilt without running pickled code")


def _layer_sizes(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Output sizes of the ``nn.Linear`` layers of the ``nn.Sequential`` stored under ``prefix``."""
    index = sorted(int(k[len(prefix):-len(".weight")]) for k in state
                   if k.startswith(prefix) and k.endswith(".weight") and k[len(prefix):-len(".weight")].isdigit())
    return [int(state[f"{prefix}{i}.weight"].shape[0]) for i in index]


def _zero_lr(_progress_remaining: float) -> float:
    return 0.0


def _build(family: str, state: dict[str, torch.Tensor], kwargs: dict[str, Any], observation_space: spaces.Box,
           action_space: spaces.Box) -> Any:
    if family == "actor_critic":
        from stable_baselines3.common.policies import ActorCriticPolicy

        net_arch = {"pi": _layer_sizes(state, "mlp_extractor.policy_net."),
                    "vf": _layer_sizes(state, "mlp_extractor.value_net.")}
        return ActorCriticPolicy(observation_space, action_space, _zero_lr, net_arch=net_arch, **kwargs)
    qf = _layer_sizes(state, "critic.qf0.")[:-1]
    n_critics = len({k.split(".")[1] for k in state if k.startswith("critic.qf")})
    if family == "sac":
        from stable_baselines3.sac.policies import SACPolicy

        net_arch = {"pi": _layer_sizes(state, "actor.latent_pi."), "qf": qf}
        return SACPolicy(observation_space, action_space, _zero_lr, net_arch=net_arch, n_critics=n_critics, **kwargs)
    from stable_baselines3.td3.policies import TD3Policy

    net_arch = {"pi": _layer_sizes(state, "actor.mu.")[:-1], "qf": qf}
    return TD3Policy(observation_space, action_space, _zero_lr, net_arch=net_arch, n_critics=n_critics, **kwargs)


def load_sb3_zip(path: str | Path, *, name: str, observation_space: spaces.Box, action_space: spaces.Box,
                 device: str = "cpu") -> SB3Actor:
    """Rebuild the MLP policy of an SB3 ``.zip`` (PPO, A2C, SAC, TD3, DDPG) for the given spaces, safely.

    The file is read once into memory; only its ``data`` (JSON) and ``policy.pth`` entries are
    used, the latter loaded with ``torch.load(..., weights_only=True)``. Any other ``.pth`` entry
    (optimizer state, ``pytorch_variables.pth``) is left unread and named in an
    :class:`IgnoredEntriesWarning`.

    Raises:
        PolicyError: missing, truncated or non-SB3 file; gSDE, custom classes or extractors;
            weights that do not fit the rebuilt network.
        SpaceMismatchError: the zip's recorded spaces differ from ``observation_space``/``action_space``.
    """
    from stable_baselines3.common.utils import get_device

    path = Path(path)
    where = f"policy '{name}' ({path})"
    archive = _open_archive(_read_file(path), path)
    raw = archive.raw
    family, algorithm = _detect(raw, where)
    _check_spaces(raw, name, where, observation_space, action_space)
    kwargs = _policy_kwargs(raw, where)
    unusual = [e for e in archive.ignored if e not in SB3_TRAINING_STATE]
    if unusual:  # SB3's own optimizer state is in every zip: ignoring it needs no word
        warnings.warn(f"{where}: ignored {', '.join(unusual)} (not part of an SB3 policy); "
                      "only policy.pth was loaded", IgnoredEntriesWarning, stacklevel=2)
    state = _load_state(archive.policy_pth, where)
    try:
        policy = _build(family, state, kwargs, observation_space, action_space)
        policy.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as e:
        raise PolicyError(f"{where}: its weights do not fit an {algorithm} MlpPolicy "
                          f"({' '.join(str(e).split())[:300]})") from e
    policy.to(get_device(device))  # as SB3 does: "auto" or an unavailable CUDA means the CPU
    policy.set_training_mode(False)
    return SB3Actor(policy, algorithm)
