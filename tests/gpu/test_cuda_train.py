"""The trainer's device paths, on the CPU and (marked ``cuda``) on a GPU: a checkpoint saved on one device and
loaded on the other and back; ``torchrun --nproc_per_node 1`` through DDP + Partial FC (Gloo / NCCL); the NaN guard
with the fp16 grad scaler."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from facesphere.run.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from facesphere.run.config import load_config
from facesphere.run.directory import load_run
from facesphere.train import loop
from facesphere.train.loop import TrainingError, train
from tests.helpers import REPO, TINY

from .conftest import DEVICES

QUIET = ["--data.val", "[]", "--train.quiet", "true"]


def _embed(backbone, device: str) -> np.ndarray:
    images = torch.linspace(-1, 1, 2 * 3 * 112 * 112).reshape(2, 3, 112, 112).to(device)
    with torch.no_grad():
        return backbone(images).float().cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_moves_between_devices(tmp_path, device):
    amp = ["--train.amp", "fp16"] if device == "cuda" else []
    config = load_config(None, TINY + QUIET + ["--train.device", device, "--train.steps", "2",
                                               "--train.checkpoint_every", "2", *amp])
    run = tmp_path / "run"
    train(config, out=run, progress=False)
    path = latest_checkpoint(run)
    checkpoint = load_checkpoint(path, map_location="cpu")  # saved on `device`, read onto the CPU
    assert all(v.device.type == "cpu" for v in checkpoint["backbone"].values())
    _, on_cpu, head, _ = load_run(path, device="cpu")
    reference = _embed(on_cpu, "cpu")
    copy = tmp_path / "copy.pt"  # written again from the CPU, then back onto `device`
    save_checkpoint(checkpoint, copy)
    _, back, head_back, _ = load_run(copy, device=device)
    assert next(back.parameters()).device.type == device and head_back.weight.device.type == device
    np.testing.assert_allclose(_embed(back, device), reference, rtol=1e-3, atol=1e-4)
    for key, value in on_cpu.state_dict().items():
        assert torch.equal(value, back.state_dict()[key].cpu()), key
    if device == "cuda":  # and the optimiser / scaler state resumes on the GPU
        more = load_config(None, TINY + QUIET + ["--train.device", device, "--train.steps", "3"])
        assert train(more, resume=run, progress=False)["steps"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_torchrun_one_process_ddp_partial_fc(tmp_path, device):
    """``torchrun --nproc_per_node 1`` with ``FACESPHERE_DISTRIBUTED=1``: a process group of one (Gloo on the CPU,
    NCCL on a GPU), the backbone in DDP (fp16-compressed all-reduce), the head a Partial FC shard sampling half the
    classes."""
    out = tmp_path / "run"
    env = dict(os.environ, FACESPHERE_DISTRIBUTED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    amp = ["--train.amp", "fp16"] if device == "cuda" else []
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "facesphere.cli", "train", *TINY, *QUIET, "--train.device", device, "--train.steps", "3",
               "--train.checkpoint_every", "3", "--head.partial_fc_rate", "0.5", "--train.ddp_fp16_compress", "true",
               "--train.sync_every", "2", *amp, "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["nonfinite_steps"] == 0
    checkpoint = load_checkpoint(out / "checkpoints" / "step_3.pt")
    assert any(key.startswith("head.") for key in checkpoint["head"])  # a Partial FC shard
    assert not any(key.startswith(("module.", "_orig_mod.")) for key in checkpoint["backbone"])
    load_run(out)


@pytest.mark.parametrize("sync_every", [1, 4])
@pytest.mark.parametrize("device", DEVICES)
def test_nan_guard_with_the_fp16_scaler(tmp_path, device, sync_every, monkeypatch):
    """Inputs divided by zero under ``amp: fp16`` with its grad scaler (on the CPU the scaler is forced on, over
    bf16 autocast): every step skipped, the scale backing off, then the run stops with the fp16 hint."""
    config = load_config(None, TINY + QUIET + ["--train.device", device, "--train.amp", "fp16",
                                               "--train.steps", "20", "--train.max_nonfinite_steps", "4",
                                               "--train.sync_every", str(sync_every)])
    config.data.pixel_std = 0.0  # (a config file may not say so: it is refused)
    scalers = []
    original = loop.make_scaler

    def keep(tc, dev):
        scaler = original(tc, dev, force=device == "cpu")
        scalers.append(scaler)
        return scaler

    monkeypatch.setattr(loop, "make_scaler", keep)
    with pytest.raises(TrainingError, match="non-finite for 4 consecutive steps") as info:
        train(config, out=tmp_path / "run", progress=False)
    assert "fp16 overflow" in str(info.value)
    assert scalers[0].is_enabled() and scalers[0].get_scale() <= 2.0 ** 16 / 2 ** 4  # backed off every step


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_embedding_of_a_run(tiny_run, device):
    """``facesphere eval / embed --device cuda --fp16``'s embedder: fp16 features of a trained run agree with the CPU
    fp32 ones; on the CPU fp16 is refused with the way out."""
    from facesphere.errors import InvalidOptionError
    from facesphere.infer.embedders import embed_images, load_embedder

    crops = np.random.default_rng(0).integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    reference = embed_images(load_embedder(tiny_run, device="cpu"), lambda i: crops[i], len(crops))
    if device == "cpu":
        with pytest.raises(InvalidOptionError, match="needs a CUDA device"):
            load_embedder(tiny_run, device="cpu", fp16=True)
        return
    features = embed_images(load_embedder(tiny_run, device=device, fp16=True), lambda i: crops[i], len(crops))
    assert features.dtype == np.float32 and features.shape == reference.shape
    assert float(np.min(np.sum(features * reference, axis=1))) > 0.999  # cosines of unit features
