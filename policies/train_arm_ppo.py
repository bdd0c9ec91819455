"""PPO checkpoints for wm_eval's own arm tasks: policies of another family than the scripted zoo.

Usage (from the repository root, after the quick-start set-up)::

    python policies/train_arm_ppo.py --task WmEval/ArmPush-v0 [--steps 300000] [--seed 1]

Trains SB3 PPO (default hyperparameters, 4 vectorised envs, seed ``--seed``) on the task's dense reward and
saves checkpoints along the run to ``policies/<task with / as _>/ppo/*.zip``, with
``policies/<task with / as _>/ppo/manifest.json`` (format ``wm_eval.zoo/1``) holding each checkpoint's
measured true return and success rate over ``--eval-episodes`` episodes. These policies are not in the
embedded model's training data (its dataset uses the scripted zoo only), so evaluating them measures
fidelity on unseen policies::

    wm-eval evaluate task=WmEval/ArmPush-v0 policies=[policies/WmEval_ArmPush-v0/ppo/manifest.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from scripted_zoo import measure  # noqa: E402  (policies/ is this script's folder; importing it registers envs/)
from wm_eval.tasks import quiet_mujoco

os.environ.setdefault("MUJOCO_GL", "egl")
HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=["WmEval/ArmPush-v0", "WmEval/ArmDrawer-v0"])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--checkpoints", type=int, default=6, help="checkpoints saved along the run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--eval-seed", type=int, default=10_000)
    args = parser.parse_args()
    quiet_mujoco()
    torch.set_num_threads(1)
    out = HERE / args.task.replace("/", "_") / "ppo"
    out.mkdir(parents=True, exist_ok=True)
    env = make_vec_env(args.task, n_envs=4, seed=args.seed)
    model = PPO("MlpPolicy", env, seed=args.seed, device="cpu", verbose=0)
    entries, done = [], 0
    for k in range(1, args.checkpoints + 1):
        target = args.steps * k // args.checkpoints
        model.learn(target - done, reset_num_timesteps=False)
        done = target
        name = f"ppo_s{args.seed}_{done // 1000:04d}k"
        model.save(out / f"{name}.zip", exclude=["env", "logger", "ep_info_buffer", "ep_success_buffer"])
        ret, rate = measure(args.task, lambda obs: model.predict(obs, deterministic=True)[0], args.eval_episodes,
                            args.eval_seed)
        entries.append({"name": name, "file": f"{name}.zip", "algorithm": "PPO", "training_steps": done,
                        "seed": args.seed, "true_return": ret, "true_success": rate})
        print(f"{name}: return {ret:8.2f}  success {rate:.2f}", flush=True)
        manifest = {"format": "wm_eval.zoo/1", "task": args.task, "eval_episodes": args.eval_episodes,
                    "eval_seed": args.eval_seed, "recipe": f"python policies/train_arm_ppo.py --task {args.task} "
                    f"--steps {args.steps} --checkpoints {args.checkpoints} --seed {args.seed}", "policies": entries}
        tmp = out / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        tmp.replace(out / "manifest.json")  # each checkpoint is committed as it finishes


if __name__ == "__main__":
    main()
