"""Experts (SAC, TD3; PPO of other seeds than the zoo's) with checkpoints along their training: strong and
unseen policies.

Usage (from the repository root, after the quick-start set-up; one run at a time on a 2-core machine)::

    python policies/train_experts.py --task HalfCheetah-v5 --algo sac --seed 11 --steps 400000

Trains SB3 SAC or TD3 with the RL Baselines3 Zoo's MuJoCo settings (10,000 random warm-up steps; TD3 with
Gaussian action noise of std 0.1), or PPO with SB3's defaults (the zoo's PPO runs use seed 0), on one CPU
thread. Every ``--every`` steps it saves the full checkpoint to ``runs/experts/<task>/`` (git-ignored) with
its replay buffer (``<algo>_s<seed>_replay.pkl``, one per run, rewritten each time: SB3 pickles all of its
1M slots, 308 MB for Walker2d here), so ``--resume`` continues from the last checkpoint with the buffer it
had (a run killed between the two writes resumes with a buffer at most one checkpoint older); it also
measures its true return (mean undiscounted return over ``--eval-episodes`` seeded MuJoCo episodes);
every ``--publish-every`` steps it
also writes it for acting only (no optimizer states, critics zeroed: about 0.35 MB instead of 3.2 MB; see
:func:`publish`) to ``policies/experts/<task>/<algo>_s<seed>_<steps>k.zip`` and rewrites
``policies/experts/<task>/manifest.json`` (format ``wm_eval.zoo/1``) atomically, so a killed run keeps every
checkpoint it finished. Measured here: SAC on HalfCheetah-v5 takes about 9 min per 50k steps once learning
(about 90 steps/s; the first 50k, 10k of them random warm-up, took 6.5 min). Until
``train_zoo.py --add-experts`` adds them to the zoo (and a dataset recipe names them), these policies are in
neither the zoo nor the embedded models' datasets, so they measure fidelity on unseen, stronger policies.
``--held-out`` publishes to ``policies/unseen/<task>/`` instead: checkpoints kept out of the zoo and the
datasets for good, the unseen set of a task whose experts joined its zoo. ``--publish-only STEPS ...``
trains nothing: it publishes the run's saved checkpoints at those step counts (measuring their true returns
as training does), to choose a run's published ladder after the fact. Every manifest write re-reads the
file, so runs of several seeds of one task may train at once (one per core)::

    wm-eval evaluate task=HalfCheetah-v5 policies=[policies/experts/HalfCheetah-v5/manifest.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.noise import NormalActionNoise

from train_zoo import true_return  # noqa: E402  (policies/ is this script's folder)
from wm_eval.fileio import atomic_write, atomic_write_text
from wm_eval.tasks import make_env, quiet_mujoco

os.environ.setdefault("MUJOCO_GL", "egl")
HERE = Path(__file__).resolve().parent
ALGOS = {"ppo": PPO, "sac": SAC, "td3": TD3}
EXCLUDE = ["env", "logger", "ep_info_buffer", "ep_success_buffer", "replay_buffer"]


ACTING = ("actor.", "mlp_extractor.", "action_net.", "features_extractor.", "pi_features_extractor.", "log_std")
"""Prefixes of the ``policy.pth`` tensors that act (SAC/TD3 ``actor``; PPO's policy half and its ``log_std``)."""


def publish(full: Path, out: Path) -> None:
    """Copy the SB3 zip ``full`` to ``out`` for acting only, written atomically.

    Drops the optimizer states and zeroes every tensor of ``policy.pth`` that does not act (SAC/TD3 critics
    and target networks, PPO's value head): zeroed tensors deflate to almost nothing, so a published SAC
    checkpoint takes about a tenth of its full size, while ``policy.pth`` keeps SB3's layout (wm_eval's
    strict loader reads it) and acts exactly as the full one. Continue training from the full zip
    in ``runs/experts`` instead: a published critic is zero.
    """
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(full) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                if item.filename.endswith("optimizer.pth"):
                    continue
                raw = src.read(item.filename)
                if item.filename == "policy.pth":
                    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
                    state = {k: v if k.startswith(ACTING) else torch.zeros_like(v) for k, v in state.items()}
                    buffer = io.BytesIO()
                    torch.save(state, buffer)
                    raw = buffer.getvalue()
                dst.writestr(item.filename, raw)

    atomic_write(out, write)


def _manifest(path: Path, task: str) -> dict:
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"format": "wm_eval.zoo/1", "task": task, "eval_seed": 10_000, "policies": []}


def _update_manifest(path: Path, task: str, prefix: str, entry: dict | None = None, recipe: str | None = None,
                     eval_episodes: int | None = None) -> None:
    """Re-read ``path``, replace this run's entry named like ``entry`` (or, with no entry, drop all of the
    run's entries: a fresh run's old checkpoints are stale) and write it back atomically. Re-reading keeps the
    entries that concurrent runs of other seeds wrote since; the run's own entries stay in step order."""
    manifest = _manifest(path, task)
    mine = [e for e in manifest["policies"] if e["name"].startswith(prefix + "_")]
    others = [e for e in manifest["policies"] if not e["name"].startswith(prefix + "_")]
    if entry is None:
        mine = []
    else:
        mine = sorted([e for e in mine if e["name"] != entry["name"]] + [entry], key=lambda e: e["training_steps"])
    manifest["policies"] = others + mine
    if eval_episodes is not None:
        manifest["eval_episodes"] = eval_episodes
    if recipe is not None:
        manifest.setdefault("recipes", {})[prefix] = recipe
    atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")


