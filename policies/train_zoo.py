"""Regenerate the policy zoo: checkpoints along PPO and A2C runs plus weight-perturbed variants.

Usage (from the repository root, after the quick-start set-up)::

    python policies/train_zoo.py --task HalfCheetah-v5 [--ppo-steps 300000] [--seed 0]
    python policies/train_zoo.py --task Hopper-v5 --add-experts   # then: the experts join the zoo

For each task it writes ``policies/<task>/*.zip`` (plain SB3 zips, loaded by
``wm_eval.policy`` without unpickling code) and ``policies/<task>/manifest.json``
with each policy's algorithm, training steps and measured true return (mean
undiscounted return over ``--eval-episodes`` deterministic MuJoCo episodes).
The zoo spans poor to strong on purpose, as the off-policy-evaluation
benchmarks do: a ranking evaluator needs policies of every quality.

``--add-experts`` trains nothing: it adds the off-policy experts published by ``train_experts.py`` in
``policies/experts/<task>/`` (SAC/TD3 checkpoints along their training, far stronger than PPO/A2C here) to
the task's zoo manifest, as entries whose ``file`` points there, so the zoo's ladder reaches expert level.
Checkpoints published with ``--held-out`` (``policies/unseen/<task>/``) never join the zoo.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback

from wm_eval.fileio import atomic_write_text
from wm_eval.tasks import quiet_mujoco

os.environ.setdefault("MUJOCO_GL", "egl")
HERE = Path(__file__).resolve().parent


class _Snapshot(BaseCallback):
    """Save the model whenever the step count crosses one of ``at``."""

    def __init__(self, at: list[int], out: Path, prefix: str) -> None:
        super().__init__()
        self.pending = sorted(at)
        self.out = out
        self.prefix = prefix
        self.saved: list[tuple[str, int]] = []

    def _save(self) -> None:
        step = self.pending.pop(0)
        name = f"{self.prefix}_{step // 1000:04d}k"
        self.model.save(self.out / f"{name}.zip", exclude=["env", "logger", "ep_info_buffer", "ep_success_buffer"])
        self.saved.append((name, step))

    def _on_step(self) -> bool:
        while self.pending and self.num_timesteps >= self.pending[0]:
            self._save()
        return True


def true_return(model, task: str, episodes: int, seed: int) -> float:
    """Mean undiscounted return of ``model`` (deterministic) over seeded MuJoCo episodes."""
    env = gym.make(task)
    total = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret = False, 0.0
        while not done:
            act, _ = model.predict(obs, deterministic=True)
            obs, r, term, trunc, _ = env.step(act)
            ret += float(r)
            done = term or trunc
        total.append(ret)
    env.close()
    return float(np.mean(total))


def perturb(model, scale: float, seed: int) -> None:
    """Add Gaussian noise of ``scale`` times each tensor's std to the policy network's weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.policy.named_parameters():
            if "value" in name or "log_std" in name:
                continue
            std = float(p.std()) if p.numel() > 1 else 0.0
            p.add_(torch.randn(p.shape, generator=gen) * std * scale)


def add_experts(task: str, root: Path = HERE) -> None:
    """Add (or refresh) the entries of ``<root>/experts/<task>/manifest.json`` in the task's zoo manifest
    ``<root>/<task>/manifest.json`` (``root``: the ``policies`` folder)."""
    folder = task.replace("/", "_")
    zoo_path, experts_path = root / folder / "manifest.json", root / "experts" / folder / "manifest.json"
    zoo, experts = (json.loads(p.read_text(encoding="utf-8")) for p in (zoo_path, experts_path))
    added = [dict(e, file=f"../experts/{folder}/{e['file']}", eval_episodes=experts["eval_episodes"])
             for e in experts["policies"]]
    names = {e["name"] for e in added}
    zoo["policies"] = sorted([e for e in zoo["policies"] if e["name"] not in names] + added,
                             key=lambda e: e["true_return"])
    zoo["experts_recipes"] = experts.get("recipes", {})
    atomic_write_text(zoo_path, json.dumps(zoo, indent=2) + "\n")
    print(f"{task}: zoo holds {len(zoo['policies'])} policies, {len(added)} of them experts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--ppo-steps", type=int, default=600_000)
    parser.add_argument("--a2c-steps", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--add-experts", action="store_true", help="add policies/experts/<task> to the zoo; no training")
    args = parser.parse_args()
    if args.add_experts:
        add_experts(args.task)
        return
    torch.set_num_threads(1)
    quiet_mujoco()
    out = HERE / args.task
    out.mkdir(parents=True, exist_ok=True)
    entries = []

    ppo_at = [0, args.ppo_steps // 12, args.ppo_steps // 6, args.ppo_steps // 3, args.ppo_steps // 2, (2 * args.ppo_steps) // 3, args.ppo_steps]
    ppo = PPO("MlpPolicy", gym.make(args.task), seed=args.seed, device="cpu", verbose=0)
    snap = _Snapshot(ppo_at[1:], out, "ppo")
    name0 = "ppo_0000k"
    ppo.save(out / f"{name0}.zip", exclude=["env", "logger", "ep_info_buffer", "ep_success_buffer"])
    ppo.learn(args.ppo_steps, callback=snap, progress_bar=False)
    runs = [("PPO", [(name0, 0)] + snap.saved)]

    a2c_at = [args.a2c_steps // 4, args.a2c_steps // 2, args.a2c_steps]
    a2c = A2C("MlpPolicy", gym.make(args.task), seed=args.seed, device="cpu", verbose=0)
    snap = _Snapshot(a2c_at, out, "a2c")
    a2c.learn(args.a2c_steps, callback=snap, progress_bar=False)
    runs.append(("A2C", snap.saved))

    for algo, saved in runs:
        cls = PPO if algo == "PPO" else A2C
        for name, step in saved:
            model = cls.load(out / f"{name}.zip", device="cpu")
            entries.append({"name": name, "file": f"{name}.zip", "algorithm": algo, "training_steps": step,
                            "perturbation": 0.0, "true_return": true_return(model, args.task, args.eval_episodes, 10_000)})
            print(entries[-1], flush=True)

    for i, scale in enumerate((0.15, 0.4)):
        base = max((e for e in entries if e["algorithm"] == "PPO"), key=lambda e: e["training_steps"])
        model = PPO.load(out / base["file"], device="cpu")
        perturb(model, scale, args.seed + i)
        name = f"{base['name']}_perturbed{int(scale * 100):02d}"
        model.save(out / f"{name}.zip", exclude=["env", "logger", "ep_info_buffer", "ep_success_buffer"])
        entries.append({"name": name, "file": f"{name}.zip", "algorithm": "PPO", "training_steps": base["training_steps"],
                        "perturbation": scale, "true_return": true_return(model, args.task, args.eval_episodes, 10_000)})
        print(entries[-1], flush=True)

    manifest = {"format": "wm_eval.zoo/1", "task": args.task, "seed": args.seed,
                "eval_episodes": args.eval_episodes, "eval_seed": 10_000,
                "recipe": f"python policies/train_zoo.py --task {args.task} --ppo-steps {args.ppo_steps} "
                          f"--a2c-steps {args.a2c_steps} --seed {args.seed}",
                "policies": sorted(entries, key=lambda e: e["true_return"])}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
