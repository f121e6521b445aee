"""Shared fixtures for the inference tests: a tiny trained run directory and the shared real data / models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


def _spread(folder: Path, count: int, what: str) -> list[np.ndarray]:
    """``count`` images spread evenly over ``folder/*/*.jpg`` (sorted), as uint8 RGB; skips when absent."""
    from facesphere.data.image import read_image

    paths = sorted(folder.glob("*/*.jpg"))
    if not paths:
        pytest.skip(f"{what} not present ({folder})")
    step = max(1, len(paths) // count)
    return [read_image(p) for p in paths[::step][:count]]


def glint_crops(count: int) -> list[np.ndarray]:
    """Aligned 112x112 Glint faces from the shared sample (skips the test when absent)."""
    return _spread(DATA / "glint_sample" / "images", count, "glint_sample")


def lfw_photos(count: int) -> list[np.ndarray]:
    """Unaligned 250x250 LFW photos from the shared copy (skips the test when absent)."""
    return _spread(DATA / "lfw" / "images", count, "LFW")


def pad_image(image: np.ndarray, margin: int) -> np.ndarray:
    """``image`` on a black canvas with ``margin`` pixels on every side."""
    out = np.zeros((image.shape[0] + 2 * margin, image.shape[1] + 2 * margin, 3), np.uint8)
    out[margin:margin + image.shape[0], margin:margin + image.shape[1]] = image
    return out


def need(*paths: Path, modules: tuple[str, ...] = ("onnxruntime",)) -> None:
    """Skip the calling test unless every module imports and every shared file exists."""
    for module in modules:
        pytest.importorskip(module)
    for path in paths:
        if not path.exists():
            pytest.skip(f"{path} not present")
