"""Turning any image into the model's input crop: an aligned crop as given, a photo detected and aligned, and the
fallback when no face is found."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import DataError
from .detectors import detect_and_align

__all__ = ["CropPreparer", "central_crop"]


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def central_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fallback crop when no face is detected: the central region of half the image's shorter side (with the
    model's aspect ratio), resized to ``size`` (bilinear)."""
    h, w = image.shape[:2]
    ch = max(1, min(h, int(round(0.5 * min(h, w) * max(1.0, size[0] / size[1])))))
    cw = max(1, min(w, int(round(ch * size[1] / size[0]))))
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(np.ascontiguousarray(image[top:top + ch, left:left + cw]), size)


class CropPreparer:
    """``(image uint8 (H, W, 3), source) -> aligned crop (input_size)``.

    An image already of ``input_size`` is taken as an aligned crop. Any other image is detected and aligned with
    ``detector`` (``facesphere.infer.detectors.detect_and_align``, largest face); without a detector it is a
    :class:`DataError`. When the detector finds no face the central crop is used (:func:`central_crop`) and counted
    in ``no_face``.
    """

    def __init__(self, input_size: Sequence[int], detector: Any = None) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.detector = detector
        self.template = self.input_size
        self.aligned_as_given = 0
        self.detected = 0
        self.no_face = 0

    def __call__(self, image: np.ndarray, source: str) -> np.ndarray:
        if tuple(image.shape[:2]) == self.input_size:
            self.aligned_as_given += 1
            return image
        if self.detector is None:
            raise DataError(
                f"{source}: image is {image.shape[0]}x{image.shape[1]}, the model takes aligned "
                f"{self.input_size[0]}x{self.input_size[1]} crops: align the data first (facesphere data align) or "
                "pass a face detector (--detector WEIGHTS)"
            )
        aligned, _ = detect_and_align(image, self.detector, template=self.template)
        if aligned is None:
            self.no_face += 1
            return central_crop(image, self.input_size)
        self.detected += 1
        if tuple(aligned.shape[:2]) != self.input_size:
            aligned = _resize(np.ascontiguousarray(aligned), self.input_size)
        return aligned

    def summary(self) -> dict[str, int]:
        """Counts of images used as given, detected and aligned, and with no face found (central crop)."""
        return {"aligned_as_given": self.aligned_as_given, "detected": self.detected, "no_face": self.no_face}
