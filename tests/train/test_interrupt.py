"""Ctrl-C / SIGTERM during training: a checkpoint at the end of the current step, the --resume command, exit 130 /
143, the previous handlers back afterwards; resuming ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import facesphere.train.loop as loop
from facesphere.errors import TrainingInterrupted
from facesphere.run.checkpoint import latest_checkpoint, list_checkpoints
from facesphere.run.config import load_config
from facesphere.train.interrupt import StopSignals
from facesphere.train.loop import train
from tests.helpers import PACKAGE

from .test_loop import _cli, _final_weights

#: the CLI in a child whose step ``PAUSE_AT + 1`` waits until the parent has sent its signal (argv: marker file,
#: PAUSE_AT, train options): the signal always lands in that step, however loaded the machine is
_PAUSING_CLI = r"""
import sys, time
from pathlib import Path
import facesphere.train.loop as loop
from facesphere.cli import main

marker, pause_at = Path(sys.argv[1]), int(sys.argv[2])
set_learning_rate = loop.set_learning_rate

def pausing(optimizer, step, *args, **kwargs):
    if step == pause_at:
        marker.write_text("waiting")
        deadline = time.time() + 200
        while not marker.with_suffix(".sent").exists() and time.time() < deadline:
            time.sleep(0.02)
    return set_learning_rate(optimizer, step, *args, **kwargs)

loop.set_learning_rate = pausing
sys.exit(main(["train", "--quiet", *sys.argv[3:]]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))}


def _interrupt(run: Path, common: list[str], signum: int, *, group: bool, pause_at: int) -> tuple[int, str]:
    """Start the pausing CLI on ``run``, send ``signum`` in step ``pause_at + 1`` (to its whole process group, as a
    terminal's Ctrl-C does, when ``group``); its exit status and stderr."""
    marker = run.parent / f"{run.name}.marker"
    process = subprocess.Popen([sys.executable, "-c", _PAUSING_CLI, str(marker), str(pause_at), "--out", str(run),
                                *common], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.time() + 240
        while not marker.exists():
            assert process.poll() is None, f"the run ended before the signal: {process.stderr.read()[-2000:]}"
            assert time.time() < deadline, "the run never reached the step to interrupt"
            time.sleep(0.05)
        (os.killpg if group else os.kill)(process.pid, signum)
        marker.with_suffix(".sent").write_text("")
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


@pytest.mark.slow
@pytest.mark.parametrize("signum, group, workers", [(signal.SIGINT, True, 1), (signal.SIGTERM, False, 0)],
                         ids=["sigint-process-group-with-a-worker", "sigterm"])
def test_signal_saves_a_checkpoint_and_resume_is_bit_for_bit(tmp_path, tiny_overrides, signum, group, workers):
    common = tiny_overrides + ["--train.steps", "10", "--train.checkpoint_every", "100", "--data.val", "[]",
                               "--train.keep_checkpoints", "10", "--data.num_workers", str(workers),
                               "--data.crop_scale", "0.8", "--data.color_jitter", "0.2"]
    reference = tmp_path / "reference"
    subprocess.run(_cli(["--out", str(reference), *common]), check=True, env=_env(), capture_output=True, timeout=300)

    run = tmp_path / "stopped run"  # a space: the printed command must quote it
    code, stderr = _interrupt(run, common, signum, group=group, pause_at=4)
    assert code == 128 + signum, stderr
    assert f"facesphere train --resume {shlex.quote(str(run))}" in stderr
    assert signal.Signals(signum).name in stderr and "step 5/10" in stderr
    # the one checkpoint of this run is the interrupt's (checkpoint_every is past the end)
    assert [step for step, _ in list_checkpoints(run)] == [5]
    assert not any(p.name.endswith(".tmp") for p in (run / "checkpoints").iterdir())

    # 12 identities x 8 images / batch 16 = 6 batches per epoch: the resumed steps 6..10 cross into epoch 1
    result = subprocess.run(_cli(["--resume", str(run)]), env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    first, second = _final_weights(reference), _final_weights(run)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 10


def _signal_in_step(monkeypatch, step: int, signum: int, seen: list | None = None) -> None:
    """Make the loop receive ``signum`` during step ``step + 1`` (and record the handler it had then)."""
    set_learning_rate = loop.set_learning_rate

    def signalling(optimizer, at, *args, **kwargs):
        if at == step:
            if seen is not None:
                seen.append(signal.getsignal(signum))
            signal.raise_signal(signum)
        return set_learning_rate(optimizer, at, *args, **kwargs)

    monkeypatch.setattr(loop, "set_learning_rate", signalling)


def test_in_process_stop_raises_with_the_resume_command_and_restores_the_handlers(tmp_path, tiny_overrides,
                                                                                    monkeypatch):
    calls = []

    def mine(signum, frame):  # the caller's own SIGTERM handler: replaced during the steps only, then back
        calls.append(signum)

    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, mine)
    try:
        seen: list = []
        _signal_in_step(monkeypatch, 2, signal.SIGTERM, seen)
        config = load_config(None, tiny_overrides + ["--train.steps", "6", "--data.val", "[]",
                                                     "--train.checkpoint_every", "100"])
        with pytest.raises(TrainingInterrupted) as info:
            train(config, out=tmp_path / "run", progress=False)
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is previous_int
        assert seen and seen[0] is not mine  # facesphere's handler was in place during the steps
        assert calls == []  # the signal was facesphere's to handle, not passed on
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    stopped = info.value
    assert stopped.exit_code == 143 and stopped.signum == signal.SIGTERM
    assert f"facesphere train --resume {tmp_path / 'run'}" in str(stopped) and "step 3/6" in str(stopped)
    assert Path(stopped.checkpoint) == latest_checkpoint(tmp_path / "run") == tmp_path / "run/checkpoints/step_3.pt"
    # and the run resumes from it to the end
    summary = train(resume=tmp_path / "run", progress=False)
    assert summary["steps"] == 6


def test_the_last_step_is_not_an_interruption(tmp_path, tiny_overrides, monkeypatch):
    _signal_in_step(monkeypatch, 2, signal.SIGINT)  # during the last step: the run simply ends
    config = load_config(None, tiny_overrides + ["--train.steps", "3", "--data.val", "[]"])
    assert train(config, out=tmp_path / "run", progress=False)["steps"] == 3


def test_handlers_only_in_the_main_thread_and_not_over_an_ignored_signal(tmp_path, tiny_overrides):
    config = load_config(None, tiny_overrides + ["--train.steps", "2", "--data.val", "[]"])
    errors: list[BaseException] = []

    def run() -> None:
        try:
            train(config, out=tmp_path / "thread", progress=False)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=300)
    assert not errors and (tmp_path / "thread" / "checkpoints" / "step_2.pt").is_file()

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's SIGINT
    term = signal.getsignal(signal.SIGTERM)
    try:
        with StopSignals() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not term
            signal.raise_signal(signal.SIGINT)
            assert stop.requested() is None
        assert signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_signal_stops_at_once_through_the_previous_handler():
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with StopSignals() as stop:
            signal.raise_signal(signal.SIGINT)
            assert stop.requested() == signal.SIGINT
            signal.raise_signal(signal.SIGINT)  # Python's default handler: KeyboardInterrupt
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is previous