def _publish_checkpoint(model: PPO | SAC | TD3, name: str, full: Path, out: Path, args: argparse.Namespace,
                        recipe: str | None) -> None:
    """Measure the true return of the saved checkpoint ``full/<name>.zip`` (``model``), publish it to
    ``out`` and record it in ``out/manifest.json``."""
    ret = true_return(model, args.task, args.eval_episodes, 10_000)
    print(f"{name}: true return {ret:9.1f}", flush=True)
    publish(full / f"{name}.zip", out / f"{name}.zip")
    entry = {"name": name, "file": f"{name}.zip", "algorithm": args.algo.upper(),
             "training_steps": int(model.num_timesteps),  # PPO learns in whole rollouts: a little over the count
             "seed": args.seed, "true_return": ret}
    _update_manifest(out / "manifest.json", args.task, f"{args.algo}_s{args.seed}", entry, recipe, args.eval_episodes)


def _checkpoint_name(prefix: str, steps: int) -> str:
    """``<algo>_s<seed>_<thousands of steps>k``, the stem of a run's checkpoint after ``steps`` steps."""
    return f"{prefix}_{steps // 1000:04d}k"


def _checkpoint_steps(path: Path) -> int:
    """The step count a checkpoint file is named after (inverse of :func:`_checkpoint_name`)."""
    return int(path.stem.rsplit("_", 1)[1][:-1]) * 1000


def _save_replay(model: SAC | TD3, tmp: Path) -> None:
    with tmp.open("wb") as file:  # an open file: SB3 would append ".pkl" to the temporary name
        model.save_replay_buffer(file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--algo", choices=sorted(ALGOS), default="sac")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--steps", type=int, default=400_000)
    parser.add_argument("--every", type=int, default=50_000, help="steps between checkpoints")
    parser.add_argument("--publish-every", type=int, default=100_000, help="steps between published checkpoints")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--root", type=Path, default=HERE.parent,
                        help="repository root to write policies/ and runs/ under (default: this repository)")
    parser.add_argument("--held-out", action="store_true",
                        help="publish to policies/unseen/<task>: kept out of the zoo and the datasets")
    parser.add_argument("--publish-only", type=int, nargs="+", metavar="STEPS",
                        help="train nothing: publish the run's saved checkpoints at these step counts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quiet_mujoco()
    out = args.root / "policies" / ("unseen" if args.held_out else "experts") / args.task
    full = args.root / "runs" / "experts" / args.task
    out.mkdir(parents=True, exist_ok=True)
    full.mkdir(parents=True, exist_ok=True)
    cls, prefix = ALGOS[args.algo], f"{args.algo}_s{args.seed}"
    off_policy = args.algo != "ppo"  # has a replay buffer to keep
    recipe = (f"python policies/train_experts.py --task {args.task} --algo {args.algo} --seed {args.seed} "
              f"--steps {args.steps} --every {args.every} --publish-every {args.publish_every}"
              + (" --held-out" if args.held_out else ""))
    saved = sorted(full.glob(f"{prefix}_*k.zip"))
    if args.publish_only:
        names = [_checkpoint_name(prefix, steps) for steps in args.publish_only]
        missing = [n for n in names if not (full / f"{n}.zip").is_file()]
        if missing:
            parser.error(f"no saved checkpoint {', '.join(missing)}.zip in {full}: pass step counts the run saved "
                         f"({' '.join(str(_checkpoint_steps(p)) for p in saved) or 'none'})")
        for name in names:
            _publish_checkpoint(cls.load(full / f"{name}.zip", device="cpu"), name, full, out, args, recipe=None)
        return
    env = make_env(args.task)
    replay = full / f"{prefix}_replay.pkl"
    if args.resume and saved:
        model = cls.load(saved[-1], env=env, device="cpu")
        done = _checkpoint_steps(saved[-1])
        if off_policy and replay.is_file():
            model.load_replay_buffer(replay)
        kept = model.replay_buffer.size() if off_policy else 0
        print(f"resumed {saved[-1].name} with {kept} transitions in its replay buffer", flush=True)
    else:
        kwargs = {"learning_starts": 10_000} if off_policy else {}
        if args.algo == "td3":
            n = env.action_space.shape[0]
            kwargs["action_noise"] = NormalActionNoise(np.zeros(n), 0.1 * np.ones(n))
        model = cls("MlpPolicy", env, seed=args.seed, device="cpu", verbose=0, **kwargs)
        done = 0
        _update_manifest(out / "manifest.json", args.task, prefix)  # a fresh run: its old entries are stale
    while done < args.steps:
        step = min(args.every, args.steps - done)
        model.learn(step, reset_num_timesteps=False, progress_bar=False)
        done += step
        name = _checkpoint_name(prefix, done)
        if off_policy:
            atomic_write(replay, lambda tmp: _save_replay(model, tmp))
        model.save(full / f"{name}.zip", exclude=EXCLUDE)
        if done % args.publish_every and done < args.steps:
            print(f"{name}: true return {true_return(model, args.task, args.eval_episodes, 10_000):9.1f}", flush=True)
            continue
        _publish_checkpoint(model, name, full, out, args, recipe)


if __name__ == "__main__":
    main()
