"""Turning any image into the model's input crop: an aligned crop as given, a photo detected and aligned, and what
happens when no face is found (the no-face policy, chosen here for every command: eval, embed, verify, gallery,
detect and :class:`~facesphere.infer.recognizer.FaceRecognizer`).

No-face policies (:data:`NO_FACE_POLICIES`), applied to an image that is not an aligned crop of the model's input
size and in which no face was found (the detector found none, or there is no detector):

* ``crop`` — the central square of half the image's shorter side, resized (:func:`central_crop`): right for a
  loosely framed portrait, a nose patch on a tightly cropped face;
* ``resize`` — the whole image resized to the model's input (aspect ratio not kept): the way in for faces that are
  already cropped (tightly framed, not aligned), with or without a detector;
* ``skip`` — leave the image out (listed as "no face" by the command);
* ``fail`` — stop with a :class:`~facesphere.errors.NoFaceError` naming the image.

Defaults: without a detector ``fail`` (an image that is not an aligned crop is refused with a message saying what to
do); with one, ``crop`` for evaluation (every image of a pair set must be scored) and ``skip`` for embedding and
galleries (:data:`DEFAULT_NO_FACE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..data.align import align_face
from ..errors import DataError, InvalidOptionError, NoFaceError
from .detectors import CHOOSE_RULES, Detection, detect_and_align

__all__ = ["CropPreparer", "Prepared", "central_crop", "resize_whole", "NO_FACE_POLICIES", "DEFAULT_NO_FACE",
           "resolve_no_face"]

NO_FACE_POLICIES = ("crop", "resize", "skip", "fail")
#: the policy used with a detector when the user chooses none, per purpose
DEFAULT_NO_FACE = {"eval": "crop", "embed": "skip"}
NO_FACE_HELP = ("what to do with an image in which no face is found (or any image that is not an aligned crop, "
                "when there is no detector): crop (central square), resize (the whole image: for faces that are "
                "already cropped), skip, fail")


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


def resize_whole(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole image resized to ``size`` (H, W), bilinear, aspect ratio not kept (an already cropped face)."""
    return _resize(np.ascontiguousarray(image), size)


def resolve_no_face(no_face: str | None, detector: Any, purpose: str = "embed") -> str:
    """The no-face policy in force: the user's, else ``fail`` without a detector and :data:`DEFAULT_NO_FACE`
    ``[purpose]`` with one."""
    if no_face is None:
        return DEFAULT_NO_FACE[purpose] if detector is not None else "fail"
    if no_face not in NO_FACE_POLICIES:
        raise InvalidOptionError(f"unknown no-face policy {no_face!r}; valid: {', '.join(NO_FACE_POLICIES)}")
    return no_face


@dataclass
class Prepared:
    """One model input crop and how it was made: ``how`` is ``aligned`` (given as an aligned crop), ``detected``
    (``detection`` holds the face), ``crop`` or ``resize`` (the no-face policy)."""

    crop: np.ndarray
    how: str
    detection: Detection | None = None


class CropPreparer:
    """``(image uint8 (H, W, 3), source) -> aligned crop (input_size)``.

    An image already of ``input_size`` is taken as an aligned crop. Any other image is detected and aligned with
    ``detector`` (``facesphere.infer.detectors.detect_and_align``; the face picked by ``choose``, faces scored under
    ``min_score`` ignored). When no face is found (or there is no detector), ``no_face`` decides (see the module
    docstring; ``None``: :func:`resolve_no_face` for ``purpose``); calling the preparer returns ``None`` for a
    skipped image. Counts: ``aligned_as_given``, ``detected``, ``no_face`` (the images in which no face was found,
    whatever the policy did with them).
    """

    def __init__(self, input_size: Sequence[int], detector: Any = None, *, no_face: str | None = None,
                 choose: str = "largest", min_score: float | None = None, purpose: str = "eval") -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.detector = detector
        self.template = self.input_size
        if choose not in CHOOSE_RULES:
            raise InvalidOptionError(f"unknown face choice {choose!r}; valid: {', '.join(CHOOSE_RULES)}")
        self.choose = choose
        self.min_score = min_score
        self.no_face_policy = resolve_no_face(no_face, detector, purpose)
        self.aligned_as_given = 0
        self.detected = 0
        self.no_face = 0

    def _aligned(self, aligned: np.ndarray) -> np.ndarray:
        if tuple(aligned.shape[:2]) != self.input_size:
            aligned = _resize(np.ascontiguousarray(aligned), self.input_size)
        return aligned

    def _fallback(self, image: np.ndarray, source: str) -> Prepared | None:
        """The no-face policy applied to ``image``."""
        policy = self.no_face_policy
        if self.detector is None and policy == "fail":
            raise DataError(
                f"{source}: image is {image.shape[0]}x{image.shape[1]}, the model takes aligned "
                f"{self.input_size[0]}x{self.input_size[1]} crops: align the data first (facesphere data align), "
                "pass a face detector (--detector WEIGHTS), or, for faces that are already cropped, --no-face resize"
            )
        self.no_face += 1
        if policy == "fail":
            raise NoFaceError(f"{source}: no face found (--no-face crop / resize / skip decides what to do instead)")
        if policy == "skip":
            return None
        if policy == "crop":
            return Prepared(central_crop(image, self.input_size), "crop")
        return Prepared(resize_whole(image, self.input_size), "resize")

    def prepare(self, image: np.ndarray, source: str) -> Prepared | None:
        """The crop of ``image``'s chosen face, or the no-face policy's (``None``: skipped)."""
        if tuple(image.shape[:2]) == self.input_size:
            self.aligned_as_given += 1
            return Prepared(image, "aligned")
        if self.detector is None:
            return self._fallback(image, source)
        aligned, face = detect_and_align(image, self.detector, template=self.template, choose=self.choose,
                                         min_score=self.min_score)
        if aligned is None:
            return self._fallback(image, source)
        self.detected += 1
        return Prepared(self._aligned(aligned), "detected", face)

    def prepare_all(self, image: np.ndarray, source: str) -> list[Prepared]:
        """Every face of ``image`` (best detector score first), each aligned; an aligned crop is one face; no face
        found: the no-face policy's one crop (or none for ``skip``)."""
        if tuple(image.shape[:2]) == self.input_size:
            self.aligned_as_given += 1
            return [Prepared(image, "aligned")]
        if self.detector is None:
            fallback = self._fallback(image, source)
            return [] if fallback is None else [fallback]
        faces = [d for d in self.detector.detect(image) if self.min_score is None or d.score >= self.min_score]
        if not faces:
            fallback = self._fallback(image, source)
            return [] if fallback is None else [fallback]
        self.detected += 1
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        return [Prepared(self._aligned(align_face(rgb, face.landmarks, self.template)), "detected", face)
                for face in faces]

    def __call__(self, image: np.ndarray, source: str) -> np.ndarray | None:
        prepared = self.prepare(image, source)
        return None if prepared is None else prepared.crop

    def summary(self) -> dict[str, int]:
        """Counts of images used as given, detected and aligned, and with no face found (see ``no_face_policy``
        for what was done with them)."""
        return {"aligned_as_given": self.aligned_as_given, "detected": self.detected, "no_face": self.no_face}

