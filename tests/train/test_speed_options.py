"""The speed options of ``train``: cudnn.benchmark, the DDP options, batched host syncs (``train.sync_every``) and
the fp16 grad scaler's growth interval; typed, validated, and on the CPU the loop's results unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from facesphere.errors import ConfigError
from facesphere.run.checkpoint import latest_checkpoint, load_checkpoint
from facesphere.run.config import TrainConfig, load_config
from facesphere.train.loop import (
    CUDA_SYNC_EVERY,
    DeviceGuard,
    TrainingError,
    ddp_options,
    make_scaler,
    resolve_sync_every,
    train,
)


def test_defaults_are_deliberate():
    tc = TrainConfig()
    assert tc.cudnn_benchmark is True and tc.sync_every == 0 and tc.scaler_growth_interval == 100
    assert (tc.ddp_broadcast_buffers, tc.ddp_gradient_as_bucket_view, tc.ddp_static_graph, tc.ddp_fp16_compress) == \
        (False, True, False, False)
    assert resolve_sync_every(0, torch.device("cpu")) == 1
    assert resolve_sync_every(0, torch.device("cuda")) == CUDA_SYNC_EVERY
    assert resolve_sync_every(7, torch.device("cpu")) == 7


@pytest.mark.parametrize("key, value, message", [
    ("train.sync_every", "-1", "train.sync_every must be ≥ 0"),
    ("train.scaler_growth_interval", "0", "train.scaler_growth_interval must be ≥ 1"),
    ("train.ddp_bucket_cap_mb", "0", "train.ddp_bucket_cap_mb must be in"),
    ("train.ddp_static_graph", "maybe", "expected true or false"),
    ("train.cudnn_benchmark", "1.5", "expected true or false"),
    ("train.ddp_fp16", "true", "unknown key 'train.ddp_fp16'"),
])
def test_invalid_values_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"--{key}", value])


def test_ddp_options_reach_the_wrapper():
    config = load_config(None, ["--train.ddp_broadcast_buffers", "true", "--train.ddp_static_graph", "true",
                                "--train.ddp_gradient_as_bucket_view", "false", "--train.ddp_bucket_cap_mb", "50"])
    assert ddp_options(config.train, torch.device("cpu")) == {
        "device_ids": None, "broadcast_buffers": True, "gradient_as_bucket_view": False, "static_graph": True,
        "bucket_cap_mb": 50.0}
    assert ddp_options(TrainConfig(), torch.device("cuda", 1))["device_ids"] == [1]


def test_scaler_growth_interval_is_passed():
    config = load_config(None, ["--train.scaler_growth_interval", "37", "--train.amp", "fp16"])
    scaler = make_scaler(config.train, torch.device("cpu"), force=True)
    assert scaler.is_enabled() and scaler.get_growth_interval() == 37
    assert not make_scaler(config.train, torch.device("cpu")).is_enabled()  # fp16 scaling is CUDA's


def test_device_guard_counts_streaks_without_reading():
    guard = DeviceGuard(torch.device("cpu"), consecutive=1)
    for bad, loss in [(True, float("nan")), (False, 2.0), (True, float("inf")), (True, 1.0), (False, 0.5)]:
        guard.record(torch.tensor(bad), torch.tensor(loss))
    assert guard.read() == (3, 0, 2, 2.5)  # 3 bad, none now, longest 2 (1 carried in + 1 = 2 as well), loss 2.5
    guard.record(torch.tensor(True), None)
    assert guard.read() == (1, 1, 1, 0.0)


def _weights(run):
    checkpoint = load_checkpoint(latest_checkpoint(run))
    return {**checkpoint["backbone"], **{f"head.{k}": v for k, v in checkpoint["head"].items()}}


def test_batched_syncs_train_the_same_weights(tmp_path, tiny_overrides):
    common = tiny_overrides + ["--train.steps", "5", "--train.log_every", "2", "--train.checkpoint_every", "5",
                               "--data.val", "[]", "--train.quiet", "true"]
    eager = train(load_config(None, common + ["--train.sync_every", "1"]), out=tmp_path / "a", progress=False)
    lazy = train(load_config(None, common + ["--train.sync_every", "3"]), out=tmp_path / "b", progress=False)
    assert eager["steps"] == lazy["steps"] == 5 and lazy["nonfinite_steps"] == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    logs = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("a", "b")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [2, 4, 5]
    for x, y in zip(*logs):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
        assert ("train_accuracy" in x) == ("train_accuracy" in y)  # lazily: the logging step's batch


def test_batched_guard_still_stops_a_nan_run(tmp_path, tiny_overrides):
    config = load_config(None, tiny_overrides + ["--train.steps", "20", "--train.max_nonfinite_steps", "3",
                                                 "--train.sync_every", "4", "--data.val", "[]"])
    config.data.pixel_std = 0.0  # inputs divided by zero on purpose
    with pytest.raises(TrainingError, match="non-finite for 4 consecutive steps"):
        train(config, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_batched_guard_zeroes_a_nonfinite_steps_gradients(tmp_path, tiny_overrides, monkeypatch):
    """One NaN loss in a finite run: counted at the next read, its gradients zeroed, the weights stay finite.

    The NaN enters at the loss (not the images), so BatchNorm's running statistics stay finite: a NaN batch would
    poison them in the forward pass, and the checkpoint guard would then (rightly) stop the run."""
    import dataclasses

    from facesphere.train import loop

    original = loop.build_model_head
    calls = {"n": 0}

    def head_with_one_nan_loss(*args, **kwargs):
        head = original(*args, **kwargs)
        forward = head.forward

        def nan_once(*inputs, **options):
            calls["n"] += 1
            out = forward(*inputs, **options)
            return dataclasses.replace(out, loss=out.loss * float("nan")) if calls["n"] == 2 else out

        head.forward = nan_once
        return head

    monkeypatch.setattr(loop, "build_model_head", head_with_one_nan_loss)
    config = load_config(None, tiny_overrides + ["--train.steps", "4", "--train.sync_every", "4",
                                                 "--train.checkpoint_every", "4", "--data.val", "[]",
                                                 "--train.quiet", "true"])
    summary = train(config, out=tmp_path / "run", progress=False)
    assert summary["nonfinite_steps"] == 1
    weights = _weights(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
