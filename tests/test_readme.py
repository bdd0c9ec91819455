"""Every command the README shows runs here, debug-sized, in the order a reader would type them.

:data:`PLAN` maps each README command to how it runs in the test (placeholders replaced, sizes shrunk by
trailing ``key=value`` overrides, which win) and what it must do. A command added to the README without
an entry here fails :func:`test_every_readme_command_is_planned`, so a README command cannot break
unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EVAL_DEBUG = ["episodes=2", "horizon=30", "workers=1", "bootstrap=50"]


@dataclass(frozen=True)
class Step:
    """How a README command runs here: ``argv`` (``None``: run elsewhere, ``why`` says where), the exit
    code it must give, and text its output must contain."""

    argv: list[str] | None
    code: int = 0
    says: str = ""
    why: str = ""


def _wm(*args: str) -> list[str]:
    return [str(BIN / "wm-eval"), *args]


PLAN: dict[str, Step] = {
    "bash .ci/setup && .venv/bin/wm-eval evaluate": Step(["bash", "-c", f"bash {REPO}/.ci/setup && {BIN}/wm-eval "
                                                           f"evaluate {' '.join(EVAL_DEBUG)}"], says="Spearman"),
    "bash .ci/run": Step(None, why="it is this test run (CI runs it on a clean clone)"),
    "wm-eval evaluate": Step(_wm("evaluate", *EVAL_DEBUG), says="report:"),
    "wm-eval evaluate task=Hopper-v5 policies=[ckpt/a.zip,ckpt/b.zip] episodes=20 out=runs/mine":
        Step(_wm("evaluate", "task=Hopper-v5", "policies=[ckpt/a.zip,ckpt/b.zip]", "episodes=20", "out=runs/mine",
                 *EVAL_DEBUG), says="runs/mine/report.md"),
    "wm-eval evaluate policies=[mypkg.controllers:make_policy] mode=open_loop":
        Step(_wm("evaluate", "policies=[mypkg.controllers:make_policy]", "mode=open_loop", *EVAL_DEBUG),
             says="make_policy"),
    "wm-eval collect task=Hopper-v5 episodes=240 seed=0 out=datasets/data/hopper":
        Step(_wm("collect", "task=Hopper-v5", "episodes=240", "seed=0", "out=datasets/data/hopper", "episodes=4",
                 "max_steps=50"), says="wrote 4 episodes"),
    "wm-eval train dataset=datasets/data/hopper out=runs/models/hopper":
        Step(_wm("train", "--preset", "debug", "dataset=datasets/data/hopper", "out=runs/models/hopper"),
             says="trained Hopper-v5 model"),
    "wm-eval evaluate task=Hopper-v5 model=runs/models/hopper":
        Step(_wm("evaluate", "task=Hopper-v5", "model=runs/models/hopper", *EVAL_DEBUG), says="report:"),
    "wm-eval <command> --help": Step(_wm("evaluate", "--help"), says="episodes"),
    "python policies/train_experts.py --task Hopper-v5 --algo sac --seed 11 --steps 350000 --publish-every 50000":
        Step(None, why="tests/test_experts.py::test_train_experts_publishes_a_resumable_ladder runs it debug-sized"),
    "python examples/pool_members.py runs/models/W-pooled Walker2d-v5 runs/models/Walker2d-v5-sac-4td3-ppo2-multistep-k10":
        Step(None, why="tests/test_examples.py::test_pool_members_example pools two halves of the embedded HalfCheetah "
                       "model back into it"),
    "python policies/train_zoo.py --task Hopper-v5 --add-experts":
        Step(None, why="tests/test_experts.py::test_add_experts_joins_the_zoo_once runs it on a copy of the zoo"),
    "python policies/train_experts.py --task Hopper-v5 --algo td3 --seed 12 --steps 150000 --every 25000 "
    "--publish-every 25000 --held-out":
        Step(None, why="tests/test_experts.py::test_train_experts_publishes_a_resumable_ladder runs it debug-sized"),
    "python policies/train_experts.py --task Walker2d-v5 --algo ppo --seed 1 --steps 600000 --every 100000 --held-out":
        Step(None, why="tests/test_experts.py::test_train_experts_publishes_a_resumable_ladder runs PPO debug-sized"),
    "wm-eval train --config configs/train/Hopper-v5.yaml":
        Step(_wm("train", "--config", str(REPO / "configs/train/Hopper-v5.yaml"), "--preset", "debug",
                 "dataset=datasets/data/hopper", "out=runs/models/hopper-previous"), says="trained Hopper-v5 model"),
    "python examples/model_quality.py --tasks Hopper-v5 --model Hopper-v5=runs/models/Hopper-v5":
        Step(None, why="tests/test_examples.py runs model_quality.py with --model on a tiny dataset"),
    "python policies/train_experts.py --task Hopper-v5 --algo td3 --seed 13 --steps 250000 --every 25000 "
    "--publish-every 50000":
        Step(None, why="tests/test_experts.py::test_train_experts_publishes_a_resumable_ladder runs it debug-sized"),
    "wm-eval collect --config configs/collect/Hopper-v5-sac-td3.yaml":
        Step(_wm("collect", "--config", str(REPO / "configs/collect/Hopper-v5-sac-td3.yaml"), "episodes=4",
                 "max_steps=50", "out=datasets/data/hopper-experts"), says="wrote 4 episodes"),
    "wm-eval train --config configs/train/Hopper-v5-sac-td3.yaml":
        Step(_wm("train", "--config", str(REPO / "configs/train/Hopper-v5-sac-td3.yaml"), "--preset", "debug",
                 "dataset=datasets/data/hopper-experts", "out=runs/models/hopper-experts"),
             says="trained Hopper-v5 model"),
    "wm-eval train --config configs/train/Hopper-v5-sac-td3-multistep-k10.yaml":
        Step(_wm("train", "--config", str(REPO / "configs/train/Hopper-v5-sac-td3-multistep-k10.yaml"),
                 "dataset=datasets/data/hopper-experts", "init=runs/models/hopper-experts",
                 "out=runs/models/hopper-experts-ms", "rollout_steps=3", "finetune_epochs=1"),
             says="trained Hopper-v5 model"),
    "python policies/train_experts.py --task Hopper-v5 --algo ppo --seed 2 --steps 600000 --every 100000":
        Step(None, why="tests/test_experts.py::test_train_experts_publishes_a_resumable_ladder runs PPO debug-sized"),
    "wm-eval collect --config configs/collect/Hopper-v5-sac-td3-ppo2.yaml":
        Step(_wm("collect", "--config", str(REPO / "configs/collect/Hopper-v5-sac-td3-ppo2.yaml"), "episodes=4",
                 "max_steps=50", "out=datasets/data/hopper-ppo2"), says="wrote 4 episodes"),
    "wm-eval train --config configs/train/Hopper-v5-sac-td3-ppo2-multistep-k10.yaml":
        Step(_wm("train", "--config", str(REPO / "configs/train/Hopper-v5-sac-td3-ppo2-multistep-k10.yaml"),
                 "dataset=datasets/data/hopper-ppo2", "init=runs/models/hopper-experts",
                 "out=runs/models/hopper-ppo2-ms", "rollout_steps=3", "finetune_epochs=1"),
             says="trained Hopper-v5 model"),
    "python policies/train_experts.py --task Hopper-v5 --algo ppo --seed 3 --steps 600000 --every 100000":
        Step(None, why="tests/test_experts.py::test_train_experts_publishes_a_resumable_ladder runs PPO debug-sized"),
    "wm-eval collect --config configs/collect/Hopper-v5-sac-td3-ppo23.yaml":
        Step(_wm("collect", "--config", str(REPO / "configs/collect/Hopper-v5-sac-td3-ppo23.yaml"), "episodes=4",
                 "max_steps=50", "out=datasets/data/hopper-ppo23"), says="wrote 4 episodes"),
    "wm-eval train --config configs/train/Hopper-v5-sac-td3-ppo23-multistep-k10.yaml":
        Step(_wm("train", "--config", str(REPO / "configs/train/Hopper-v5-sac-td3-ppo23-multistep-k10.yaml"),
                 "dataset=datasets/data/hopper-ppo23", "init=runs/models/hopper-experts",
                 "out=runs/models/hopper-ppo23-ms", "rollout_steps=3", "finetune_epochs=1"),
             says="trained Hopper-v5 model"),
    "wm-eval train model_type=multistep init=Hopper-v5 dataset=datasets/data/hopper out=runs/models/hopper-selected "
    "select_policies=[zoo]":
        Step(_wm("train", "model_type=multistep", "init=Hopper-v5", "dataset=datasets/data/hopper",
                 "out=runs/models/hopper-selected", "select_policies=[zoo]", "rollout_steps=3", "finetune_epochs=1",
                 "select_policies=[zoo#ppo_0000k,zoo#ppo_0300k,zoo#sac_s11_0350k]", "select_episodes=2",
                 "select_horizon=30"),
             says="by closed-loop spearman on 3 policies"),
    "wm-eval view runs/evaluate-<time>": Step(_wm("view", "runs/mine"), code=2, says="no display"),
    "wm-eval view <run>": Step(_wm("view", "runs/mine"), code=2, says="no display"),
    "wm-eval view runs/evaluate-<time> --save v.rrd": Step(_wm("view", "runs/mine", "--save", "v.rrd"),
                                                           says="wrote v.rrd"),
    "wm-eval view runs/evaluate-<time> --web": Step(None, why="test_web_viewer_command (serves until Ctrl-C)"),
    "wm-eval regress --update-baseline --baseline gate.json task=HalfCheetah-v5 policies=[ckpt/policy.zip]":
        Step(_wm("regress", "--update-baseline", "--baseline", "gate.json", "task=HalfCheetah-v5",
                 "policies=[ckpt/policy.zip]", "episodes=4", "horizon=30"), says="recorded 1 policies"),
    "wm-eval regress --baseline gate.json --junit gate.xml": Step(_wm("regress", "--baseline", "gate.json", "--junit",
                                                                      "gate.xml"), says="pass"),
    "wm-eval bench task=HalfCheetah-v5 --json b.json": Step(_wm("bench", "--preset", "debug", "task=HalfCheetah-v5",
                                                                "--json", "b.json"), says="wrote"),
    "wm-eval bench device=cuda": Step(_wm("bench", "--preset", "debug", "device=cuda"), code=2, says="CUDA"),
    "python examples/model_quality.py": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/model_quality.py --tasks Walker2d-v5":
        Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/fidelity.py --episodes 50": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/fidelity.py --tasks Walker2d-v5 --episodes 50":
        Step(None, why="tests/test_examples.py runs fidelity.py with a tiny budget"),
    "python examples/fidelity.py --episodes 50 --tasks WmEval/ArmPush-v0 WmEval/ArmDrawer-v0":
        Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/model_quality.py --tasks WmEval/ArmPush-v0 WmEval/ArmDrawer-v0":
        Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "wm-eval evaluate task=WmEval/ArmPush-v0 episodes=50 policies=[zoo,policies/WmEval_ArmPush-v0/ppo/manifest.json]":
        Step(_wm("evaluate", "task=WmEval/ArmPush-v0", "episodes=50",
                 f"policies=[zoo,{REPO}/policies/WmEval_ArmPush-v0/ppo/manifest.json]", *EVAL_DEBUG),
             says="ppo_s1_0300k"),
    "python examples/gate_power.py": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/gate_power.py --trials 100":
        Step(None, why="tests/test_examples.py runs gate_power.py with a tiny budget"),
    "python examples/fidelity.py --episodes 20 --set unseen":
        Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/fidelity.py --tasks Walker2d-v5 --episodes 20 --set unseen":
        Step(None, why="tests/test_examples.py runs fidelity.py --set unseen with a tiny budget"),
    "python examples/trust_calibration.py": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/trust_calibration.py measure --task Hopper-v5 --episodes 20":
        Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/trust_calibration.py overhead": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/trust_calibration.py score --out runs/trust":
        Step(None, why="tests/test_examples.py runs it on tiny records"),
    "python examples/trust_calibration.py fit --write":
        Step(None, why="tests/test_examples.py runs fit (without --write: it rewrites the embedded models)"),
    "python examples/python_api.py": Step(None, why="tests/test_evaluation.py runs the README's Python example"),
    "python examples/memory.py 200": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/block_speed.py": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/precision.py": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "wm-eval evaluate precision=bfloat16": Step(_wm("evaluate", "precision=bfloat16", *EVAL_DEBUG), says="report:"),
    "wm-eval evaluate task=Hopper-v5 real_episodes=3 episodes=20":
        Step(_wm("evaluate", "task=Hopper-v5", "real_episodes=3", "episodes=20", "episodes=4", "horizon=30",
                 "workers=1", "bootstrap=50"), says="Recommended:"),
    "wm-eval evaluate task=Hopper-v5 real_budget=90 episodes=10":
        Step(_wm("evaluate", "task=Hopper-v5", "real_budget=90", "episodes=10", "episodes=4", "horizon=30",
                 "workers=1", "bootstrap=50"), says="Recommended:"),
    "python examples/calibration.py": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "wm-eval evaluate task=Hopper-v5 real_episodes=0 episodes=20":
        Step(_wm("evaluate", "task=Hopper-v5", "real_episodes=0", "episodes=20", "episodes=4", "horizon=30",
                 "workers=1", "bootstrap=50"), says="Recommended:"),
    "wm-eval collect task=Ant-v5 episodes=200 behaviour=[random] out=datasets/data/ant":
        Step(_wm("collect", "task=Ant-v5", "episodes=200", "behaviour=[random]", "out=datasets/data/ant", "episodes=4",
                 "max_steps=40"), says="wrote 4 episodes of Ant-v5"),
    "wm-eval train dataset=datasets/data/ant out=runs/models/ant":
        Step(_wm("train", "--preset", "debug", "dataset=datasets/data/ant", "out=runs/models/ant"),
             says="trained Ant-v5 model"),
    "wm-eval evaluate task=Ant-v5 model=runs/models/ant policies=[mypkg.ant:make_policy]":
        Step(_wm("evaluate", "task=Ant-v5", "model=runs/models/ant", "policies=[mypkg.ant:make_policy]", *EVAL_DEBUG),
             says="report:"),
    "wm-eval evaluate task=WmEval/ArmPush-v0": Step(_wm("evaluate", "task=WmEval/ArmPush-v0", *EVAL_DEBUG),
                                                    says="success im/true"),
    "wm-eval evaluate task=WmEval/ArmDrawer-v0 episodes=50":
        Step(_wm("evaluate", "task=WmEval/ArmDrawer-v0", "episodes=50", *EVAL_DEBUG), says="Success rates: Spearman"),
    "python -c \"import gymnasium as gym, wm_eval; env = gym.make('WmEval/ArmPush-v0'); print(env.reset(seed=0)[0])\"":
        Step([sys.executable, "-c", "import gymnasium as gym, wm_eval; env = gym.make('WmEval/ArmPush-v0'); "
              "print(env.reset(seed=0)[0])"], says="["),
    "PYTHONPATH=examples wm-eval evaluate task=Hopper-v5 model=custom_model:make_model":
        Step(None, why="tests/test_user_models.py::test_cli_evaluates_a_user_model runs it"),
    "python examples/custom_model.py": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "python examples/seed_spread.py --config configs/train/Walker2d-v5-sac-4td3-ppo2-multistep-k10-from-k5-more.yaml "
    "--seeds 0 1 2": Step(None, why="tests/test_examples.py::test_seed_spread_example runs it with a tiny budget"),
    "python examples/seed_spread.py --config configs/train/Walker2d-v5-sac-4td3-ppo2-multistep-k10-from-k5-more.yaml "
    "--seeds 0 1 2 --set unseen --episodes 20":
        Step(None, why="tests/test_examples.py::test_seed_spread_example runs it with a tiny budget"),
    "python examples/seed_spread.py --config configs/train/HalfCheetah-v5-sac-td3-multistep-k10.yaml --seeds 0 1 2":
        Step(None, why="tests/test_examples.py::test_seed_spread_example runs it with a tiny budget"),
    "python examples/seed_spread.py --config configs/train/HalfCheetah-v5-sac-td3-multistep-k10.yaml --seeds 0 1 2 "
    "--set unseen --episodes 20": Step(None, why="tests/test_examples.py::test_seed_spread_example runs it with a tiny budget"),
    'pip install "wm_eval[ray]"': Step(None, why=".ci/setup installs the ray extra (pip install -e .[test,ray])"),
    "wm-eval evaluate executor=ray ray_address=local episodes=4 horizon=100":
        Step(None, why="tests/test_ray.py::test_cli_ray_local_equals_local runs it against executor=local"),
    "ray start --head --port=6379": Step(None, why="tests/test_ray_faults.py::test_cluster_started_with_ray_start_is_found"),
    "wm-eval evaluate executor=ray": Step(None, why="tests/test_ray_faults.py::test_cluster_started_with_ray_start_is_found"),
    "python examples/scale_out.py": Step(None, why="tests/test_examples.py runs it with a tiny budget"),
    "ray start --address=<head-ip>:6379": Step(None, why="needs a second machine: tests/test_ray_faults.py and "
                                                         "examples/scale_out.py simulate nodes with ray.cluster_utils"),
    "ray start --address=<head-ip>:6379 --num-gpus=1": Step(None, why="needs a GPU machine (none here)"),
    "RAY_ADDRESS=<head-ip>:6379 wm-eval evaluate executor=ray ray_actors=2 device=cuda policies=[...] out=runs/big":
        Step(None, why="needs a GPU cluster; RAY_ADDRESS is tested in test_ray_faults.py, ray_actors in test_ray.py"),
}


def readme_commands() -> list[str]:
    """The commands in the README's bash blocks (comments dropped) and its inline `wm-eval ...` /
    `python examples/...` code spans, in order, without repeats."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        found += [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    found += re.findall(r"`((?:wm-eval|python examples/)[^`]*)`", text)
    return list(dict.fromkeys(c for c in found if c))


def test_every_readme_command_is_planned() -> None:
    missing = [c for c in readme_commands() if c not in PLAN]
    assert not missing, f"README commands without a test plan here: {missing}"
    examples = (REPO / "tests" / "test_examples.py").read_text()
    for command, step in PLAN.items():
        if step.argv is None and "test_examples" in step.why:
            assert Path(command.split()[1]).name in examples, command


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a reader would have it: two Hopper checkpoints, a HalfCheetah one, their own package."""
    ws = tmp_path_factory.mktemp("readme")
    (ws / "ckpt").mkdir()
    for name, task, stem in (("a", "Hopper-v5", "ppo_0200k"), ("b", "Hopper-v5", "a2c_0150k"),
                             ("policy", "HalfCheetah-v5", "ppo_0400k")):
        shutil.copy(REPO / "policies" / task / f"{stem}.zip", ws / "ckpt" / f"{name}.zip")
    (ws / "mypkg").mkdir()
    (ws / "mypkg" / "__init__.py").write_text("")
    (ws / "mypkg" / "controllers.py").write_text(
        "import numpy as np\n\n\ndef make_policy():\n    return lambda obs: np.tanh(obs[:, :6])\n")
    (ws / "mypkg" / "ant.py").write_text(  # the README's own-robot controller: 8 Ant-v5 actions
        "import numpy as np\n\n\ndef make_policy():\n    return lambda obs: np.tanh(2.0 * obs[:, 5:13])\n")
    return ws


def _env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return {**env, "PYTHONPATH": str(ws), "MUJOCO_GL": "egl", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize("command", [c for c, s in PLAN.items() if s.argv is not None])
def test_readme_command_runs(command: str, workspace: Path) -> None:
    step = PLAN[command]
    run = subprocess.run(step.argv, cwd=workspace, env=_env(workspace), capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == step.code, f"{command!r} exited {run.returncode}:\n{output[-3000:]}"
    assert step.says in output, f"{command!r} did not say {step.says!r}:\n{output[-3000:]}"
    if step.code == 2:
        errors = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr


def test_web_viewer_command(workspace: Path) -> None:
    """`wm-eval view <run> --web` prints a 127.0.0.1 URL that answers, and stops on Ctrl-C."""
    if not (workspace / "runs" / "mine" / "trajectories.h5").exists():
        subprocess.run(PLAN["wm-eval evaluate task=Hopper-v5 policies=[ckpt/a.zip,ckpt/b.zip] episodes=20 "
                            "out=runs/mine"].argv + ["overwrite=true"], cwd=workspace, env=_env(workspace),
                       check=True, capture_output=True)
    proc = subprocess.Popen(_wm("view", "runs/mine", "--web"), cwd=workspace, env=_env(workspace),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"open (http://127\.0\.0\.1:\d+\S*)", line)
        assert url, line
        with urllib.request.urlopen(url.group(1), timeout=30) as page:
            assert page.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
