"""Bring your own world model: a linear model fitted with numpy, evaluated end to end by wm_eval.

    python examples/custom_model.py              # fit on 40 collected Hopper episodes, evaluate the zoo
    python examples/custom_model.py 6 40         # quick: episodes to fit on, horizon

``LinearModel`` subclasses :class:`wm_eval.models.WorldModel` (its docstring is the contract: batched
``step(state [B, obs_dim], action [B, act_dim]) -> (state, Prediction)``); ``make_model`` is a factory,
so any wm_eval command takes it as ``model=custom_model:make_model`` (with ``examples/`` on PYTHONPATH).
The script evaluates the model three ways and checks that they agree bit for bit: as an object in
memory, through the factory, and saved as a checkpoint and loaded back (which names this module's
class, so loading it needs ``allow_code=True``). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import wm_eval
from wm_eval.data.collect import collect
from wm_eval.data.hdf5 import load_dataset
from wm_eval.errors import CheckpointError
from wm_eval.models import Prediction, WorldModel, load_checkpoint, save_checkpoint
from wm_eval.tasks import get_task, spaces

TASK = "Hopper-v5"
POLICIES = ["zoo:Hopper-v5#ppo_0000k", "zoo:Hopper-v5#a2c_0150k", "zoo:Hopper-v5#ppo_0400k"]


class LinearModel(WorldModel):
    """``[obs, action, 1] @ W`` predicts the observation change and the reward; the task's own rule on
    observations decides termination. One member, so its uncertainty is 0."""

    def __init__(self, *, task: str, obs_dim: int, act_dim: int) -> None:
        super().__init__(task=task, obs_dim=obs_dim, act_dim=act_dim, num_members=1)
        self.register_buffer("W", torch.zeros(obs_dim + act_dim + 1, obs_dim + 1))

    def _step(self, state, action, *, propagation, members, generator, sample, noise=None):
        x = torch.cat([state, action, torch.ones_like(state[:, :1])], dim=1)
        out = x @ self.W
        next_obs, reward = state + out[:, :-1], out[:, -1]
        rule = get_task(self.task).terminated
        done = torch.zeros(len(state), dtype=torch.bool, device=state.device)
        if rule is not None:
            done = torch.as_tensor(rule(next_obs.detach().cpu().numpy()), device=state.device)
        zeros = torch.zeros(len(state), device=state.device)
        member = torch.zeros(len(state), dtype=torch.long, device=state.device)
        return next_obs, Prediction(next_obs, reward, done, done.float(), zeros, member)

    def nll(self, obs, action, next_obs, reward):
        pred = self.predict(obs, action)
        return 0.5 * (((pred.next_obs - next_obs) ** 2).mean(dim=1) + (pred.reward - reward) ** 2)

    def spec(self):
        return {"task": self.task, "obs_dim": self.obs_dim, "act_dim": self.act_dim}


def fit(task: str = TASK, episodes: int = 40, max_steps: int = 200, seed: int = 0) -> LinearModel:
    """Collect ``episodes`` episodes (random and zoo behaviour) and fit :class:`LinearModel` by least squares."""
    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset(collect(task=task, episodes=episodes, max_steps=max_steps, seed=seed, out=Path(tmp) / "d",
                                    behaviour=["random", "zoo"], noise_scales=[0.0, 0.1], progress=False),
                            sim_states=False)
    obs = np.concatenate([ep.observations[:-1] for ep in data.episodes])
    act = np.concatenate([ep.actions for ep in data.episodes])
    nxt = np.concatenate([ep.observations[1:] for ep in data.episodes])
    rew = np.concatenate([ep.rewards for ep in data.episodes])
    x = np.concatenate([obs, act, np.ones((len(obs), 1))], axis=1)
    y = np.concatenate([nxt - obs, rew[:, None]], axis=1)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    model = LinearModel(task=task, obs_dim=obs.shape[1], act_dim=act.shape[1])
    model.W.copy_(torch.as_tensor(w, dtype=torch.float32))
    model.obs_scale.copy_(torch.as_tensor(obs.std(axis=0) + 1e-6, dtype=torch.float32))
    return model


FIT_EPISODES = 40


def make_model(task: str = TASK) -> LinearModel:
    """The factory behind ``model=custom_model:make_model``."""
    return fit(task, episodes=FIT_EPISODES)


def main(episodes: int = 40, horizon: int = 1000) -> dict:
    import importlib

    # The module by its importable name (not __main__), as model=custom_model:make_model and the checkpoint see it
    mod = importlib.import_module("custom_model")
    mod.FIT_EPISODES = episodes
    kw = dict(episodes=5, horizon=horizon, seed=0, bootstrap=200, workers=1, progress=False)
    model = mod.make_model()
    in_memory = wm_eval.evaluate(TASK, POLICIES, model=model, **kw)
    by_factory = wm_eval.evaluate(TASK, POLICIES, model="custom_model:make_model", **kw)
    with tempfile.TemporaryDirectory() as tmp:
        space = spaces(TASK)
        save_checkpoint(model, Path(tmp) / "linear", data_fingerprint="example", metrics={}, config={}, seed=0, **space)
        try:
            load_checkpoint(Path(tmp) / "linear")
            refused = False
        except CheckpointError as e:
            refused = "allow_code" in str(e)
        from_file = wm_eval.evaluate(TASK, POLICIES, model=Path(tmp) / "linear", allow_code=True, **kw)
    same = all(np.array_equal(a.episodes["imagined_return"], b.episodes["imagined_return"])
               for ev in (by_factory, from_file) for a, b in zip(in_memory.policies, ev.policies))
    result = {"task": TASK, "fit_episodes": episodes, "horizon": horizon, "same_numbers": bool(same),
              "checkpoint_refused_without_allow_code": refused, "model": by_factory.model,
              "spearman": in_memory.metrics["return"]["spearman"]["value"],
              "policies": {p.name: {"imagined": round(p.statistics["return"]["imagined"]["mean"], 1),
                                    "true": round(p.statistics["return"]["true"]["mean"], 1)} for p in in_memory.policies}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
