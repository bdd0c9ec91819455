"""The evaluation core: typed API, per-episode streams, work units, resume, the oracle model (real MuJoCo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import wm_eval
from wm_eval import tasks
from wm_eval.evaluation.plan import plan, start_seeds
from wm_eval.models.base import Prediction, WorldModel
from wm_eval.policy import LinearPolicy

REPO = Path(__file__).resolve().parents[1]
HOPPER_ZOO = [f"{REPO}/policies/Hopper-v5/manifest.json#{n}" for n in ("ppo_0200k", "a2c_0150k", "ppo_0100k")]
SMALL = {"episodes": 3, "horizon": 40, "seed": 3, "workers": 1, "progress": False, "bootstrap": 50}


def _imagined(ev: Any, name: str, key: str = "imagined_return") -> np.ndarray:
    return ev.policy(name).episodes[key]


def test_signature_without_heavy_imports() -> None:
    code = ("import sys, inspect, wm_eval; sig = inspect.signature(wm_eval.evaluate); "
            "assert 'episodes' in sig.parameters and 'propagation' in sig.parameters; "
            "heavy = [m for m in ('torch', 'mujoco', 'rerun') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_start_seeds_are_per_episode_and_states_are_mujoco_resets() -> None:
    assert np.array_equal(start_seeds(4, 5)[:3], start_seeds(4, 3)), "episode j's seed ignores the episode count"
    seeds = start_seeds(4, 3)
    obs, states = tasks.reset_states("Hopper-v5", seeds.tolist())
    env = tasks.make_env("Hopper-v5")
    assert np.array_equal(env.reset(seed=int(seeds[1]))[0], obs[1])


def test_plan_has_stable_unit_ids() -> None:
    units = plan(["a", "b"], episodes=5, chunk=2)
    assert [(u.name, u.start, u.stop) for u in units] == [("a", 0, 2), ("a", 2, 4), ("a", 4, 5), ("b", 0, 2),
                                                          ("b", 2, 4), ("b", 4, 5)]
    alone = plan(["b"], episodes=5, chunk=2)
    assert [u.id for u in alone] == [u.id for u in units[3:]], "a unit's id does not depend on the other policies"
    assert np.array_equal(alone[0].episode_seeds(0), units[3].episode_seeds(0))


@pytest.mark.parametrize(("propagation", "sample"), [("mean", False), ("ts1", False), ("ts_inf", False),
                                                     ("ts1", True)])
def test_episode_numbers_do_not_depend_on_the_other_policies(tiny_model: Path, propagation: str,
                                                             sample: bool) -> None:
    kw = {**SMALL, "model": str(tiny_model), "propagation": propagation, "sample": sample}
    both = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO, **kw)
    alone = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[1:2], **kw)
    reordered = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[::-1], **kw)
    for key in ("imagined_return", "imagined_length", "true_return"):
        assert np.array_equal(_imagined(both, "a2c_0150k", key), _imagined(alone, "a2c_0150k", key)), key
        assert np.array_equal(_imagined(both, "ppo_0200k", key), _imagined(reordered, "ppo_0200k", key)), key
    assert both.policy("a2c_0150k").statistics == alone.policy("a2c_0150k").statistics, "intervals too"
    if propagation != "mean" or sample:  # the streams differ between episodes: the draws matter
        returns = _imagined(both, "a2c_0150k")
        assert len(set(returns.tolist())) == len(returns)


def test_chunking_and_workers_do_not_change_numbers(tiny_model: Path) -> None:
    kw = {**SMALL, "model": str(tiny_model), "propagation": "ts1", "sample": True}
    a = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:2], chunk=1, max_batch=1, **kw)
    b = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:2], chunk=3, **{**kw, "workers": 2})
    for p, q in zip(a.policies, b.policies):
        for key, values in p.episodes.items():
            assert np.array_equal(values, q.episodes[key]), (p.name, key)
    assert json.dumps(a.metrics, default=str) == json.dumps(b.metrics, default=str)


def test_a_row_does_not_depend_on_its_neighbours(tiny_model: Path) -> None:
    """The model is called on fixed-size row blocks: a row's trajectory is the same alone, among 299
    others and at another position."""
    from wm_eval.evaluation.rollout import imagined_env, run_episodes
    from wm_eval.models.checkpoint import load_checkpoint

    model = load_checkpoint(tiny_model)
    _, states = tasks.reset_states("Hopper-v5", list(range(300)))
    actions = np.random.default_rng(0).uniform(-1, 1, (300, 30, 3)).astype(np.float32)

    def run(rows: np.ndarray) -> Any:
        env = imagined_env(model, len(rows), horizon=30, propagation="ts1", sample=True)
        return run_episodes(env, states[rows], 30, actions=actions[rows], episode_seeds=rows + 11)

    full = run(np.arange(300))
    for rows in (np.array([7]), np.array([250, 7, 3]), np.arange(299, -1, -1)):
        part = run(rows)
        where = {int(r): i for i, r in enumerate(rows)}
        assert np.array_equal(part.observations[where[7]], full.observations[7])


class OracleModel(WorldModel):
    """MuJoCo itself behind the WorldModel contract: the state is the full simulator state."""

    def __init__(self, task: str, starts: np.ndarray) -> None:
        self.env = tasks.make_env(task).unwrapped
        obs_dim, act_dim = self.env.observation_space.shape[0], self.env.action_space.shape[0]
        super().__init__(task=task, obs_dim=obs_dim, act_dim=act_dim, num_members=1)
        self.lookup = {}
        for state in starts:
            obs = tasks.set_state(self.env, state)
            self.lookup[np.float32(obs).tobytes()] = state

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (tasks.state_dim(self.env),)

    def initial_state(self, obs: Any) -> torch.Tensor:
        rows = np.asarray(obs, dtype=np.float32)
        return torch.as_tensor(np.stack([self.lookup[r.tobytes()] for r in rows]), dtype=torch.float64)

    def step(self, state: Any, action: Any, **kwargs: Any) -> tuple[torch.Tensor, Prediction]:
        states, actions = np.asarray(state, dtype=np.float64), np.asarray(action, dtype=np.float64)
        new, obs, rewards = [], [], []
        for s, a in zip(states, actions):
            tasks.set_state(self.env, s)
            o, r, _, _, _ = self.env.step(a.astype(np.float32))
            new.append(tasks.get_state(self.env))
            obs.append(o)
            rewards.append(r)
        b = len(states)
        pred = Prediction(torch.as_tensor(np.array(obs)), torch.as_tensor(np.array(rewards)), torch.zeros(b, dtype=bool),
                          torch.zeros(b), torch.zeros(b), torch.full((b,), -1))
        return torch.as_tensor(np.array(new)), pred

    def _step(self, *args: Any, **kwargs: Any) -> Any:  # step is overridden whole
        raise NotImplementedError

    def nll(self, *args: Any) -> torch.Tensor:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {}


def test_oracle_world_model_scores_perfectly() -> None:
    task, seed, episodes = "HalfCheetah-v5", 5, 3
    states = tasks.reset_states(task, start_seeds(seed, episodes).tolist())[1]
    zoo = [f"{REPO}/policies/{task}/manifest.json#{n}" for n in ("ppo_0000k", "a2c_0075k", "ppo_0200k", "ppo_0400k")]
    ev = wm_eval.evaluate(task, zoo, model=OracleModel(task, states), episodes=episodes, horizon=60, seed=seed,
                          workers=1, progress=False, bootstrap=50)
    m = {k: v["value"] for k, v in ev.metrics["discounted_return"].items()}
    assert m["spearman"] == pytest.approx(1) and m["kendall"] == pytest.approx(1) and m["pearson"] == pytest.approx(1)
    assert m["mmrv"] == 0 and m["regret_at_1"] == 0 and m["normalized_abs_error"] == pytest.approx(0, abs=1e-12)
    assert np.nanmax(ev.horizon_error["error"]) == pytest.approx(0, abs=1e-9)
    for p in ev.policies:
        assert np.allclose(p.episodes["imagined_return"], p.episodes["true_return"], rtol=0, atol=1e-9)


def test_horizon_error_counts_diverged_terminations(tiny_model: Path) -> None:
    ev = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:2], model=str(tiny_model), trajectories="all",
                          **{**SMALL, "horizon": 80})
    h = ev.horizon_error
    expected = np.zeros_like(h["diverged"])
    for p in ev.policies:
        for ep in p.kept:
            ends = [np.concatenate([[False], np.cumsum(t.terminations) > 0]) for t in (ep.true, ep.imagined)]
            length = max(len(e) for e in ends)
            padded = [np.concatenate([e, np.full(81 - len(e), e[-1])]) for e in ends]
            expected += padded[0] != padded[1]
            assert length <= 81
    assert np.array_equal(h["diverged"], expected)
    assert h["pairs"] == 6 and h["running"][0] == 6


def test_api_equals_cli_report(tiny_model: Path, tmp_path: Path) -> None:
    from wm_eval.cli import main

    policies = ",".join(HOPPER_ZOO[:2])
    code = main(["evaluate", "task=Hopper-v5", f"model={tiny_model}", f"policies=[{policies}]", "episodes=3",
                 "horizon=40", "seed=3", "workers=1", "bootstrap=50", "rerun=false", f"out={tmp_path / 'cli'}"])
    assert code == 0
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    ev = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:2], model=str(tiny_model), **SMALL)
    for entry, p in zip(report["policies"], ev.policies):
        assert entry["episodes"]["imagined_return"] == p.episodes["imagined_return"].tolist()
        assert entry["episodes"]["true_return"] == p.episodes["true_return"].tolist()
        assert set(entry["statistics"]) == {"return", "discounted_return"}
    assert "mmrv_normalized" in report["metrics"] and not (tmp_path / "cli" / "units").exists()


_KILLED_RUN = """
import sys, wm_eval
wm_eval.evaluate("Hopper-v5", sys.argv[3].split(","), model=sys.argv[1], out=sys.argv[2], resume=sys.argv[4] == "1",
                 episodes=4, horizon=150, seed=3, chunk=1, max_batch=1, workers=1, progress=False, bootstrap=50)
