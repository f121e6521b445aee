"""Stopping a training run on Ctrl-C (SIGINT) or SIGTERM without losing it.

While :func:`facesphere.train.loop.train` runs its steps, :class:`StopSignals` turns the first SIGINT or SIGTERM into
a request: the loop finishes the step it is in, writes a checkpoint (the same atomic file at the same point of the
step as a periodic one, so resuming from it is bit for bit) and raises
:class:`~facesphere.errors.TrainingInterrupted`, whose message holds the ``facesphere train --resume RUN_DIR``
command (the CLI prints it and exits with 128 + the signal: 130 for SIGINT, 143 for SIGTERM). A second signal stops
at once without saving: the handler that was there before is put back and the signal sent again.

Library hygiene: handlers are installed only while the steps run, only in the main thread (elsewhere nothing is
installed and signals keep their previous meaning), never over a signal the process ignores (a background job's
SIGINT), and the previous handlers are restored afterwards, whatever happens. Data-loader workers ignore both
signals (:func:`ignore_stop_signals`): a Ctrl-C reaches the terminal's whole process group, and the main process,
not the workers, decides when to stop.

Distributed runs (torchrun): every rank must stop at the same step, so when a process group is initialised the ranks
agree on the stop request with a MAX all-reduce of one integer after each step; they then all save their checkpoint
files as the periodic path does (rank 0 the run's ``step_N.pt``, other ranks their Partial FC shards) and stop.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from ..errors import TrainingInterrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """SIGINT / SIGTERM as a request to stop at the end of the current step (see the module docstring)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in STOP_SIGNALS:
            current = signal.getsignal(signum)
            if current is signal.SIG_IGN:
                continue  # e.g. SIGINT of a job started in the background: not ours to catch
            signal.signal(signum, self._handle)
            self._previous[signum] = current
        return self

    def restore(self) -> None:
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second one: stop now, as the process would have without us
            self.restore()
            os.write(2, b"\nfacesphere: stopping at once, without saving\n")
            signal.raise_signal(signum)
            return
        self.signum = signum
        # os.write, not print: a handler may run in the middle of another write to sys.stderr (the progress bar)
        os.write(2, f"\nfacesphere: {signal.Signals(signum).name} received: finishing this step and saving a "
                    f"checkpoint (send it again to stop at once without saving)\n".encode())

    def requested(self, device: torch.device | None = None) -> int | None:
        """The signal that asked to stop, else None; in a distributed run, any rank's (all ranks get the same)."""
        signum = self.signum or 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([signum], dtype=torch.int64, device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
        return signum or None


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores SIGINT / SIGTERM (the main process stops it)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def interrupted(signum: int, run_dir: Path, checkpoint: Path, step: int, total: int) -> TrainingInterrupted:
    """The exception the loop raises once the checkpoint of an interrupted run is written."""
    command = f"facesphere train --resume {shlex.quote(str(run_dir))}"
    return TrainingInterrupted(
        f"training stopped by {signal.Signals(signum).name} at step {step}/{total}; checkpoint saved to "
        f"{checkpoint}; continue with: {command}",
        signum=signum, run_dir=str(run_dir), checkpoint=str(checkpoint))


__all__ = ["StopSignals", "ignore_stop_signals", "interrupted", "STOP_SIGNALS"]
