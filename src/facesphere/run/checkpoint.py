"""Atomic checkpoint files: written to a temporary file in the same directory, flushed, then renamed.

A run killed at any moment leaves either the previous checkpoint or the new one, never a truncated file. Loading
uses ``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain containers, nothing executable.
A model whose parameters or buffers hold NaN / inf (e.g. BatchNorm running variances overflowed by a learning rate
far too high, while the loss itself stayed finite) is never written: :func:`save_checkpoint` refuses it with a
:class:`~facesphere.errors.TrainingError` naming the tensors and the likely cause, so such a run stops non-zero with
its last good checkpoint kept.

After a kill: :func:`latest_checkpoint` skips a newest checkpoint that is not a complete file (truncated by a crash
or a copy, with a warning naming it) and returns the previous good one; :func:`prune_checkpoints` deletes the
temporary files a killed writer left (``.step_N.pt.XXXX.tmp``, ``.best.pt.XXXX.tmp``).
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, FaceSphereWarning, TrainingError, describe_load_error
from ..files import TEMP_SUFFIX, atomic_write

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")


#: the parts of a checkpoint that are the model (checked for NaN / inf before writing)
MODEL_PARTS = ("backbone", "head")


def nonfinite_tensors(state: dict[str, Any], parts: tuple[str, ...] = MODEL_PARTS) -> list[str]:
    """``part.name`` of every floating-point tensor of the model parts of a checkpoint that holds NaN or inf."""
    found = []
    for part in parts:
        for name, value in (state.get(part) or {}).items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                found.append(f"{part}.{name}")
    return found


def _nonfinite_message(path: Path, state: dict[str, Any], broken: list[str]) -> str:
    shown = ", ".join(broken[:4]) + (f" and {len(broken) - 4} more" if len(broken) > 4 else "")
    lr = None
    try:
        lr = json.loads(state["config"])["optim"]["lr"]
    except (KeyError, TypeError, ValueError):
        pass
    running = any(name.endswith(("running_var", "running_mean")) for name in broken)
    rate = f"the learning rate (optim.lr={lr})" if lr is not None else "the learning rate"
    causes = [f"{rate} is far too high for this model / batch size"]
    if running:
        causes.append("BatchNorm running statistics overflowed (the loss can stay finite while they do)")
    return (f"{path}: not saved: the model's parameters or buffers hold NaN / inf ({shown}), so every embedding of "
            f"it would be meaningless; the run stops here and keeps its last good checkpoint. Likely cause: "
            + "; ".join(causes) + ".")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically; a model holding NaN / inf is refused (:class:`TrainingError`)."""
    broken = nonfinite_tensors(state)
    if broken:
        raise TrainingError(_nonfinite_message(Path(path), state, broken))
    atomic_write(Path(path), lambda handle: torch.save(state, handle), what="checkpoint")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a facesphere checkpoint with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"{path}: {describe_load_error(error, 'checkpoint')}") from None


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_N.pt`` in ``run_dir/checkpoints``, sorted by step."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = CHECKPOINT_PATTERN.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` is a whole checkpoint file (``torch.save``'s zip, read up to its central directory at the
    end: a file cut short by a crash, a full disk or a partial copy is not); cheap, it does not read the tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete ``step_N.pt`` of a run; newer ones that are incomplete are skipped with a warning."""
    found = list_checkpoints(run_dir)
    for index in range(len(found) - 1, -1, -1):
        path = found[index][1]
        if is_complete(path):
            return path
        older = next((p for _, p in reversed(found[:index]) if is_complete(p)), None)
        warnings.warn(f"{path}: not a complete checkpoint file (cut short by a crash or a copy?); "
                      + (f"using the previous one, {older.name}" if older else "no older checkpoint to fall back to"),
                      FaceSphereWarning, stacklevel=2)
        return older
    return None


def _stale_temp_files(run_dir: Path, newest: int | None) -> list[Path]:
    """Temporary files of checkpoints older than step ``newest`` (their writers finished or were killed) and of
    ``best.pt`` (written by this process before its step checkpoint)."""
    stale = list((run_dir).glob(f".best.pt.*{TEMP_SUFFIX}"))
    folder = run_dir / "checkpoints"
    if newest is not None and folder.is_dir():
        for entry in folder.glob(f".step_*{TEMP_SUFFIX}"):
            match = re.match(r"^\.step_(\d+)\.", entry.name)
            if match and int(match.group(1)) < newest:
                stale.append(entry)
    return stale


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints (``best.pt`` / ``last.pt`` are never touched), step files
    that are not complete (:func:`is_complete`: only damage from outside makes one, facesphere writes atomically) and
    the temporary files killed writers left behind."""
    found = list_checkpoints(run_dir)
    complete = [(step, path) for step, path in found if is_complete(path)]
    doomed = [path for step, path in found if (step, path) not in complete]
    if keep > 0:
        doomed += [path for _, path in complete[:-keep]]
    for path in doomed:
        for shard in [path, *path.parent.glob(f"{path.stem}.rank*.pt")]:  # the other ranks' files of that step
            try:
                shard.unlink()
            except OSError:
                pass
    for stray in _stale_temp_files(Path(run_dir), complete[-1][0] if complete else None):
        try:
            stray.unlink()
        except OSError:
            pass


#: Key prefixes a wrapper adds to its module's state dict: ``torch.compile``'s ``OptimizedModule`` (``_orig_mod.``)
#: and ``DistributedDataParallel`` / ``DataParallel`` (``module.``).
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def unwrap_model(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside any nesting of ``torch.compile`` (``OptimizedModule._orig_mod``) and DDP /
    DataParallel (``.module``) wrappers: the one whose state dict has the model's own keys."""
    while True:
        inner = getattr(module, "_orig_mod", None)
        if isinstance(inner, torch.nn.Module):
            module = inner
            continue
        if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            module = module.module
            continue
        return module


def strip_wrapper_prefixes(state: dict[str, Any], own_keys: Any = ()) -> dict[str, Any]:
    """``state`` without the wrapper prefixes (:data:`WRAPPER_PREFIXES`) that *every* key carries, repeatedly
    (``_orig_mod.module.`` of a compiled DDP model); a prefix the model's own keys (``own_keys``) use is kept.

    Checkpoints written with ``train.compile: true`` before this was fixed hold ``_orig_mod.``-prefixed backbone keys;
    this reads them."""
    own_keys = list(own_keys)
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(isinstance(k, str) and k.startswith(prefix) for k in state) and \
                    not any(k.startswith(prefix) for k in own_keys):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, what: str) -> None:
    """``load_state_dict(strict=True)`` with an error naming the file, the part and the mismatching keys.

    ``module`` may be wrapped (``torch.compile``, DDP): the weights go into the plain module inside. Keys that all
    carry a wrapper prefix (``_orig_mod.``, ``module.``) are read without it."""
    module = unwrap_model(module)
    own = module.state_dict()
    state = strip_wrapper_prefixes(state, own)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:3]}{' …' if len(shapes) > 3 else ''}")
        raise CheckpointError(
            f"{source}: the {what} in this checkpoint does not fit the configured model ({'; '.join(parts)}); "
            "is it a checkpoint of another model or config?"
        )
    module.load_state_dict(state, strict=True)


__all__ = ["CHECKPOINT_PATTERN", "MODEL_PARTS", "WRAPPER_PREFIXES", "unwrap_model", "strip_wrapper_prefixes",
           "nonfinite_tensors", "save_checkpoint", "load_checkpoint", "list_checkpoints", "is_complete",
           "latest_checkpoint",
           "prune_checkpoints", "load_state_dict_checked"]
