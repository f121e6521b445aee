"""``train.compile`` and ``train.channels_last`` in the loop: checkpoints hold the model's own keys (no
``_orig_mod.`` / ``module.`` wrapper prefixes), ``--resume`` and ``load_run`` read them, and checkpoints written
before the fix (prefixed keys) still load."""

from __future__ import annotations

import functools


import pytest
import torch
from torch import nn

from facesphere.errors import CheckpointError
from facesphere.run.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
    strip_wrapper_prefixes,
    unwrap_model,
)
from facesphere.run.config import load_config
from facesphere.run.directory import load_run
from facesphere.train.loop import train



def test_unwrap_model_strips_compile_and_data_parallel_wrappers():
    plain = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    compiled = torch.compile(plain)  # lazy: nothing compiles until the first call
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    assert unwrap_model(compiled) is plain
    assert unwrap_model(torch.compile(nn.DataParallel(plain))) is plain  # _orig_mod.module.
    assert unwrap_model(nn.DataParallel(torch.compile(plain))) is plain  # module._orig_mod.
    assert unwrap_model(plain) is plain


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module.", "_orig_mod.module.", "module._orig_mod."])
def test_prefixed_state_dicts_load(prefix):
    source = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        source[0].weight.normal_()
    state = {prefix + k: v for k, v in source.state_dict().items()}
    target = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    load_state_dict_checked(target, state, "old.pt", "backbone")
    assert torch.equal(target[0].weight, source[0].weight)
    # into a wrapped target too
    target2 = torch.compile(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)))
    load_state_dict_checked(target2, state, "old.pt", "backbone")
    assert torch.equal(unwrap_model(target2)[0].weight, source[0].weight)


def test_prefix_kept_when_the_model_uses_it_and_mismatch_still_named():
    own = ["module.weight"]
    assert set(strip_wrapper_prefixes({"module.weight": 1}, own)) == {"module.weight"}
    assert set(strip_wrapper_prefixes({"_orig_mod.a": 1, "b": 2})) == {"_orig_mod.a", "b"}  # not every key
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_state_dict_checked(nn.Linear(3, 2), {"_orig_mod.weight": torch.zeros(2, 3), "_orig_mod.bias":
                                                 torch.zeros(2), "_orig_mod.extra": torch.zeros(1)}, "x.pt", "backbone")


@pytest.fixture
def fast_compile(monkeypatch):
    """``torch.compile`` with the ``eager`` backend: the real TorchDynamo wrapper (``OptimizedModule``, graph capture,
    ``_orig_mod.`` keys) without Inductor's C++ code generation, which takes minutes on a small CPU."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))


def test_compile_and_channels_last_in_the_loop_then_resume_and_load_run(tmp_path, tiny_overrides, fast_compile):
    overrides = tiny_overrides + ["--train.compile", "true", "--train.channels_last", "true",
                                  "--train.checkpoint_every", "2", "--data.val", "[]", "--train.quiet", "true"]
    run = tmp_path / "run"
    summary = train(load_config(None, overrides + ["--train.steps", "2"]), out=run, progress=False)
    assert summary["steps"] == 2 and summary["nonfinite_steps"] == 0
    checkpoint = load_checkpoint(latest_checkpoint(run))
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in checkpoint["backbone"])
    config, backbone, head, _ = load_run(run)
    assert config.train.compile and head is not None
    summary = train(load_config(None, overrides + ["--train.steps", "4"]), resume=run, progress=False)
    assert summary["steps"] == 4
    assert latest_checkpoint(run).name == "step_4.pt"


def test_a_checkpoint_with_orig_mod_keys_still_resumes_and_loads(tmp_path, tiny_overrides):
    """Checkpoints written by the compiled loop before the fix carry ``_orig_mod.`` keys."""
    overrides = tiny_overrides + ["--train.checkpoint_every", "2", "--data.val", "[]", "--train.quiet", "true"]
    run = tmp_path / "run"
    train(load_config(None, overrides + ["--train.steps", "2"]), out=run, progress=False)
    path = latest_checkpoint(run)
    checkpoint = load_checkpoint(path)
    checkpoint["backbone"] = {"_orig_mod." + k: v for k, v in checkpoint["backbone"].items()}
    save_checkpoint(checkpoint, path)
    _, backbone, _, _ = load_run(path)
    assert all(not k.startswith("_orig_mod.") for k in backbone.state_dict())
    assert train(load_config(None, overrides + ["--train.steps", "4"]), resume=run, progress=False)["steps"] == 4


@pytest.mark.slow
def test_compile_with_inductor_in_the_loop(tmp_path, tiny_overrides):
    """The real default backend once (Inductor, C++ code generation on the CPU: slow, hence ``slow``)."""
    pytest.importorskip("torch._inductor")
    overrides = tiny_overrides + ["--train.compile", "true", "--train.steps", "2", "--train.checkpoint_every", "2",
                                  "--data.val", "[]", "--train.quiet", "true"]
    run = tmp_path / "run"
    assert train(load_config(None, overrides), out=run, progress=False)["steps"] == 2
    assert not any(k.startswith("_orig_mod.") for k in load_checkpoint(latest_checkpoint(run))["backbone"])
    load_run(run)
