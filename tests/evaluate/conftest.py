"""Shared helpers for the evaluation tests: a colour-mean "recogniser" whose features are known by hand, and
writers for tiny image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesphere.infer.embedders import Embedder


class MeanColour(Embedder):
    """Feature of an image = its mean (R, G, B) pixel value (flip-invariant, so flip="sum" doubles it)."""

    def __init__(self, size: tuple[int, int] = (112, 112)) -> None:
        super().__init__(name="mean-colour", input_size=size, color="rgb", mean=0.0, std=1.0)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return batch.mean(axis=(2, 3), dtype=np.float64).astype(np.float32)


def write_image(path: Path, colour, size=(112, 112), outside=None, box=None) -> Path:
    """A PNG (lossless, whatever ``path``'s extension) of one colour; with ``box=(x0, y0, x1, y1)`` only the box
    has ``colour`` and the rest ``outside``."""
    h, w = size
    image = np.empty((h, w, 3), dtype=np.uint8)
    if box is None:
        image[:] = colour
    else:
        image[:] = outside
        x0, y0, x1, y1 = box
        image[y0:y1, x0:x1] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")  # lossless whatever the name says
    return path


@pytest.fixture
def mean_colour() -> MeanColour:
    return MeanColour()
