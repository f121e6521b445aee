"""The run directory a training call writes into: refused when occupied, created late, removed when nothing came of it.

* A new run (not ``resume``) refuses a directory that exists and holds anything, before any work: it may be another
  run, whose config, ``best.pt`` and checkpoints would be overwritten or mixed with the new ones. ``overwrite=True``
  (``--overwrite``) accepts it: the files a run writes (:data:`RUN_FILES`, :data:`RUN_FOLDERS`) are deleted once the
  new run is ready to start, other files are left alone.
* The directory is created (and ``config.yaml`` written) only once the data, model and validation sets are built,
  so a bad data path, config or model leaves nothing behind.
* A new run that fails (or is interrupted) before its first step completes removes what it wrote: the directory
  itself when this call created it, else the run files only.
* A resumed run keeps its saved config: :func:`resume_config` applies only the overrides in :data:`RESUME_SAFE`
  (the run's length and how it logs, validates, saves and reports) and records them in ``config.yaml``; any other
  change is refused, naming the keys, since it would mix two trainings in one run.
* A resumed run first repairs ``metrics.jsonl``: lines that are not a JSON record (the half-written last line of a
  run killed while logging) are dropped with a warning instead of stopping the resume with a raw traceback.
"""

from __future__ import annotations

import json
import shlex
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError, FaceSphereWarning, InvalidOptionError, OutputError, RunExistsError
from ..files import atomic_write_text
from ..run.config import Config, config_to_dict, load_config, save_config
from ..run.directory import BEST_NAME, CONFIG_NAME, read_run_config

METRICS_LOG = "metrics.jsonl"
#: the files and folders :func:`facesphere.train.loop.train` writes in a run directory
RUN_FILES = (CONFIG_NAME, BEST_NAME, METRICS_LOG, "metrics.json", "curves.png")
RUN_FOLDERS = ("checkpoints", "tensorboard")


class RunDirectory:
    """One training call's run directory (see the module docstring); ``state``: the loop's counters once known."""

    def __init__(self, path: Path, *, resume: bool, overwrite: bool) -> None:
        if resume and overwrite:
            raise InvalidOptionError("resume and overwrite exclude each other: resume continues a run, overwrite "
                                     "starts it over")
        self.path, self.resume, self.overwrite = path, resume, overwrite
        self.existed = path.exists()
        self.created = False
        self.state: Any = None
        if resume:
            repair_metrics_log(path / METRICS_LOG)
            return
        if self.existed and not path.is_dir():
            raise OutputError(f"{path}: exists and is not a directory; choose another --out")
        if self.existed and not overwrite and any(path.iterdir()):
            quoted = shlex.quote(str(path))
            raise RunExistsError(f"{path}: the run directory already exists and is not empty; continue that run with "
                                 f"'facesphere train --resume {quoted}', replace it with --overwrite, or choose "
                                 "another --out")

    def create(self, config: Config) -> None:
        """Make the directory (deleting an overwritten run's files) and write ``config.yaml``."""
        if self.overwrite and self.existed:
            _remove_run_files(self.path)
        elif not self.resume and self.path.is_dir() and any(self.path.iterdir()):
            # another process (e.g. a run started in the same second under the same default name) got there first
            raise RunExistsError(f"{self.path}: another process wrote into this run directory while this run was "
                                 "starting; choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        self.created = True
        save_config(config, self.path / CONFIG_NAME)

    def discard(self) -> None:
        """After a failure: remove what a new run wrote when it failed before its first step (else nothing)."""
        if self.resume or not self.created or (self.state is not None and self.state.step > 0):
            return
        if not self.existed:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            _remove_run_files(self.path)


def _remove_run_files(path: Path) -> None:
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        shutil.rmtree(path / name, ignore_errors=True)
    for shard in path.glob("best.rank*.pt"):  # Partial FC shards of best.pt
        shard.unlink(missing_ok=True)


#: the overrides a resumed run accepts: its length and how it logs, validates, saves and reports, not what it computes
RESUME_SAFE = ("train.steps", "train.log_every", "train.val_every", "train.checkpoint_every", "train.keep_checkpoints",
               "train.max_nonfinite_steps", "train.quiet", "train.plots", "train.threads", "train.device")


def _flat(config: Config) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in config_to_dict(config).items():
        for key, value in values.items():
            if key == "options" and isinstance(value, dict):
                flat |= {f"{section}.{name}": option for name, option in value.items()}
            else:
                flat[f"{section}.{key}"] = value
    return flat


def resume_config(run_dir: str | Path, overrides: list[str] | None) -> tuple[Config, list[str]]:
    """The config a resumed run uses: its saved ``config.yaml`` with the ``overrides`` (``--section.key VALUE``) that
    :data:`RESUME_SAFE` allows, and the changes as ``"key: old -> new"``. Any other changed key is a
    :class:`~facesphere.errors.ConfigError` naming it (the saved value is kept; a new run takes new settings)."""
    saved = read_run_config(run_dir)
    if not overrides:
        return saved, []
    return resume_changes(saved, load_config(Path(run_dir) / CONFIG_NAME, overrides), run_dir)


def resume_changes(saved: Config, wanted: Config, run_dir: str | Path) -> tuple[Config, list[str]]:
    """``wanted`` when it differs from the run's ``saved`` config only in :data:`RESUME_SAFE` keys (with the
    changes as ``"key: old -> new"``), else a :class:`~facesphere.errors.ConfigError` naming the other keys."""
    old, new = _flat(saved), _flat(wanted)
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    refused = [key for key in changed if key not in RESUME_SAFE]
    if refused:
        shown = ", ".join(f"{key} (saved {old.get(key)!r}, asked {new.get(key)!r})" for key in refused)
        raise ConfigError(f"--resume {run_dir}: {shown} cannot change when a run is resumed: the run would mix two "
                          f"trainings. A resumed run may change only {', '.join(RESUME_SAFE)}; start a new run "
                          "(another --out) for other settings")
    return wanted, [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in changed]


def _is_record(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def repair_metrics_log(path: Path) -> int:
    """Drop the lines of a run's ``metrics.jsonl`` that are not JSON records (a line cut short by a kill); returns
    how many were dropped (with a warning naming the file). A missing or unreadable file is left to the trainer."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return 0
    lines = [line for line in text.splitlines() if line.strip()]
    kept = [line for line in lines if _is_record(line)]
    dropped = len(lines) - len(kept)
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept), what="metrics log")
        warnings.warn(f"{path}: dropped {dropped} unreadable line(s) (written when the run was killed?); resuming "
                      "with the rest", FaceSphereWarning, stacklevel=2)
    return dropped


__all__ = ["RunDirectory", "RUN_FILES", "RUN_FOLDERS", "METRICS_LOG", "RESUME_SAFE", "repair_metrics_log",
           "resume_config"]
