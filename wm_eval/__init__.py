"""wm_eval: is this policy better than the last one, and how far can I trust that answer?

Importing the package is light (no torch, mujoco or rerun) and registers the
Gymnasium environment ``WorldModel-v0``::

    import gymnasium as gym
    import wm_eval  # noqa: F401  (``gym.make("wm_eval:WorldModel-v0")`` imports it for you)

    env = gym.make("WorldModel-v0")  # the embedded HalfCheetah-v5 world model
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]


def _register() -> None:
    from gymnasium.envs.registration import register, registry

    if "WorldModel-v0" not in registry:
        register(
            id="WorldModel-v0",
            entry_point="wm_eval.world_model_env:WorldModelEnv",
            vector_entry_point="wm_eval.world_model_env:WorldModelVectorEnv",
        )


_register()
