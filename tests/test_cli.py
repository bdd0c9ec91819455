"""Configs and the ``wm-eval`` command line: merging, errors, exit codes, help (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wm_eval.config import PRESETS, SCHEMAS, load_config, save_config
from wm_eval.errors import ConfigError

COMMANDS = ["collect", "train", "evaluate", "view", "regress", "bench"]


def wm_eval(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wm_eval.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_defaults_files_and_overrides_merge_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("episodes: 7\nseed: 3\n")
    b.write_text("episodes: 9\n")
    cfg = load_config("collect", files=[str(a), str(b)], overrides=["seed=5", "noise_scales=[0.0,0.2]"])
    assert (cfg.episodes, cfg.seed, cfg.noise_scales, cfg.task) == (9, 5, [0.0, 0.2], "HalfCheetah-v5")
    assert cfg.out == "datasets/data/HalfCheetah-v5-seed5", "interpolations resolve after overrides"


def test_debug_preset_shrinks_every_command() -> None:
    assert set(PRESETS["debug"]) == set(SCHEMAS)
    assert load_config("evaluate", preset="debug").episodes < load_config("evaluate").episodes
    assert load_config("train", preset="debug").epochs < load_config("train").epochs


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"overrides": ["episodes=abc"]}, "bad value for 'episodes'"),
    ({"overrides": ["nosuchkey=1"]}, "unknown key 'nosuchkey'"),
    ({"overrides": ["episodes"]}, "not a key=value override"),
    ({"files": ["/no/such/file.yaml"]}, "does not exist"),
])
def test_config_errors_name_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config("collect", **kwargs)
    assert "\n" not in str(info.value)


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config("evaluate", overrides=["policies=[a.zip,b.zip]", "episodes=3"])
    path = save_config(cfg, tmp_path)
    assert load_config("evaluate", files=[str(path)]) == cfg


def test_help_lists_every_command() -> None:
    done = wm_eval("--help")
    assert done.returncode == 0
    for command in COMMANDS:
        assert command in done.stdout
        sub = wm_eval(command, "--help")
        assert sub.returncode == 0 and "key=value" in sub.stdout
        if command == "train":  # each family's own keys, under its name, after the shared ones
            own = sub.stdout.split("keys of model_type=multistep only:")
            assert len(own) == 2 and "fall_weight=1.0" in own[1] and "rollout_steps=5" in own[1]
            assert "rollout_steps=" not in own[0].split("keys (key=value):")[1]


@pytest.mark.parametrize("args", [
    ["collect", "task=NoSuchTask-v0"],
    ["collect", "episodes=-3"],
    ["collect", "nosuchkey=1"],
    ["evaluate", "--config", "missing.yaml"],
    ["evaluate", "task=Hopper-v5", "policies=[missing.zip]"],
    ["train", "dataset=[missing-folder]"],
    ["view", "missing/trajectories.h5"],
    ["regress", "--baseline", "missing.json"],
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    done = wm_eval(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("wm-eval ") and "Traceback" not in done.stderr


def test_collect_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    args = ["collect", "task=Hopper-v5", "episodes=2", "max_steps=20", "behaviour=[random]", f"out={tmp_path / 'd'}"]
    assert wm_eval(*args).returncode == 0
    again = wm_eval(*args)
    assert again.returncode == 2 and "overwrite=true" in again.stderr
    assert wm_eval(*args, "overwrite=true").returncode == 0
