"""The WorldModel contract of the Gaussian MLP ensemble, and checkpoint save/load."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

import wm_eval
from wm_eval.errors import CheckpointError, SpaceMismatchError, WmEvalError
from wm_eval.models import (
    GaussianMLPEnsemble,
    InvalidActionError,
    box_from_json,
    box_to_json,
    load_checkpoint,
    model_fingerprint,
    read_spec,
    resolve_model,
    save_checkpoint,
)
from wm_eval.models import checkpoint as checkpoint_module

OBS_DIM, ACT_DIM, MEMBERS, BATCH = 5, 2, 4, 6


def make_model(task: str = "Toy-v0", seed: int = 0) -> GaussianMLPEnsemble:
    generator = torch.Generator().manual_seed(seed)
    model = GaussianMLPEnsemble(
        task=task, obs_dim=OBS_DIM, act_dim=ACT_DIM, ensemble_size=MEMBERS, hidden=16, layers=2, generator=generator
    )
    data = torch.randn(200, 2 * OBS_DIM + ACT_DIM + 1, generator=generator) * 3 + 1
    obs, action, next_obs, reward = data.split([OBS_DIM, ACT_DIM, OBS_DIM, 1], dim=1)
    model.fit_normalizers(obs, action, next_obs, reward[:, 0])
    return model.eval()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, OBS_DIM, generator=generator), torch.rand(BATCH, ACT_DIM, generator=generator) * 2 - 1


def save(model: GaussianMLPEnsemble, path, **overrides):
    kwargs = dict(
        observation_space=spaces.Box(-np.inf, np.inf, (model.obs_dim,), np.float32),
        action_space=spaces.Box(-1.0, 1.0, (model.act_dim,), np.float32),
        data_fingerprint="abc123",
        metrics={"nll": 0.5},
        config={"epochs": 3},
        seed=7,
    )
    return save_checkpoint(model, path, **{**kwargs, **overrides})


@pytest.mark.parametrize("propagation", ["mean", "ts1", "ts_inf"])
@pytest.mark.parametrize("sample", [False, True])
def test_prediction_shapes_and_dtypes(propagation, sample):
    model = make_model()
    obs, action = batch()
    members = torch.arange(BATCH) % MEMBERS
    state, pred = model.step(
        model.initial_state(obs), action, propagation=propagation, members=members,
        generator=torch.Generator().manual_seed(0), sample=sample,
    )
    assert torch.equal(state, pred.next_obs)
    expected = {
        "next_obs": ((BATCH, OBS_DIM), torch.float32),
        "reward": ((BATCH,), torch.float32),
        "terminated": ((BATCH,), torch.bool),
        "termination_prob": ((BATCH,), torch.float32),
        "uncertainty": ((BATCH,), torch.float32),
        "member": ((BATCH,), torch.int64),
    }
    for name, (shape, dtype) in expected.items():
        value = getattr(pred, name)
        assert (tuple(value.shape), value.dtype) == (shape, dtype), name
    assert torch.all((pred.termination_prob >= 0) & (pred.termination_prob <= 1))
    assert torch.equal(pred.terminated, pred.termination_prob > 0.5)
    assert torch.all(pred.uncertainty > 0)
    if propagation == "mean":
        assert torch.all(pred.member == -1)
    elif propagation == "ts_inf":
        assert torch.equal(pred.member, members)
    else:
        assert torch.all((pred.member >= 0) & (pred.member < MEMBERS))


def test_mean_is_average_of_members_and_uncertainty_is_member_spread():
    model = make_model()
    obs, action = batch()
    per_member = [model.predict(obs, action, propagation="ts_inf", members=torch.full((BATCH,), e)) for e in range(MEMBERS)]
    mean = model.predict(obs, action)
    stacked = torch.stack([p.next_obs for p in per_member])
    torch.testing.assert_close(mean.next_obs, stacked.mean(dim=0))
    torch.testing.assert_close(mean.reward, torch.stack([p.reward for p in per_member]).mean(dim=0))
    normalised_delta = (stacked - obs) / model.target_norm.std[:OBS_DIM]
    torch.testing.assert_close(mean.uncertainty, normalised_delta.std(dim=0, correction=0).mean(dim=-1))
    for p in per_member:  # disagreement does not depend on the propagation
        torch.testing.assert_close(p.uncertainty, mean.uncertainty)


def test_one_member_has_zero_uncertainty_and_select_members_keeps_them():
    model = make_model()
    obs, action = batch()
    chosen = model.select_members([2, 0])
    assert chosen.num_members == 2 and chosen.spec()["ensemble_size"] == 2
    for new, old in enumerate([2, 0]):
        a = chosen.predict(obs, action, propagation="ts_inf", members=torch.full((BATCH,), new))
        b = model.predict(obs, action, propagation="ts_inf", members=torch.full((BATCH,), old))
        torch.testing.assert_close(a.next_obs, b.next_obs)
    single = model.select_members([1])
    assert torch.all(single.predict(obs, action).uncertainty == 0)


def test_ts1_and_sampling_follow_the_generator():
    model = make_model()
    obs, action = batch()
    big_obs, big_action = obs.repeat(50, 1), action.repeat(50, 1)

    def run(seed, **kwargs):
        return model.predict(big_obs, big_action, generator=torch.Generator().manual_seed(seed), **kwargs)

    assert torch.equal(run(3, propagation="ts1").member, run(3, propagation="ts1").member)
    assert not torch.equal(run(3, propagation="ts1").member, run(4, propagation="ts1").member)
    assert set(run(3, propagation="ts1").member.tolist()) == set(range(MEMBERS))
    assert torch.equal(run(3, sample=True).next_obs, run(3, sample=True).next_obs)
    assert not torch.equal(run(3, sample=True).next_obs, run(4, sample=True).next_obs)
    assert not torch.equal(run(3, sample=True).next_obs, run(3).next_obs)


def test_ts_inf_needs_members():
    model = make_model()
    obs, action = batch()
    with pytest.raises(ValueError, match="needs members"):
        model.predict(obs, action, propagation="ts_inf")
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        model.predict(obs, action, propagation="ts_inf", members=torch.full((BATCH,), MEMBERS))
    with pytest.raises(SpaceMismatchError, match="members must have shape"):
        model.predict(obs, action, propagation="ts_inf", members=torch.zeros(BATCH + 1))
    with pytest.raises(ValueError, match="unknown propagation 'ts2'"):
        model.predict(obs, action, propagation="ts2")


def test_bad_inputs_raise_clear_errors():
    model = make_model()
    obs, action = batch()
    with pytest.raises(SpaceMismatchError, match=r"action of shape \[B, 2\], got \[6, 3\]"):
        model.predict(obs, torch.zeros(BATCH, 3))
    with pytest.raises(SpaceMismatchError, match=r"observation of shape \[B, 5\], got \[5\]"):
        model.predict(obs[0], action)
    with pytest.raises(SpaceMismatchError, match="batch size 6 but action has 5"):
        model.predict(obs, action[:5])
    bad = action.clone()
    bad[2, 1] = math.nan
    with pytest.raises(InvalidActionError, match="NaN or infinite") as info:
        model.predict(obs, bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, WmEvalError)
    bad[2, 1] = math.inf
    with pytest.raises(InvalidActionError):
        model.predict(obs, bad)


def test_numpy_inputs_are_accepted():
    model = make_model()
    obs, action = batch()
    torch.testing.assert_close(model.predict(obs.numpy().astype(np.float64), action.numpy()).next_obs, model.predict(obs, action).next_obs)


def test_bf16_inference_is_close_to_fp32():
    model = make_model()
    obs, action = batch()
    reference = model.predict(obs, action)
    model.set_inference_dtype(torch.bfloat16)
    low = model.predict(obs, action)
    assert not torch.equal(low.next_obs, reference.next_obs)
    scale = model.target_norm.std
    torch.testing.assert_close((low.next_obs - obs) / scale[:OBS_DIM], (reference.next_obs - obs) / scale[:OBS_DIM], atol=0.05, rtol=0.02)
    torch.testing.assert_close(low.reward / scale[-1], reference.reward / scale[-1], atol=0.05, rtol=0.02)
    assert low.next_obs.dtype == torch.float32
    with pytest.raises(ValueError, match="bfloat16"):
        model.set_inference_dtype(torch.float16)


def test_box_json_round_trip_keeps_infinite_bounds():
    box = spaces.Box(low=np.array([-np.inf, -1.0], np.float32), high=np.array([np.inf, 2.5], np.float32))
    data = json.loads(json.dumps(box_to_json(box), allow_nan=False))
    assert data == {"type": "Box", "shape": [2], "low": ["-inf", -1.0], "high": ["inf", 2.5], "dtype": "float32"}
    assert box_from_json(data) == box


def test_checkpoint_round_trip_is_bit_identical(tmp_path):
    model = make_model()
    path = save(model, tmp_path / "ckpt")
    loaded = load_checkpoint(path, task="Toy-v0")
    assert isinstance(loaded, GaussianMLPEnsemble) and not loaded.training
    obs, action = batch()
    for propagation in ("mean", "ts1"):
        a = model.predict(obs, action, propagation=propagation, generator=torch.Generator().manual_seed(1), sample=True)
        b = loaded.predict(obs, action, propagation=propagation, generator=torch.Generator().manual_seed(1), sample=True)
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    spec = read_spec(path)
    assert spec["format"] == "wm_eval.model/1" and spec["format_version"] == 1
    assert spec["wm_eval_version"] == wm_eval.__version__
    assert spec["model_class"] == "wm_eval.models.ensemble:GaussianMLPEnsemble"
    assert spec["hyperparameters"] == model.spec()
    assert (spec["task"], spec["seed"], spec["data_fingerprint"]) == ("Toy-v0", 7, "abc123")
    assert spec["metrics"] == {"nll": 0.5} and spec["config"] == {"epochs": 3}
    assert {"torch", "numpy", "python", "wm_eval", "mujoco"} <= set(spec["versions"])
    assert box_from_json(spec["action_space"]) == spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary directory left behind


def test_weights_are_a_plain_state_dict(tmp_path):
    model = make_model()
    path = save(model, tmp_path / "ckpt")
    state = torch.load(path / "weights.pt", weights_only=True)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_saving_over_a_checkpoint_replaces_it_but_never_other_data(tmp_path):
    path = save(make_model(seed=0), tmp_path / "ckpt")
    first = model_fingerprint(path)
    assert model_fingerprint(path) == first and len(first) == 16
    save(make_model(seed=1), path)
    assert model_fingerprint(path) != first
    obs, action = batch()
    torch.testing.assert_close(load_checkpoint(path).predict(obs, action).next_obs, make_model(seed=1).predict(obs, action).next_obs)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not a wm_eval checkpoint"):
        save(make_model(), other)
    assert (other / "thesis.txt").read_text() == "precious"


def test_save_checks_spaces(tmp_path):
    with pytest.raises(SpaceMismatchError):
        save(make_model(), tmp_path / "ckpt", action_space=spaces.Box(-1.0, 1.0, (ACT_DIM + 1,), np.float32))


def _edit_spec(path, **changes):
    spec = json.loads((path / "spec.json").read_text())
    spec.update(changes)
    (path / "spec.json").write_text(json.dumps(spec))


def test_checkpoint_errors(tmp_path):
    model = make_model()
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "missing")

    path = save(model, tmp_path / "no_weights")
    (path / "weights.pt").unlink()
    with pytest.raises(CheckpointError, match="has no weights.pt"):
        load_checkpoint(path)

    path = save(model, tmp_path / "truncated")
    data = (path / "weights.pt").read_bytes()
    (path / "weights.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="weights.pt is truncated or corrupt; re-train or re-download"):
        load_checkpoint(path)

    path = save(model, tmp_path / "bit_rot")
    data = bytearray((path / "weights.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="weights.pt is truncated or corrupt"):
        load_checkpoint(path)

    path = save(model, tmp_path / "not_torch")
    (path / "weights.pt").write_bytes(b"not a torch file")
    _edit_spec(path, weights_sha256=hashlib.sha256(b"not a torch file").hexdigest())
    with pytest.raises(CheckpointError, match="weights.pt is truncated or corrupt"):
        load_checkpoint(path)

    path = save(model, tmp_path / "corrupt_json")
    (path / "spec.json").write_text((path / "spec.json").read_text()[:40])
    with pytest.raises(CheckpointError, match="spec.json is truncated or corrupt"):
        load_checkpoint(path)

    path = save(model, tmp_path / "newer")
    _edit_spec(path, format="wm_eval.model/2", format_version=2)
    with pytest.raises(CheckpointError, match="format version 2, newer .* upgrade wm_eval"):
        load_checkpoint(path)

    path = save(model, tmp_path / "task")
    with pytest.raises(CheckpointError, match="was trained for Toy-v0, not Hopper-v5"):
        load_checkpoint(path, task="Hopper-v5")

    path = save(model, tmp_path / "shape")
    _edit_spec(path, hyperparameters={**model.spec(), "hidden": 32})
    with pytest.raises(CheckpointError, match=r"has shape \[4, 7, 16\], the spec implies \[4, 7, 32\]"):
        load_checkpoint(path)

    path = save(model, tmp_path / "unknown_class")
    _edit_spec(path, model_class="os:system")
    with pytest.raises(CheckpointError, match="names model class os:system, which is not one of wm_eval's"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="os:system, which is not a wm_eval.models.WorldModel subclass"):
        load_checkpoint(path, allow_code=True)  # consent imports the module, but only a WorldModel is built


def test_resolve_model(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "embedded_model_path", lambda task: tmp_path / "assets" / task)
    with pytest.raises(CheckpointError, match="embedded HalfCheetah-v5 model is missing"):
        resolve_model(None, task=None)
    with pytest.raises(CheckpointError, match="no model at 'nowhere': give a checkpoint directory, module:factory or one of default, HalfCheetah-v5"):
        resolve_model("nowhere", task=None)
    with pytest.raises(CheckpointError, match="no embedded model for Ant-v5"):
        resolve_model(None, task="Ant-v5")

    save(make_model("HalfCheetah-v5"), tmp_path / "assets" / "HalfCheetah-v5")
    save(make_model("Hopper-v5", seed=3), tmp_path / "assets" / "Hopper-v5")
    assert resolve_model(None, task=None).task == "HalfCheetah-v5"
    assert resolve_model("default", task="Hopper-v5").task == "Hopper-v5"
    assert resolve_model("Hopper-v5", task=None).task == "Hopper-v5"
    with pytest.raises(CheckpointError, match="trained for Hopper-v5, not HalfCheetah-v5"):
        resolve_model("Hopper-v5", task="HalfCheetah-v5")
    path = save(make_model("Walker2d-v5"), tmp_path / "mine")
    assert resolve_model(str(path), task="Walker2d-v5").task == "Walker2d-v5"
    with pytest.raises(CheckpointError, match="trained for Walker2d-v5, not Hopper-v5"):
        resolve_model(path, task="Hopper-v5")


def test_embedded_model_path_points_into_the_package():
    path = checkpoint_module.embedded_model_path("Hopper-v5")
    assert path.parts[-4:] == ("wm_eval", "assets", "models", "Hopper-v5")
