"""Checkpoint files from elsewhere: refusals say what was refused, never how to switch the safety off."""

from __future__ import annotations

import datetime
import os

import pytest
import torch

from facesphere.errors import CheckpointError, FaceSphereError, OutputError
from facesphere.infer.embedders import load_embedder
from facesphere.run.checkpoint import load_checkpoint, save_checkpoint
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
