"""Errors a user can cause: bad paths, bad files, bad options, runs that cannot go on.

Every such error is a :class:`FaceSphereError`; the CLI prints its message without a traceback and exits non-zero.
They all live here (and are exported by ``facesphere``) so that a caller can catch any of them without importing the
module that raises it.
"""

from __future__ import annotations

import pickle
import re


class FaceSphereError(Exception):
    """Base class of every user-facing facesphere error."""


class UnknownNameError(FaceSphereError, KeyError):
    """An unknown registry name or option; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidOptionError(FaceSphereError, ValueError):
    """An option with a valid name but an invalid value."""


class ConfigError(FaceSphereError):
    """A config file or override that does not match the typed config; the message names the file or key."""


class DataError(FaceSphereError):
    """A data file that cannot be read: the message names the file (and record) and the problem."""


class UnsafePickleError(DataError):
    """A pickle that tries to load something other than plain data."""


class NoFaceError(DataError):
    """The detector found no face in an image."""


class OutputError(FaceSphereError):
    """A file facesphere writes could not be written (disk full, permissions); the message says what was kept."""


class CheckpointError(FaceSphereError):
    """A checkpoint or run directory that cannot be read, or does not fit the model."""


class TrainingError(FaceSphereError):
    """Training cannot go on (e.g. repeated non-finite losses); the message names the likely cause."""


class TrainingInterrupted(TrainingError):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint; the message names it and the command that
    resumes the run. ``signum``: the signal; ``exit_code``: 128 + signum (130 for SIGINT, 143 for SIGTERM);
    ``run_dir`` and ``checkpoint``: where the run and its last checkpoint are."""

    def __init__(self, message: str, *, signum: int, run_dir: str, checkpoint: str) -> None:
        super().__init__(message)
        self.signum, self.exit_code, self.run_dir, self.checkpoint = signum, 128 + signum, run_dir, checkpoint


class RunExistsError(FaceSphereError):
    """A new training run was pointed at a directory that already holds files (a run): resume it or overwrite it."""


class GalleryLockedError(FaceSphereError):
    """Another process held the gallery's writer lock for longer than ``lock_timeout``."""


class FaceSphereWarning(UserWarning):
    """Something a user should know that does not stop the work (faces not found and replaced in an evaluation,
    a cleaning threshold that drops much of a set, an uncalibrated decision threshold)."""


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def describe_load_error(error: BaseException, what: str) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in facesphere's words.

    torch's refusal suggests reloading with ``weights_only=False`` (which runs whatever the file asks) or allow-listing
    the refused class; facesphere never repeats that advice: it says what was refused and that nothing was run."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "weights only load failed" in text.lower():
        refused = _REFUSED_GLOBAL.search(text)
        thing = f"the global {refused.group(1)}" if refused else "an object that is not a tensor or plain data"
        return (f"refused to load this {what}: it asks to build {thing}, and a {what} may hold only tensors and "
                "plain data (numbers, strings, lists, dicts); nothing from the file was run. Load only files from "
                "sources you trust")
    lines = [line for line in text.splitlines() if "weights_only" not in line and "safe_globals" not in line]
    reason = " ".join(" ".join(lines).split())[:300] or type(error).__name__
    return f"cannot load this {what} ({type(error).__name__}: {reason})"


__all__ = [
    "FaceSphereError", "UnknownNameError", "InvalidOptionError", "ConfigError", "DataError", "UnsafePickleError",
    "NoFaceError", "OutputError", "CheckpointError", "TrainingError", "GalleryLockedError", "FaceSphereWarning",
]
