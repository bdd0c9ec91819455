"""``wm-eval bench`` on the debug preset, and the fast inference path it measures."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from wm_eval import tasks
from wm_eval.bench import measure_rate
from wm_eval.commands import bench as run_bench
from wm_eval.config import load_config
from wm_eval.models import GaussianMLPEnsemble, load_checkpoint, save_checkpoint
from wm_eval.models.ensemble import FUSED_MIN_ROWS, fused_inference_available
from wm_eval.policy import zoo_manifest

OBS_DIM, ACT_DIM = 17, 6


def small_model(seed: int = 0) -> GaussianMLPEnsemble:
    generator = torch.Generator().manual_seed(seed)
    model = GaussianMLPEnsemble(task="HalfCheetah-v5", obs_dim=OBS_DIM, act_dim=ACT_DIM, ensemble_size=3, hidden=32,
                                layers=2, generator=generator)
    obs, action = torch.randn(500, OBS_DIM, generator=generator), torch.rand(500, ACT_DIM, generator=generator) * 2 - 1
    model.fit_normalizers(obs, action, obs + 0.1 * torch.randn(500, OBS_DIM, generator=generator),
                          torch.randn(500, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    env = tasks.make_env("HalfCheetah-v5")
    path = save_checkpoint(small_model(), tmp_path_factory.mktemp("model") / "cheetah",
                           observation_space=env.observation_space, action_space=env.action_space,
                           data_fingerprint="random", metrics={}, config={}, seed=0)
    env.close()
    return path


def test_bench_debug_preset_writes_every_figure(tmp_path, checkpoint, capsys):
    out, extra = tmp_path / "bench", tmp_path / "copy" / "b.json"
    cfg = load_config("bench", preset="debug", overrides=[f"json={extra}", f"out={out}", f"model={checkpoint}"])
    threads = torch.get_num_threads()
    assert run_bench(cfg) == 0
    assert torch.get_num_threads() == threads  # restored for the caller
    result = json.loads((out / "bench.json").read_text())
    assert json.loads(extra.read_text()) == result
    assert result["default_precision"] in result["imagined_steps_per_s"]
    for key in ("imagined_steps_per_s", "matmul_gflops", "gym_single_steps_per_s"):  # every figure's spread
        assert key in result["spread"]
    low, high = result["spread"]["gym_single_steps_per_s"]
    assert low <= result["gym_single_steps_per_s"] <= high
    assert {"cpu_flags", "builds"} <= set(result["machine"]) and result["machine"]["builds"]["torch"]
    modes = ["float32", "bfloat16"] + (["float32_fused", "bfloat16_fused"] if fused_inference_available() else [])
    for key in ("imagined_steps_per_s", "closed_loop_steps_per_s"):
        assert list(result[key]) == modes
        for per_batch in result[key].values():
            assert set(per_batch) == {"1", "64"}
            assert all(math.isfinite(v) and v > 0 for v in per_batch.values())
    for key in ("gym_single_steps_per_s", "gym_vector_steps_per_s", "mujoco_rollout_steps_per_s",
                "mujoco_rollout_open_loop_steps_per_s", "peak_rss_mb"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    for dtype in modes:
        assert set(result["ratios"][dtype]) == {"gym_single", "gym_vector", "mujoco_rollout"}
        assert result["ratios"][dtype]["gym_single"] == pytest.approx(
            result["imagined_steps_per_s"][dtype]["64"] / result["gym_single_steps_per_s"])
        assert result["matmul_gflops"][dtype] > 0
        assert result["model_gflops"][dtype] == pytest.approx(
            result["flops_per_step"] * result["imagined_steps_per_s"][dtype]["64"] / 1e9)
    # 3 members; layers 23 -> 32 -> 32 -> 2 * 18 + 1
    assert result["flops_per_step"] == 2 * 3 * (23 * 32 + 32 * 32 + 32 * 37)
    assert result["model_layers"] == {"members": 3, "sizes": [23, 32, 32, 37]}
    assert result["closed_loop_policy"] and result["mujoco_rollout"]["batch"] == 64
    assert result["evaluate_seconds"] is None and result["targets"]["evaluate_seconds"]["met"] is None
    assert {"torch", "mujoco", "gymnasium", "stable-baselines3"} <= set(result["versions"])
    assert {"cpu", "cores", "torch_threads", "device"} <= set(result["machine"])
    assert result["machine"]["device"] == "cpu"
    table = (out / "bench.md").read_text()
    assert "Gymnasium SyncVectorEnv" in table and "mujoco.rollout" in table
    assert table in capsys.readouterr().out


def test_measure_rate_counts_work_per_second():
    calls = []
    rate = measure_rate(lambda: calls.append(1), items=10, seconds=0.01, repeats=3)
    assert len(calls) >= 1 + 2 * 3  # a warm-up call, then at least two per window
    assert rate > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_inference_equals_forward_and_reuses_buffers(dtype):
    model = small_model()
    model.set_inference_dtype(dtype)
    inputs = torch.randn(50, OBS_DIM + ACT_DIM)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        reference_mean, _, reference_logit = model(inputs)
    with torch.inference_mode():
        first = model._infer(inputs)
        raw = first.clone()
        assert model._infer(inputs).data_ptr() == first.data_ptr()  # same buffer next call
    assert torch.equal(raw[..., : OBS_DIM + 1], reference_mean) and torch.equal(raw[..., -1], reference_logit)


def test_cast_weights_follow_parameter_changes_and_copies_start_empty(tmp_path, checkpoint):
    model = load_checkpoint(checkpoint)
    model.set_inference_dtype(torch.bfloat16)
    obs, action = torch.randn(8, OBS_DIM), torch.rand(8, ACT_DIM)
    before = model.predict(obs, action).next_obs
    with torch.no_grad():
        model.weights[-1].mul_(3.0)
    assert not torch.equal(model.predict(obs, action).next_obs, before)
    clone = copy.deepcopy(model)
    assert clone._workspace is not model._workspace and not clone._workspace._buffers
    torch.testing.assert_close(clone.predict(obs, action).next_obs, model.predict(obs, action).next_obs)


@pytest.mark.skipif(not fused_inference_available(), reason="this torch build has no oneDNN")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_inference_matches_the_exact_path(dtype):
    model = small_model()
    rows = FUSED_MIN_ROWS + 7
    obs, action = torch.randn(rows, OBS_DIM) * 2, torch.rand(rows, ACT_DIM) * 2 - 1
    model.set_inference_dtype(dtype)
    exact = model.predict(obs, action)
    model.set_inference_dtype(dtype, fused=True)
    fused = model.predict(obs, action)
    small = model.predict(obs[:8], action[:8])  # below FUSED_MIN_ROWS: the batched-matmul path, bitwise
    assert torch.equal(small.next_obs, exact.next_obs[:8]) and torch.equal(small.uncertainty, exact.uncertainty[:8])
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 0.05, "atol": 0.05}
    for name in ("next_obs", "reward", "termination_prob", "uncertainty"):
        torch.testing.assert_close(getattr(fused, name), getattr(exact, name), **tolerance)
    assert (dtype, True) in model._workspace._cast  # the grouped-convolution weights were made and used
    assert model.select_members([0, 2]).fused_inference


def test_timed_evaluation_runs_in_a_fresh_process(tmp_path):
    """The bench times the default evaluation in its own process: its memory excludes the bench's buffers."""
    from wm_eval.bench import _evaluate_seconds

    result = _evaluate_seconds("HalfCheetah-v5", "cpu", None, tmp_path / "evaluate")
    zoo = json.loads(zoo_manifest("HalfCheetah-v5").read_text())
    assert (result["policies"], result["episodes"], result["horizon"]) == (len(zoo["policies"]), 10, 1000)
    assert 0 < result["recording"] < result["total"] and result["peak_memory_mb"] > 300
    assert (tmp_path / "evaluate" / "report.json").is_file()
