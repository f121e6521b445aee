"""The training loop: a tiny run end to end, the run directory, bit-for-bit resume after SIGKILL, the NaN guard,
bad samples, and every shipped recipe starting on tiny fake data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facesphere.errors import ConfigError
from facesphere.run.checkpoint import latest_checkpoint, load_checkpoint
from facesphere.run.config import load_config
from facesphere.train.loop import TrainingError, train

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_tiny_run_leaves_a_complete_run_directory(tmp_path, tiny_overrides):
    config = load_config(None, tiny_overrides + ["--train.steps", "6", "--train.checkpoint_every", "3",
                                                 "--train.plots", "true"])
    summary = train(config, out=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert summary["steps"] == 6 and summary["images_per_second"] > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 6
    val = metrics["val"]["synthetic"]
    assert 0.0 <= val["accuracy"] <= 1.0 and "accuracy_std" in val
    assert (run / "config.yaml").is_file() and (run / "best.pt").is_file()
    assert latest_checkpoint(run).name == "step_6.pt"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4, 6]
    assert (run / "curves.png").is_file()
    assert "synthetic" in summary["table"]
    checkpoint = load_checkpoint(run / "checkpoints" / "step_6.pt")
    assert set(checkpoint) >= {"backbone", "head", "optimizer", "state", "rng", "config"}


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "facesphere.cli", "train", "--quiet", *args]


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(latest_checkpoint(run))
    return {**{f"b.{k}": v for k, v in checkpoint["backbone"].items()},
            **{f"h.{k}": v for k, v in checkpoint["head"].items()}}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_for_bit(tmp_path, tiny_overrides):
    common = tiny_overrides + ["--train.steps", "10", "--train.checkpoint_every", "2", "--data.val", "[]",
                               "--train.keep_checkpoints", "10",
                               # every augmentation on: their per-sample seeding must survive the kill too
                               "--data.crop_scale", "0.8", "--data.color_jitter", "0.2", "--data.gray_prob", "0.3",
                               "--data.down_prob", "0.3", "--data.blur_prob", "0.2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "reference"
    subprocess.run(_cli(["--out", str(reference), *common]), check=True, env=env, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_cli(["--out", str(killed), *common]), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step_4.pt").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / "step_10.pt").exists(), "the run finished before the kill"
    # 12 identities x 8 images / batch 16 = 6 batches per epoch: steps 4..6 are mid-epoch 0, 7..10 epoch 1
    result = subprocess.run(_cli(["--resume", str(killed)]), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    first, second = _final_weights(reference), _final_weights(killed)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "metrics.jsonl holds duplicated steps after resume"


def test_nonfinite_loss_stops_with_a_clear_message(tmp_path, tiny_overrides):
    config = load_config(None, tiny_overrides + ["--train.steps", "20", "--train.max_nonfinite_steps", "3",
                                                 "--data.val", "[]"])
    config.data.pixel_std = 0.0  # inputs divided by zero on purpose (a config file may not say so: it is refused)
    with pytest.raises(TrainingError) as info:
        train(config, out=tmp_path / "run", progress=False)
    message = str(info.value)
    assert "non-finite for 3 consecutive steps" in message and "learning rate" in message
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def _image_folder(root: Path, classes: int, per_class: int, size: tuple[int, int], bad: int = 0) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"person_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size[0], size[1], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg")
    for i in range(bad):
        (root / "person_0" / f"broken_{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_bad_samples_are_skipped_and_counted(tmp_path, tiny_overrides):
    data = _image_folder(tmp_path / "data", classes=3, per_class=6, size=(112, 112), bad=2)
    config = load_config(None, tiny_overrides + ["--data.train", f"folder:{data}", "--data.val", "[]",
                                                 "--data.batch_size", "4", "--train.steps", "8",
                                                 "--data.max_bad_fraction", "0.5"])
    summary = train(config, out=tmp_path / "run", progress=False)
    assert summary["bad_samples"] >= 1 and summary["steps"] == 8
    failing = load_config(None, tiny_overrides + ["--data.train", f"folder:{data}", "--data.val", "[]",
                                                  "--data.batch_size", "4", "--train.steps", "8",
                                                  "--data.bad_samples", "fail"])
    with pytest.raises(Exception, match="broken_"):
        train(failing, out=tmp_path / "run2", progress=False)


def test_resume_with_another_models_checkpoint_is_refused(tmp_path, tiny_overrides):
    config = load_config(None, tiny_overrides + ["--train.steps", "2", "--data.val", "[]"])
    train(config, out=tmp_path / "run", progress=False)
    # rewrite the saved config to a different embedding size: the checkpoint no longer fits
    text = (tmp_path / "run" / "config.yaml").read_text().replace("embed_dim: 32", "embed_dim: 48")
    (tmp_path / "run" / "config.yaml").write_text(text)
    with pytest.raises(Exception, match="does not fit"):
        train(resume=tmp_path / "run", progress=False)


def test_resume_through_the_api_applies_safe_changes_and_refuses_others(tmp_path, tiny_overrides):
    config = load_config(None, tiny_overrides + ["--train.steps", "2", "--data.val", "[]"])
    train(config, out=tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="optim.lr"):
        train(load_config(None, tiny_overrides + ["--train.steps", "3", "--data.val", "[]", "--optim.lr", "0.5"]),
              resume=tmp_path / "run", progress=False)
    longer = load_config(None, tiny_overrides + ["--train.steps", "3", "--data.val", "[]"])
    assert train(longer, resume=tmp_path / "run", progress=False)["steps"] == 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_recipe_starts_on_tiny_fake_data(path, tmp_path):
    config = load_config(path)
    size = tuple(config.data.image_size)
    data = _image_folder(tmp_path / "data", classes=3, per_class=2, size=size)
    # the FIW recipe's exclusion lists come from `data overlap` / `data split` runs the user makes first
    config = load_config(path, ["--data.train", f"folder:{data}", "--data.val", "[]", "--data.exclude", "[]",
                                "--data.batch_size", "2",
                                "--data.num_workers", "0", "--train.steps", "1", "--train.amp", "none",
                                "--train.threads", "2", "--train.plots", "false", "--train.quiet", "true"])
    summary = train(config, out=tmp_path / "run", progress=False)
    assert summary["steps"] == 1 and summary["nonfinite_steps"] == 0


def test_gradient_accumulation_and_adamw_run(tmp_path, tiny_overrides):
    config = load_config(None, tiny_overrides + ["--train.steps", "3", "--optim.accumulate", "2",
                                                 "--data.batch_size", "8", "--optim.optimizer", "adamw",
                                                 "--optim.lr", "0.001", "--data.val", "[]", "--head.name", "arcface"])
    summary = train(config, out=tmp_path / "run", progress=False)
    assert summary["steps"] == 3 and summary["nonfinite_steps"] == 0


def test_each_validation_prints_one_line_with_its_accuracy(tmp_path, tiny_overrides, capsys):
    config = load_config(None, tiny_overrides + ["--train.steps", "4", "--train.val_every", "2",
                                                 "--train.quiet", "false"])
    train(config, out=tmp_path / "run", progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if "validation:" in line]
    assert [line.split()[1] for line in lines] == ["2/4", "4/4"]
    assert all(" %" in line and "synthetic" in line for line in lines)
