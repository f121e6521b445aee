"""Tiny training configs for fast CPU tests."""

from __future__ import annotations

import pytest

TINY = [
    "--data.synthetic_identities", "12", "--data.synthetic_images_per_identity", "8",
    "--data.synthetic_val_pairs_per_fold", "4", "--data.batch_size", "16", "--data.num_workers", "0",
    "--model.backbone", "sfnet4", "--model.embed_dim", "32", "--model.channels", "[8, 16, 16, 32]",
    "--optim.warmup_steps", "2", "--train.log_every", "2", "--train.threads", "1", "--train.plots", "false",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)
