"""``FaceRecognizer``: photos in, identities out (detect -> align -> embed -> verify / search).

    import facesphere as fs
    rec = fs.FaceRecognizer.from_path("runs/my_run", detector="scrfd_2.5g_bnkps.onnx")
    rec.verify("a.jpg", "b.jpg")            # VerifyResult(score=0.71, same=True, threshold=0.29)
    rec.search("query.jpg", gallery)         # gallery: a facesphere Gallery or (embeddings, identities)

Images are file paths, PIL images or uint8 arrays (H, W, 3) RGB / (H, W) grey, of any size. With a detector, each
image's largest face is detected and aligned by its 5 landmarks (docs/methods.md §9) to the recogniser's template; without
one, images must already be aligned crops of the recogniser's input size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.image import as_rgb_uint8, read_image
from ..errors import DataError, InvalidOptionError, NoFaceError
from .detectors import build_detector, detect_and_align
from .embedders import Embedder, load_embedder

ImageLike = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray


@dataclass(frozen=True)
class VerifyResult:
    """Cosine ``score`` of two faces, the ``threshold`` used and the decision ``same = score >= threshold``."""

    score: float
    same: bool
    threshold: float


@dataclass(frozen=True)
class SearchMatch:
    """One gallery hit: ``identity``, cosine ``score``, gallery ``index`` (row) and ``path`` when known."""

    identity: str
    score: float
    index: int
    path: str | None = None


def _describe(image: ImageLike, position: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return f"image #{position}"


def to_rgb_array(image: ImageLike, position: int = 0) -> np.ndarray:
    """Any supported image -> uint8 ``(H, W, 3)`` RGB (grey replicated); errors name the image."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    return as_rgb_uint8(image, _describe(image, position))


@dataclass
class EmbeddedFiles:
    """What :meth:`FaceRecognizer.embed_files` returns: ``features`` float32 ``(N, D)`` L2-normalised, one row per
    file in ``paths`` (input order); the files in which no face was found (``no_face``) and those that could not be
    read (``unreadable``: ``(path, message)``) are left out."""

    features: np.ndarray
    paths: list[Path]
    no_face: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


