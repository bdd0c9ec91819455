"""wm_eval's own ground-truth robot tasks (installed as ``wm_eval.envs``; the top-level ``envs/`` folder).

=========================  =====================================================  ======  =======
id                         skill                                                  obs     steps
=========================  =====================================================  ======  =======
``WmEval/ArmPush-v0``      a 3-joint arm pushes a puck to a goal region           18      150
``WmEval/ArmDrawer-v0``    a 3-joint arm hooks a handle and pulls a drawer open   17      150
=========================  =====================================================  ======  =======

``import wm_eval`` registers them with Gymnasium (string entry points, so MuJoCo is imported only when
one is made). Observation layouts and the success and reward rules, written on observations so they
apply to imagined states too, are in :mod:`wm_eval.envs.rules`; scripted experts with a skill knob in
:mod:`wm_eval.envs.experts`; the envs in :mod:`wm_eval.envs.arm_tasks`.
"""

from __future__ import annotations

__all__ = ["ENV_IDS"]

ENV_IDS: dict[str, tuple[str, int]] = {
    "WmEval/ArmPush-v0": ("wm_eval.envs.arm_tasks:ArmPushEnv", 150),
    "WmEval/ArmDrawer-v0": ("wm_eval.envs.arm_tasks:ArmDrawerEnv", 150),
}
"""Gymnasium id -> (entry point, time limit in steps)."""
