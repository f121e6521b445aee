"""Checkpoint files from elsewhere: refusals say what was refused, never how to switch the safety off."""

from __future__ import annotations

import datetime
import os

import pytest
import torch

from facesphere.errors import CheckpointError, FaceSphereError, OutputError, TrainingError
from facesphere.infer.embedders import load_embedder
from facesphere.run.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from tests.helpers import simulate_full_disk


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload, refused", [("command", "posix.system"), ("date", "datetime.date")])
def test_refusals_name_what_was_refused_and_do_not_advise_weights_only_false(tmp_path, payload, refused):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    value = _RunsACommand(marker) if payload == "command" else datetime.date(2020, 1, 1)
    torch.save({"backbone": {"w": torch.zeros(2)}, "config": value}, path)
    if payload == "command" and os.name != "posix":  # pragma: no cover
        refused = "system"
    loaders = {"checkpoint": lambda: load_checkpoint(path),
               "PyTorch state dict": lambda: load_embedder(path, arch="iresnet18")}
    for what, load in loaders.items():
        with pytest.raises(FaceSphereError) as info:
            load()
        message = str(info.value)
        assert message.startswith(f"{path}: refused to load this {what}: it asks to build the global {refused}")
        assert "nothing from the file was run" in message
        for advice in ("weights_only", "safe_globals", "allowlist", "will likely succeed"):
            assert advice not in message, message
    assert isinstance(pytest.raises(CheckpointError, load_checkpoint, path).value, CheckpointError)
    assert not marker.exists()


def test_other_load_errors_keep_their_reason_without_torch_advice(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match=r"broken\.pt: cannot load this checkpoint \(RuntimeError: .*zip"):
        load_checkpoint(path)


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "step_10.pt"
    save_checkpoint({"step": 10, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    simulate_full_disk(monkeypatch, tmp_path)
    with pytest.raises(OutputError) as info:
        save_checkpoint({"step": 20, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert str(info.value).startswith(f"{path}: cannot write the checkpoint (")
    assert str(info.value).endswith("the previous version is intact")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["step_10.pt"]
    assert load_checkpoint(path)["step"] == 10


def test_a_model_holding_nan_or_inf_is_never_written(tmp_path):
    """Issue 13 §4: BatchNorm running variances overflowed to inf (the loss stayed finite) were saved as a model whose
    every embedding is zero; now the checkpoint is refused, naming the tensors and the likely cause."""
    path = tmp_path / "step_2.pt"
    good = {"backbone": {"bn.running_var": torch.ones(4), "bn.num_batches_tracked": torch.tensor(3)},
            "head": {"weight": torch.ones(2, 4)}, "config": '{"optim": {"lr": 1000000.0}}'}
    save_checkpoint(good, path)
    before = path.read_bytes()
    broken = {**good, "backbone": {"bn.running_var": torch.tensor([1.0, float("inf"), 1.0, 1.0]),
                                   "bn.num_batches_tracked": torch.tensor(4)}}
    with pytest.raises(TrainingError) as info:
        save_checkpoint(broken, path)
    message = str(info.value)
    assert message.startswith(f"{path}: not saved") and "backbone.bn.running_var" in message
    assert "optim.lr=1000000.0" in message and "BatchNorm running statistics" in message
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["step_2.pt"]
    nan_head = {**good, "head": {"weight": torch.full((2, 4), float("nan"))}}
    with pytest.raises(TrainingError, match=r"head\.weight"):
        save_checkpoint(nan_head, tmp_path / "best.pt")
    assert not (tmp_path / "best.pt").exists()


def test_prune_removes_damaged_steps_and_stale_temp_files_but_not_a_write_in_progress(tmp_path, recwarn):
    """Issue 13 §6, unit level: killed writers' temp files of older steps and of best.pt go, a damaged step file goes
    (it never counts as one of the kept checkpoints), a newer step's temp file (another rank still writing) stays."""
    folder = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        save_checkpoint({"step": step}, folder / f"step_{step}.pt")
    damaged = folder / "step_8.pt"
    damaged.write_bytes((folder / "step_6.pt").read_bytes()[:100])
    assert latest_checkpoint(tmp_path) == folder / "step_6.pt"
    assert "step_8.pt: not a complete checkpoint file" in str(recwarn.pop().message)
    stale = [folder / ".step_4.pt.ab12cd.tmp", folder / ".step_2.rank1.pt.ef34gh.tmp", tmp_path / ".best.pt.ij56kl.tmp"]
    writing = folder / ".step_6.rank1.pt.mn78op.tmp"
    for path in [*stale, writing]:
        path.write_bytes(b"partial")
    prune_checkpoints(tmp_path, keep=1)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [6]
    assert not any(path.exists() for path in stale) and writing.exists()