class FaceRecognizer:
    """A recogniser (:class:`~facesphere.infer.embedders.Embedder`) with an optional face detector.

    ``threshold``: the cosine at or above which two faces are declared the same person. Choose it on your own
    validation pairs (``facesphere eval`` prints the best 10-fold threshold of each set); the default 0.3 is a
    conservative value for 112x112 ArcFace-family models, stated here rather than hidden.
    ``flip``: test-time flip fusion (``sum`` / ``concat`` / ``none``, docs/methods.md §8.1).
    """

    def __init__(self, embedder: Embedder, detector: Any = None, *, threshold: float = 0.3, flip: str = "sum",
                 choose: str = "largest", batch_size: int = 32) -> None:
        self.embedder = embedder
        self.detector = detector
        self.threshold = float(threshold)
        self.flip = flip
        self.choose = choose
        self.batch_size = batch_size
        self.template = tuple(embedder.input_size)

    @classmethod
    def from_path(cls, model: Any, detector: Any = None, *, threshold: float = 0.3, flip: str = "sum",
                  choose: str = "largest", detector_options: dict[str, Any] | None = None,
                  **model_options: Any) -> "FaceRecognizer":
        """Open the recogniser at ``model`` (see :func:`~facesphere.infer.embedders.load_embedder` for sources and
        ``model_options``: ``arch``, ``input_color``, ``input_mean``, ``input_std``, ``device``, ``fp16``) and,
        if given, the detector ``detector`` (an SCRFD or YuNet ONNX file, an MTCNN folder, or a detector object)."""
        embedder = load_embedder(model, **model_options)
        if detector is not None and isinstance(detector, (str, os.PathLike)):
            detector = build_detector(detector, **(detector_options or {}))
        return cls(embedder, detector, threshold=threshold, flip=flip, choose=choose)

    # ------------------------------------------------------------------------------------------------------------
    def align(self, image: ImageLike, position: int = 0) -> np.ndarray | None:
        """The aligned crop (uint8 RGB, the recogniser's input size) of ``image``'s chosen face; ``None`` if the
        detector finds no face. Without a detector the image must already be an aligned crop."""
        array = to_rgb_array(image, position)
        if self.detector is None:
            if tuple(array.shape[:2]) != self.embedder.input_size:
                raise DataError(
                    f"{_describe(image, position)}: {array.shape[0]}x{array.shape[1]} is not an aligned "
                    f"{self.embedder.input_size[0]}x{self.embedder.input_size[1]} crop; give the recogniser a "
                    "face detector (detector=... / --detector WEIGHTS) to detect and align faces"
                )
            return array
        aligned, _ = detect_and_align(array, self.detector, template=self.template, choose=self.choose)
        return aligned

    def embed(self, images: ImageLike | Sequence[ImageLike], *, on_missing: str = "error") -> np.ndarray:
        """L2-normalised embeddings float32 ``(N, D)`` of ``images`` (one image or a sequence).

        ``on_missing``: what to do with an image without a detected face: ``"error"`` (raise :class:`NoFaceError`
        naming it) or ``"nan"`` (its row is NaN).
        """
        if on_missing not in ("error", "nan"):
            raise InvalidOptionError(f"on_missing must be 'error' or 'nan', got {on_missing!r}")
        single = isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3))
        try:
                single = single or isinstance(images, Image.Image)
        except ImportError:  # pragma: no cover
            pass
        items = [images] if single else list(images)
        crops: list[np.ndarray] = []
        found: list[int] = []
        for position, image in enumerate(items):
            crop = self.align(image, position)
            if crop is None:
                if on_missing == "error":
                    raise NoFaceError(f"{_describe(image, position)}: no face found")
                continue
            crops.append(crop)
            found.append(position)
        dim = None
        out_rows = []
        if crops:
            out_rows = self.embedder.embed(crops, flip=self.flip, batch_size=self.batch_size)
            dim = out_rows.shape[1]
        result = np.full((len(items), dim or 1), np.nan, dtype=np.float32)
        if crops:
            result[found] = out_rows
        return result

    def embed_files(self, paths: Sequence[str | os.PathLike[str]], *, progress: bool = False,
                    skip_unreadable: bool = True) -> EmbeddedFiles:
        """Embed many image files, ``batch_size`` crops per forward pass (see :class:`EmbeddedFiles`).

        A file without a face is listed in ``no_face``; a file that cannot be decoded is listed in ``unreadable``
        (``skip_unreadable=False``: its :class:`~facesphere.errors.DataError` is raised instead). ``progress``: a
        tqdm bar over the files.
        """
        files = [Path(p) for p in paths]
        kept: list[Path] = []
        rows: list[np.ndarray] = []
        no_face: list[Path] = []
        unreadable: list[tuple[Path, str]] = []
        crops: list[np.ndarray] = []
        owners: list[Path] = []

        def flush() -> None:
            if crops:
                rows.append(self.embedder.embed(crops, flip=self.flip, batch_size=self.batch_size))
                kept.extend(owners)
                crops.clear()
                owners.clear()

        for path in tqdm(files, desc="embed", unit="img", disable=not progress or len(files) < 2):
            try:
                crop = self.align(path)
            except DataError as error:
                if not skip_unreadable:
                    raise
                unreadable.append((path, str(error)))
                continue
            if crop is None:
                no_face.append(path)
                continue
            crops.append(crop)
            owners.append(path)
            if len(crops) >= self.batch_size:
                flush()
        flush()
        dim = rows[0].shape[1] if rows else 0
        features = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
        return EmbeddedFiles(features, kept, no_face, unreadable)

    def verify(self, a: ImageLike, b: ImageLike, *, threshold: float | None = None) -> VerifyResult:
        """Cosine similarity of the faces in ``a`` and ``b`` and the decision at ``threshold`` (default: the
        recogniser's)."""
        features = self.embed([a, b])
        score = float(np.dot(features[0], features[1]))
        tau = self.threshold if threshold is None else float(threshold)
        return VerifyResult(score=score, same=score >= tau, threshold=tau)

    def search(self, query: ImageLike, gallery: Any, k: int = 5) -> list[SearchMatch]:
        """The ``k`` best gallery identities for the face in ``query``, best first.

        ``gallery``: a :class:`facesphere.infer.gallery.Gallery`, or a pair ``(embeddings (M, D), identities)``
        searched exactly (best entry per identity).
        """
        feature = self.embed(query)
        if hasattr(gallery, "search"):
            return [SearchMatch(m.identity, float(m.score), int(m.id), m.path)
                    for m in gallery.search(feature, k=k)[0]]
        embeddings, identities = gallery
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != feature.shape[1]:
            raise DataError(f"gallery embeddings must be (M, {feature.shape[1]}), got {embeddings.shape}")
        if len(identities) != len(embeddings):
            raise DataError(f"{len(identities)} identities for {len(embeddings)} gallery embeddings")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        scores = (embeddings / np.maximum(norms, 1e-12)) @ feature[0]
        best: dict[str, SearchMatch] = {}
        for index in np.argsort(-scores, kind="stable"):
            identity = str(identities[index])
            if identity not in best:
                best[identity] = SearchMatch(identity, float(scores[index]), int(index))
                if len(best) == k:
                    break
        return list(best.values())

    def __repr__(self) -> str:
        return f"FaceRecognizer({self.embedder!r}, detector={self.detector!r}, threshold={self.threshold:g})"


__all__ = ["FaceRecognizer", "EmbeddedFiles", "VerifyResult", "SearchMatch", "NoFaceError", "to_rgb_array"]