"""


def test_resume_after_sigkill(tiny_model: Path, tmp_path: Path) -> None:
    out, policies = tmp_path / "run", ",".join(HOPPER_ZOO[:2])
    args = [sys.executable, "-c", _KILLED_RUN, str(tiny_model), str(out), policies]
    proc = subprocess.Popen(args + ["0"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "units").glob("*.npz"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in (out / "units").glob("*.npz"))
    assert 2 <= len(finished) < 8, "killed between units"
    kw = {"episodes": 4, "horizon": 150, "seed": 3, "chunk": 1, "max_batch": 1, "workers": 1, "progress": False,
          "bootstrap": 50}
    with pytest.raises(wm_eval.errors.ConfigError, match="resume"):
        wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:2], model=str(tiny_model), out=out, **kw)
    resumed = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:2], model=str(tiny_model), out=out, resume=True, **kw)
    assert resumed.timings["resumed_units"] == len(finished)
    fresh = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:2], model=str(tiny_model), **kw)
    for p, q in zip(resumed.policies, fresh.policies):
        for key, values in p.episodes.items():
            assert np.array_equal(values, q.episodes[key]), key
    with pytest.raises(wm_eval.errors.ConfigError, match="different evaluation"):
        wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:1], model=str(tiny_model), out=out, resume=True, **kw)


def test_selected_trajectories_are_replayed_exactly(tiny_model: Path) -> None:
    kw = {**SMALL, "model": str(tiny_model), "propagation": "ts_inf"}
    sel = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:2], trajectories="selected", **kw)
    for p in sel.policies:
        assert 1 <= len(p.kept) <= 2
        for ep in p.kept:
            assert ep.imagined.total_reward == pytest.approx(p.episodes["imagined_return"][ep.episode], abs=0)
            assert ep.true.total_reward == pytest.approx(p.episodes["true_return"][ep.episode], abs=0)
    none = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:1], trajectories="summary", **kw)
    assert none.policies[0].kept == ()


def test_success_statistic_and_wilson_interval() -> None:
    from scipy.stats import binomtest

    from wm_eval.evaluation.statistics import SUCCESS, interval, side_values
    from wm_eval.types import BatchRollout

    obs = np.zeros((4, 6, 2))
    obs[0, 3, 0] = obs[2, 5, 0] = obs[3, 5, 0] = 1.0  # row 3 reaches it only after its last step
    lengths = np.array([5, 5, 5, 4])
    mask = np.arange(5)[None] < lengths[:, None]
    rollout = BatchRollout(obs, np.zeros((4, 5, 1)), np.ones((4, 5)) * mask, np.zeros((4, 5), bool),
                           np.zeros((4, 5), bool), lengths)
    values = side_values(rollout, gamma=0.99, success_rule=lambda o: o[..., 0] > 0.5)
    assert values["success"].tolist() == [1, 0, 1, 0]
    ci = interval(SUCCESS, values["success"], seed=0, n_resamples=10)
    ref = binomtest(2, 4).proportion_ci(method="wilson")
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((ref.low, ref.high))


def test_readme_python_example_is_the_tested_example(tmp_path: Path) -> None:
    source = (REPO / "examples" / "python_api.py").read_text()
    body = source[source.index("def main"):source.index("\n\nif __name__")]
    assert body in (REPO / "README.md").read_text(), "README's Python API example must be examples/python_api.py"
    run = subprocess.run([sys.executable, str(REPO / "examples" / "python_api.py"), "2", "30"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert "ppo_0200k: imagined" in run.stdout and "Spearman:" in run.stdout
    report = json.loads((tmp_path / "runs" / "python-api" / "report.json").read_text())
    assert report["episodes"] == 2 and report["horizon"] == 30 and report["propagation"] == "ts_inf"


def test_resume_refuses_what_it_cannot_recognise(tiny_model: Path, tmp_path: Path) -> None:
    kw = {**SMALL, "model": str(tiny_model), "out": tmp_path / "run"}
    wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:1], trajectories="summary", **kw)
    with pytest.raises(wm_eval.errors.ConfigError, match="different evaluation"):
        wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:1], trajectories="all", resume=True, **kw)
    policy = LinearPolicy(np.zeros((11, 3)), name="mine")
    with pytest.raises(wm_eval.errors.ConfigError, match="in memory"):
        wm_eval.evaluate("Hopper-v5", [policy], resume=True, **{**kw, "out": tmp_path / "other"})


@pytest.mark.parametrize("bad", [{"propagation": "bogus"}, {"bootstrap": 0}, {"seed": -1}, {"device": "cuda:7"},
                                 {"device": "gpu"}, {"trajectories": "some"}])
def test_bad_arguments_fail_before_anything_is_written(tiny_model: Path, tmp_path: Path, bad: dict) -> None:
    with pytest.raises(wm_eval.errors.WmEvalError):
        wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:1], **{**SMALL, "model": str(tiny_model), "out": tmp_path, **bad})
    assert not (tmp_path / "units").exists()


class DivergingModel(WorldModel):
    """A model whose imagined states blow up to NaN: the evaluation must report it, not crash."""

    def __init__(self) -> None:
        super().__init__(task="HalfCheetah-v5", obs_dim=17, act_dim=6, num_members=1)

    def _step(self, state: torch.Tensor, action: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, Prediction]:
        b = len(state)
        nan = torch.full_like(state, float("nan"))
        return nan, Prediction(nan, torch.full((b,), float("nan")), torch.zeros(b, dtype=torch.bool), torch.zeros(b),
                               torch.zeros(b), torch.full((b,), -1))

    def nll(self, *args: Any) -> torch.Tensor:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {}


def test_a_diverging_model_is_reported_not_fatal(tmp_path: Path) -> None:
    zoo = [f"{REPO}/policies/HalfCheetah-v5/manifest.json#{n}" for n in ("ppo_0000k", "ppo_0400k")]
    ev = wm_eval.evaluate("HalfCheetah-v5", zoo, model=DivergingModel(), **SMALL)
    assert np.isnan(ev.policies[0].episodes["imagined_return"]).all()
    assert np.isnan(ev.metrics["discounted_return"]["spearman"]["value"])
    assert ev.horizon_error["running"][1] == 0, "no finite state error after the first step"
    report = wm_eval.report(ev, tmp_path / "report", rerun=False)
    assert report["metrics"]["spearman"] is None and report["policies"][0]["imagined_rank"] is None


def test_report_recording_equals_the_viewer_recording_of_its_file(tiny_model: Path, tmp_path: Path) -> None:
    """report() records the kept episodes from memory; `wm-eval view --save` reads them from the file."""
    from wm_eval.cli import main

    ev = wm_eval.evaluate("Hopper-v5", HOPPER_ZOO[:2], model=str(tiny_model), **SMALL)
    wm_eval.report(ev, tmp_path / "run")
    assert main(["view", str(tmp_path / "run"), "--save", str(tmp_path / "again.rrd")]) == 0
    rerun = Path(sys.executable).with_name("rerun")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    same = subprocess.run([str(rerun), "rrd", "compare", str(tmp_path / "run" / "rollouts.rrd"),
                           str(tmp_path / "again.rrd")], env=env, capture_output=True, timeout=60)
    assert same.returncode == 0, same.stderr[-1000:]
