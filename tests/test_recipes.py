"""The shipped recipes (``configs/collect``, ``configs/train``) stay runnable: every key is known, every
policy a collection recipe names is shipped, and each collection recipe runs (one tiny episode) through the
CLI. The embedded models' data is only as reproducible as these files."""

from __future__ import annotations

from pathlib import Path

import pytest

from wm_eval.cli import main
from wm_eval.config import CollectConfig
from wm_eval.data import load_dataset
from wm_eval.policy import POLICY_BLOCK

REPO = Path(__file__).resolve().parents[1]
COLLECT = sorted((REPO / "configs" / "collect").glob("*.yaml"))
TRAIN = sorted((REPO / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("recipe", COLLECT, ids=lambda p: p.stem)
def test_collection_recipe_loads_every_behaviour_and_runs(recipe: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # recipes name shipped policies (zoo:<task>#<name>), valid from any folder
    out = tmp_path / "ds"
    assert main(["collect", "--config", str(recipe), "episodes=1", "max_steps=3", f"out={out}"]) == 0
    data = load_dataset(out)
    config = data.metadata["wm_eval"]["config"]
    assert len(data) == 1 and config["behaviour"][0] == "random" and len(config["behaviour"]) > 1
    assert "policy_block" in config


@pytest.mark.parametrize("recipe", TRAIN, ids=lambda p: p.stem)
def test_training_recipe_has_only_known_keys(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a dataset that does not exist: the config is validated first, then the missing dataset ends the run
    assert main(["train", "--config", str(recipe), "dataset=[/nonexistent/ds]", "out=/nonexistent/out"]) == 2
    err = capsys.readouterr().err
    assert "/nonexistent/ds" in err and "unknown" not in err.lower(), err


def test_collect_config_defaults_to_the_api_policy_block() -> None:
    # config.py stays light (no gymnasium at import), so it repeats the literal; they must agree
    assert CollectConfig().policy_block == POLICY_BLOCK
