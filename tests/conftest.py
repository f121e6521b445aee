"""Fixtures shared by every test package: the tiny training config and a tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest

from facesphere.run.config import load_config
from facesphere.train.loop import train

from .helpers import TINY


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip cleanly on a machine without a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked cuda; benchmarks/gpu.py runs them on a GPU)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A facesphere run directory trained for 4 steps on tiny synthetic data (sfnet4, 32-d, 12 classes)."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    config = load_config(None, TINY + ["--train.steps", "4", "--train.val_every", "4", "--train.quiet", "true"])
    train(config, out=out, progress=False)
    return out
