"""Paired evaluation: plan, executors, the rollout loop, statistics and metrics; :func:`evaluate`."""
