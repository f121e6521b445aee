"""Atomic checkpoint files: written to a temporary file in the same directory, flushed, then renamed.

A run killed at any moment leaves either the previous checkpoint or the new one, never a truncated file. Loading
uses ``torch.load(weights_only=True)``: a checkpoint can hold tensors and plain containers, nothing executable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, describe_load_error
from ..files import atomic_write

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
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


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints (``best.pt`` / ``last.pt`` are never touched)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        for shard in [path, *path.parent.glob(f"{path.stem}.rank*.pt")]:  # the other ranks' files of that step
            try:
                shard.unlink()
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


__all__ = ["CHECKPOINT_PATTERN", "WRAPPER_PREFIXES", "unwrap_model", "strip_wrapper_prefixes", "save_checkpoint", "load_checkpoint", "list_checkpoints", "latest_checkpoint",
           "prune_checkpoints", "load_state_dict_checked"]
