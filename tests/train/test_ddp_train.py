"""The trainer under torch.distributed: 2 Gloo processes on the CPU, DDP backbone + Partial FC head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facesphere.train.distributed import spawn_gloo
from tests.helpers import TINY

pytestmark = pytest.mark.slow  # processes / real data end to end: left out by -m "not slow"


def _train_rank(info, out: str, extra: list[str]):
    from facesphere.run.config import load_config
    from facesphere.train.loop import train

    config = load_config(None, TINY + ["--train.steps", "4", "--train.checkpoint_every", "2", *extra])
    summary = train(config, out=out, progress=False)
    from facesphere.run.checkpoint import load_checkpoint

    name = "step_4.pt" if info.rank == 0 else f"step_4.rank{info.rank}.pt"  # this rank's own final checkpoint
    checkpoint = load_checkpoint(Path(out) / "checkpoints" / name)
    return {"steps": summary["steps"], "backbone": checkpoint["backbone"], "head": checkpoint["head"]}


def test_two_process_ddp_with_partial_fc(tmp_path):
    out = str(tmp_path / "run")
    results = spawn_gloo(_train_rank, 2, out, ["--head.partial_fc_rate", "0.5"])
    assert [r["steps"] for r in results] == [4, 4]
    for key, value in results[0]["backbone"].items():  # DDP keeps the backbone weights identical
        if "running_" in key or "num_batches_tracked" in key:
            continue  # BatchNorm statistics are per rank (rank 0's are broadcast at the next forward)
        assert torch.equal(value, results[1]["backbone"][key]), key
    # the head is sharded: 12 classes -> 6 + 6 rows
    assert results[0]["head"]["head.weight"].shape[0] + results[1]["head"]["head.weight"].shape[0] == 12
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    assert metrics["steps"] == 4 and "synthetic" in metrics["val"]
    assert (Path(out) / "checkpoints" / "step_4.rank1.pt").is_file()


def _interrupted_rank(info, out: str, signal_rank: int | None):
    """Train 4 steps (Partial FC); rank ``signal_rank`` alone gets SIGTERM during step 2; resume when interrupted."""
    import signal

    import facesphere.train.loop as loop
    from facesphere.errors import TrainingInterrupted
    from facesphere.run.config import load_config

    set_learning_rate = loop.set_learning_rate

    def signalling(optimizer, step, *args, **kwargs):
        if step == 1 and info.rank == signal_rank:
            signal.raise_signal(signal.SIGTERM)
        return set_learning_rate(optimizer, step, *args, **kwargs)

    loop.set_learning_rate = signalling
    config = load_config(None, TINY + ["--train.steps", "4", "--train.checkpoint_every", "100", "--data.val", "[]",
                                       "--head.partial_fc_rate", "0.5"])
    stopped = None
    try:
        loop.train(config, out=out, progress=False)
    except TrainingInterrupted as error:
        stopped = {"step_file": Path(error.checkpoint).name, "code": error.exit_code,
                   "files": sorted(p.name for p in (Path(out) / "checkpoints").iterdir())}
    return {"stopped": stopped}


def _resume_rank(info, out: str):
    from facesphere.run.checkpoint import load_checkpoint
    from facesphere.train.loop import train

    summary = train(resume=out, progress=False)
    name = "step_4.pt" if info.rank == 0 else f"step_4.rank{info.rank}.pt"
    checkpoint = load_checkpoint(Path(out) / "checkpoints" / name)
    return {"steps": summary["steps"], "backbone": checkpoint["backbone"], "head": checkpoint["head"]}


def _final_rank(info, out: str):
    from facesphere.run.checkpoint import load_checkpoint

    name = "step_4.pt" if info.rank == 0 else f"step_4.rank{info.rank}.pt"
    checkpoint = load_checkpoint(Path(out) / "checkpoints" / name)
    return {"backbone": checkpoint["backbone"], "head": checkpoint["head"]}


def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step_and_resumes_bit_for_bit(tmp_path):
    reference = str(tmp_path / "reference")
    assert [r["stopped"] for r in spawn_gloo(_interrupted_rank, 2, reference, None)] == [None, None]
    out = str(tmp_path / "run")
    stopped = [r["stopped"] for r in spawn_gloo(_interrupted_rank, 2, out, 1)]
    assert [s["step_file"] for s in stopped] == ["step_2.pt", "step_2.pt"] and {s["code"] for s in stopped} == {143}
    assert sorted(p.name for p in (Path(out) / "checkpoints").iterdir()) == ["step_2.pt", "step_2.rank1.pt"]
    resumed = spawn_gloo(_resume_rank, 2, out)
    assert [r["steps"] for r in resumed] == [4, 4]
    for rank, expected in enumerate(spawn_gloo(_final_rank, 2, reference)):
        for part in ("backbone", "head"):
            _assert_equal(expected[part], resumed[rank][part], f"rank {rank} {part}")


def _assert_equal(first, second, where: str) -> None:
    if isinstance(first, dict):
        assert first.keys() == second.keys(), where
        for key in first:
            _assert_equal(first[key], second[key], f"{where}.{key}")
    elif isinstance(first, torch.Tensor):
        assert torch.equal(first, second), where
    else:
        assert first == second, where


def test_ddp_options_and_batched_syncs_under_two_processes(tmp_path):
    """Every ``train.ddp_*`` option away from its default (BN buffers broadcast, static graph, gradients copied out
    of the buckets, fp16-compressed all-reduce) and the device-side guard read every 3 steps on both ranks."""
    out = str(tmp_path / "run")
    results = spawn_gloo(_train_rank, 2, out, ["--train.ddp_broadcast_buffers", "true",
                                               "--train.ddp_static_graph", "true",
                                               "--train.ddp_gradient_as_bucket_view", "false",
                                               "--train.ddp_fp16_compress", "true", "--train.sync_every", "3"])
    assert [r["steps"] for r in results] == [4, 4]
    for key, value in results[0]["backbone"].items():
        if "num_batches_tracked" in key:
            continue
        assert torch.isfinite(value).all(), key
        if "running_" not in key:
            assert torch.equal(value, results[1]["backbone"][key]), key
