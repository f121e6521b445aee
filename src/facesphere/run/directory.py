"""The run directory: its layout, and the one way to load a run back (config, backbone, head, checkpoint).

Layout (written by :func:`facesphere.train.train`)::

    RUN/config.yaml            the resolved config (every default spelled out)
    RUN/checkpoints/step_N.pt  atomic checkpoints (model, head, optimiser, scaler, counters, RNG states)
    RUN/best.pt                the checkpoint with the best mean validation accuracy so far
    RUN/metrics.jsonl          one JSON line per logged step and per validation
    RUN/metrics.json           the summary
    RUN/curves.png             loss / learning-rate / accuracy curves

Training, evaluation, inference, cleaning and inversion all load runs through :func:`load_run`; every checkpoint
embeds its config, so a checkpoint file copied out of its run still loads.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..backbones import build_backbone
from ..errors import CheckpointError, ConfigError
from ..heads import build_head, head_options
from .checkpoint import latest_checkpoint, load_checkpoint, load_state_dict_checked
from .config import Config, config_from_dict

CONFIG_NAME = "config.yaml"
BEST_NAME = "best.pt"
CHECKPOINT_FORMAT = "facesphere-checkpoint-1"
#: prefix of the MarginHead shard's keys in a Partial FC head's state dict
PARTIAL_FC_PREFIX = "head."


def default_run_dir(config: Config, root: str | os.PathLike[str] = "runs") -> Path:
    """A new ``runs/<date>-<time>-<head>-<backbone>`` folder name that does not exist yet."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{config.head.name}-{config.model.backbone}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def read_run_config(run_dir: str | os.PathLike[str]) -> Config:
    """The validated config of a run directory (its ``config.yaml``); errors name the file."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a facesphere run directory (no {CONFIG_NAME})")
    try:
        mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the run's config ({error})") from None
    return config_from_dict(mapping or {}, str(path))


def config_of(source: str | os.PathLike[str]) -> Config | None:
    """The config of a run directory or of a checkpoint inside one (its run's ``config.yaml``), else None."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder.parent):  # RUN/best.pt or RUN/checkpoints/step_N.pt
        if (candidate / CONFIG_NAME).is_file():
            return read_run_config(candidate)
    return None


def checkpoint_path(source: str | os.PathLike[str]) -> Path:
    """The checkpoint a run directory stands for (``best.pt``, else the latest ``step_N.pt``), or ``source`` itself."""
    source = Path(source)
    if not source.is_dir():
        return source
    best = source / BEST_NAME
    if best.is_file():
        return best
    latest = latest_checkpoint(source)
    if latest is None:
        raise CheckpointError(f"{source}: no checkpoint in this directory (expected {BEST_NAME} or checkpoints/step_*.pt)")
    return latest


def build_model_backbone(config: Config) -> nn.Module:
    """The backbone a config describes (untrained)."""
    return build_backbone(config.model.backbone, embed_dim=config.model.embed_dim, **config.model.options)


def build_model_head(config: Config, num_classes: int) -> nn.Module:
    """The (single-process) head a config describes, for ``num_classes`` classes (untrained)."""
    return build_head(config.head.name, embed_dim=config.model.embed_dim, num_classes=num_classes,
                      **config.head.options)


def embedded_config(checkpoint: dict[str, Any], path: Path) -> Config:
    """The config a facesphere checkpoint carries."""
    if not isinstance(checkpoint, dict) or "backbone" not in checkpoint or "config" not in checkpoint:
        raise CheckpointError(
            f"{path}: not a facesphere checkpoint (no backbone / config); for an arcface_torch backbone.pth pass "
            "--arch (e.g. --arch iresnet50)"
        )
    try:
        return config_from_dict(json.loads(checkpoint["config"]), f"{path} (embedded config)")
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: the embedded config cannot be read ({error})") from None


def head_state(checkpoint: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The MarginHead state of a checkpoint (a Partial FC checkpoint's shard unwrapped)."""
    state = dict(checkpoint.get("head") or {})
    if any(key.startswith(PARTIAL_FC_PREFIX) for key in state):
        state = {key[len(PARTIAL_FC_PREFIX):]: value for key, value in state.items()
                 if key.startswith(PARTIAL_FC_PREFIX)}
    if "weight" not in state:
        raise CheckpointError(f"{path}: the checkpoint holds no head (class-centre weights)")
    return state


def load_run(source: str | os.PathLike[str], *, with_head: bool = True,
             device: str | torch.device = "cpu") -> tuple[Config, nn.Module, nn.Module | None, dict[str, Any]]:
    """A facesphere run directory or checkpoint -> ``(config, backbone, head, checkpoint)``.

    The backbone (eval mode, on ``device``) gets the checkpoint's weights, strictly. The head is rebuilt from the
    config with the class count read from its weight rows (``rows / K`` with the configured sub-centre count, the
    registry default when the config does not spell it out); a Partial FC checkpoint yields this rank's shard as a
    plain head. ``with_head=False`` skips it (``None``). Errors name the file.
    """
    path = checkpoint_path(source)
    checkpoint = load_checkpoint(path)
    config = embedded_config(checkpoint, path)
    backbone = build_model_backbone(config)
    load_state_dict_checked(backbone, checkpoint["backbone"], str(path), "backbone")
    backbone.eval().to(torch.device(device))
    head = None
    if with_head:
        state = head_state(checkpoint, path)
        options = {**head_options(config.head.name), **config.head.options}
        subcenters = int(options.get("subcenters", 1) or 1)
        rows = int(state["weight"].shape[0])
        if rows % subcenters:
            raise CheckpointError(f"{path}: the head has {rows} weight rows, not a multiple of K = {subcenters}")
        head = build_model_head(config, rows // subcenters)
        load_state_dict_checked(head, state, str(path), "head")
        head.eval().to(torch.device(device))
    return config, backbone, head, checkpoint


__all__ = ["CONFIG_NAME", "BEST_NAME", "CHECKPOINT_FORMAT", "default_run_dir", "read_run_config", "config_of",
           "checkpoint_path", "build_model_backbone", "build_model_head", "embedded_config", "head_state", "load_run"]
