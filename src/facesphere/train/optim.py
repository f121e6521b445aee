"""Optimiser parameter groups and learning-rate schedules (stateless functions of the step: resume-safe)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..run.config import OptimConfig


def _no_decay(name: str, param: torch.Tensor) -> bool:
    """BatchNorm / PReLU weights and every bias or scalar: no weight decay. Class centres (2-D) keep it."""
    return param.ndim <= 1


def param_groups(backbone: nn.Module, head: nn.Module, config: OptimConfig) -> list[dict]:
    """Backbone with / without decay, head with / without decay; the head may have its own learning rate.

    With ``config.decay_all`` every parameter is in a decaying group (BatchNorm, PReLU and biases included)."""
    head_lr = config.head_lr if config.head_lr is not None else config.lr
    groups = []
    for module, lr, tag in ((backbone, config.lr, "backbone"), (head, head_lr, "head")):
        decay, no_decay = [], []
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if not config.decay_all and _no_decay(name, param) else decay).append(param)
        if decay:
            groups.append({"params": decay, "weight_decay": config.weight_decay, "lr": lr, "base_lr": lr, "tag": tag})
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, "lr": lr, "base_lr": lr, "tag": f"{tag}_no_decay"})
    return groups


def build_optimizer(backbone: nn.Module, head: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(backbone, head, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))


def lr_factor(step: int, total_steps: int, config: OptimConfig) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based), warm-up included."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(total_steps - config.warmup_steps, 1)
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    floor = config.min_lr / config.lr if config.lr > 0 else 0.0
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":
        milestones = [m * total_steps if m <= 1 else m for m in config.milestones]
        return config.gamma ** sum(1 for m in milestones if step >= m)
    if config.schedule == "poly":
        return floor + (1.0 - floor) * (1.0 - progress) ** config.power
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, total_steps: int, config: OptimConfig) -> float:
    factor = lr_factor(step, total_steps, config)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]
