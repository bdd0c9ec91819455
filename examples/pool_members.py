"""Pool the members of several ensemble checkpoints into one ensemble (a deep ensemble of separate runs).

    python examples/pool_members.py OUT CHECKPOINT CHECKPOINT [...]
    python examples/pool_members.py runs/models/W-pooled Walker2d-v5 runs/models/Walker2d-v5-sac-4td3-ppo2-multistep-k10

A checkpoint is a folder or an embedded task name. All must be :class:`~wm_eval.models.GaussianMLPEnsemble`
models of one task with the same layer sizes and the same input and target normalisers (runs trained or
fine-tuned on the same data from one one-step model; runs whose normalisers differ would need their
first and last layers rescaled, which this does not do). ``OUT`` gets their members in order, so
imagined steps of the pooled model average over all of them, and the first checkpoint's coverage (its
training-data statistics and trust calibration: calibrated for its own members, not recalibrated for
the pool). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from wm_eval.errors import WmEvalError
from wm_eval.models import GaussianMLPEnsemble, save_checkpoint
from wm_eval.models.checkpoint import box_from_json, embedded_model_path, read_spec, resolve_model


def pool(out: str, refs: list[str]) -> dict:
    """Write the pooled checkpoint at ``out`` and return what it holds."""
    models = [resolve_model(ref, task=None) for ref in refs]
    first = models[0]
    for ref, model in zip(refs, models):
        if not isinstance(model, GaussianMLPEnsemble):
            raise WmEvalError(f"'{ref}' is a {type(model).__name__}, not a GaussianMLPEnsemble: only ensembles pool")
        if {**model.spec(), "ensemble_size": 0} != {**first.spec(), "ensemble_size": 0}:
            raise WmEvalError(f"'{ref}' has task and sizes {model.spec()}, '{refs[0]}' {first.spec()}: pool models "
                              "of one task and architecture")
    members = {name for name, _ in first.named_parameters()}
    states = [m.state_dict() for m in models]
    for ref, state in zip(refs[1:], states[1:]):
        differ = [k for k in state if k not in members and not torch.equal(state[k], states[0][k])]
        if differ:
            raise WmEvalError(f"'{ref}' has other {', '.join(differ)} than '{refs[0]}' (normalisers fitted on other "
                              "data or inherited from another one-step model): pool runs that share them")
    pooled = GaussianMLPEnsemble(**{**first.spec(), "ensemble_size": sum(m.num_members for m in models)})
    pooled.load_state_dict({k: torch.cat([s[k] for s in states]) if k in members else v for k, v in states[0].items()})
    spec = _spec(refs[0], first)
    save_checkpoint(pooled, out, observation_space=box_from_json(spec["observation_space"]),
                    action_space=box_from_json(spec["action_space"]), data_fingerprint=spec["data_fingerprint"],
                    metrics={}, config={"pooled_from": refs}, seed=spec["seed"], coverage=first.coverage)
    return {"out": out, "task": first.task, "members": [m.num_members for m in models], "pooled": pooled.num_members}


def _spec(ref: str, model: GaussianMLPEnsemble) -> dict:
    """The ``spec.json`` of a checkpoint folder or of an embedded task's model."""
    return read_spec(ref if Path(ref).is_dir() else embedded_model_path(model.task))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        print("usage: python examples/pool_members.py OUT CHECKPOINT CHECKPOINT [...]", file=sys.stderr)
        sys.exit(2)
    try:
        print(json.dumps(pool(sys.argv[1], sys.argv[2:])))
    except WmEvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
