"""Paired evaluation; the public entry point is :func:`wm_eval.evaluate` (:mod:`.api`).

How an evaluation runs, module by module:

* :mod:`.plan`: policies × episodes become work units (policy × ``chunk`` episodes, stable ids);
  :mod:`wm_eval.streams` gives every episode its own seeds.
* :mod:`.rollout`: the one rollout loop, over Gymnasium vector envs (the world model's
  ``WorldModelVectorEnv`` and the ground truth's ``MujocoVectorEnv``, autoreset disabled, started
  from the same simulator states); policies act on fixed-size row blocks.
* :mod:`.executor`: runs units (``local``: imagined side batched here, ground truth in worker
  processes) and hands them back in plan order; another executor only implements ``run``.
* :mod:`.units`: a finished unit reduced to per-episode values and per-step error sums, saved
  atomically for ``resume``.
* :mod:`.statistics`, :mod:`.metrics`, :mod:`.summary`: per-episode statistics (return, discounted
  return, success), their intervals, ranking metrics with a two-level bootstrap, horizon error, trust.
* :mod:`.selection`: closed-loop model selection (a training snapshot scored by how it ranks policies
  against MuJoCo), used by ``wm-eval train select_policies=...``.
"""
