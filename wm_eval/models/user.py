"""Users' own world models: ``model=module:factory``, and checkpoints naming a user's ``module:Class``.

A factory is any callable ``module:factory`` that returns a :class:`~wm_eval.models.base.WorldModel`
(subclass it: its docstring states the contract and the shapes). It is called with the keyword
arguments among ``task``, ``observation_space``, ``action_space`` and ``device`` that it accepts.
Naming a factory runs its code, as naming a ``module:callable`` policy does: the user asked for it. A
*checkpoint* that names a class outside wm_eval is different (a file is data), so
:func:`~wm_eval.models.checkpoint.load_checkpoint` imports one only with ``allow_code=True``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import re
from pathlib import Path
from typing import Any

from gymnasium import spaces

from wm_eval.errors import CheckpointError, SpaceMismatchError
from wm_eval.models.base import WorldModel

__all__ = ["CODE_REF", "from_factory", "import_ref", "factory_fingerprint", "code_fingerprint"]

CODE_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
"""``module:attribute``."""


def from_factory(ref: str, *, task: str | None, device: str, observation_space: spaces.Box | None,
                  action_space: spaces.Box | None) -> WorldModel:
    """The :class:`WorldModel` returned by the ``module:factory`` named ``ref``, checked and on ``device``."""
    factory = import_ref(ref, what="model factory")
    offered = {"task": task, "observation_space": observation_space, "action_space": action_space, "device": device}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        model = factory(**{k: v for k, v in offered.items() if takes_all or k in params})
    except Exception as e:  # user code: reported as a model problem, with the original chained
        raise CheckpointError(f"model factory '{ref}' raised {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(model, WorldModel):
        raise CheckpointError(f"model factory '{ref}' returned {type(model).__name__}, not a "
                              "wm_eval.models.WorldModel: subclass it (see its docstring for the contract)")
    if task is not None and model.task != task:
        raise CheckpointError(f"model factory '{ref}' made a model for {model.task}, not {task}")
    for space, size, name in ((observation_space, model.obs_dim, "observation"), (action_space, model.act_dim, "action")):
        if space is not None and space.shape != (size,):
            raise SpaceMismatchError(f"model factory '{ref}' made a model of {name} size {size}, but the task's "
                                     f"{name}s have shape {space.shape}")
    return model.to(device).eval()


def import_ref(ref: str, *, what: str) -> Any:
    """The attribute named by ``module:attr`` (one-line errors for a missing module or attribute)."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(f"{what} '{ref}': cannot import {module_name} ({e}); is it on PYTHONPATH?") from None
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise CheckpointError(f"{what} '{ref}': {module_name} has no {attr}") from None
    return obj


def code_fingerprint(obj: Any) -> str:
    """16 hex digits over the source file of the module defining ``obj`` (a class or a function), so
    that editing a user's model or env code changes the identity of what it computes."""
    import inspect

    digest = hashlib.sha256(f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}".encode())
    try:
        file = inspect.getsourcefile(obj)
    except TypeError:
        file = None
    if file is not None and Path(file).is_file():
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()[:16]


def factory_fingerprint(ref: str, model: WorldModel) -> str:
    """16 hex digits over the factory module's source file, the model class's module source, and the
    model's weights and spec."""
    digest = hashlib.sha256(ref.encode())
    found = importlib.util.find_spec(ref.partition(":")[0])
    if found is not None and found.origin and Path(found.origin).is_file():
        digest.update(Path(found.origin).read_bytes())
    digest.update(code_fingerprint(type(model)).encode())
    digest.update(json.dumps(model.spec(), sort_keys=True, default=str).encode())
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

