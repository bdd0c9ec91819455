"""wm_eval: is this policy better than the last one, and how far can I trust that answer?

Importing the package is light (no torch, mujoco or rerun) and registers the
Gymnasium environment ``WorldModel-v0``::

    import gymnasium as gym
    import wm_eval  # noqa: F401  (``gym.make("wm_eval:WorldModel-v0")`` imports it for you)

    env = gym.make("WorldModel-v0")  # the embedded HalfCheetah-v5 world model

registers wm_eval's own robot tasks (``WmEval/ArmPush-v0``, ``WmEval/ArmDrawer-v0``: see
:mod:`wm_eval.envs`), and exposes the typed API: ``wm_eval.evaluate(task, policies, ...)`` returns an
:class:`~wm_eval.types.Evaluation`, ``wm_eval.report(evaluation, out)`` writes its report folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "report"]

if TYPE_CHECKING:
    from wm_eval.evaluation.api import evaluate
    from wm_eval.reporting.report import report


def __getattr__(name: str) -> Any:
    """``evaluate`` and ``report`` are imported on first use, so ``import wm_eval`` stays light."""
    if name == "evaluate":
        from wm_eval.evaluation.api import evaluate

        return evaluate
    if name == "report":
        from wm_eval.reporting.report import report

        return report
    raise AttributeError(f"module 'wm_eval' has no attribute {name!r}")


def _register() -> None:
    from gymnasium.envs.registration import register, registry

    from wm_eval.envs import ENV_IDS

    for env_id, (entry_point, steps) in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, max_episode_steps=steps)
    if "WorldModel-v0" not in registry:
        register(
            id="WorldModel-v0",
            entry_point="wm_eval.world_model_env:WorldModelEnv",
            vector_entry_point="wm_eval.world_model_env:WorldModelVectorEnv",
        )


_register()
