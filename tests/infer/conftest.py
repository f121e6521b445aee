"""Shared fixtures for the inference tests: a tiny trained run directory and the shared real data / models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.train.conftest import TINY

SHARED = Path(os.environ.get("FACESPHERE_SHARED", Path(__file__).resolve().parents[3] / "shared"))
MODELS = SHARED / "models"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A facesphere run directory trained for 4 steps on tiny synthetic data (sfnet4, 32-d, 12 classes)."""
    from facesphere.train.config import load_config
    from facesphere.train.loop import train

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    config = load_config(None, TINY + ["--train.steps", "4", "--train.val_every", "4", "--train.quiet", "true"])
    train(config, out=out, progress=False)
    return out
