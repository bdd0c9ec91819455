"""World models: the :class:`WorldModel` contract, the Gaussian MLP ensemble and checkpoints."""

from wm_eval.models.base import PROPAGATIONS, InvalidActionError, Prediction, WorldModel
from wm_eval.models.checkpoint import (
    EMBEDDED_TASKS,
    MODEL_CLASSES,
    box_from_json,
    box_to_json,
    embedded_model_path,
    load_checkpoint,
    model_fingerprint,
    read_spec,
    resolve_model,
    save_checkpoint,
)
from wm_eval.models.ensemble import GaussianMLPEnsemble

__all__ = [
    "EMBEDDED_TASKS",
    "MODEL_CLASSES",
    "PROPAGATIONS",
    "GaussianMLPEnsemble",
    "InvalidActionError",
    "Prediction",
    "WorldModel",
    "box_from_json",
    "box_to_json",
    "embedded_model_path",
    "load_checkpoint",
    "model_fingerprint",
    "read_spec",
    "resolve_model",
    "save_checkpoint",
]
