"""``FaceRecognizer``: photos in, identities out (detect -> align -> embed -> verify / search).

    import facesphere as fs
    rec = fs.FaceRecognizer.from_path("runs/my_run", detector="scrfd_2.5g_bnkps.onnx")
    rec.verify("a.jpg", "b.jpg")            # VerifyResult(score=0.71, same=True, threshold=0.29, ...)
    rec.search("query.jpg", gallery)         # gallery: a facesphere Gallery or (embeddings, identities)
    rec.faces("group.jpg")                   # every face: box, score, landmarks, aligned crop, embedding
    rec.embed_files(paths, all_faces=True)   # a folder, batched, decoding and detection ahead of the model

Images are file paths, PIL images or uint8 arrays (H, W, 3) RGB / (H, W) grey, of any size. With a detector, each
image's face (the largest by default: ``choose``) is detected and aligned by its 5 landmarks (docs/methods.md §9) to
the recogniser's template; without one, images must already be aligned crops of the recogniser's input size (or, with
``no_face="resize"``, face crops resized whole). What happens to an image without a face is the no-face policy of
:mod:`facesphere.infer.crops`. The decision threshold is the one the model carries (:mod:`.thresholds`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from ..data.align import align_face
from ..data.image import as_rgb_uint8, read_image
from ..errors import DataError, InvalidOptionError, NoFaceError
from .crops import CropPreparer, Prepared
from .detectors import build_detector
from .embedders import Embedder, load_embedder
from .faces import Face, FileFaces
from .pipeline import DEFAULT_WORKERS, iter_file_faces
from .thresholds import ModelThreshold, choose_threshold, model_threshold

ImageLike = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray


@dataclass(frozen=True)
class VerifyResult:
    """Cosine ``score`` of two faces, the ``threshold`` used and the decision ``same = score >= threshold``;
    ``info`` says where the threshold comes from and at what FAR (:class:`~.thresholds.ModelThreshold`)."""

    score: float
    same: bool
    threshold: float
    info: ModelThreshold | None = field(default=None, compare=False)


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
    face, ``paths[i]`` the file of row ``i`` (input order; a file appears once per face with ``all_faces``) and
    ``faces[i]`` its :class:`~.faces.Face` (box, score, landmarks, how; no crop or embedding kept); the files in
    which no face was found and the no-face policy skipped (``no_face``) and those that could not be read
    (``unreadable``: ``(path, message)``) have no row."""

    features: np.ndarray
    paths: list[Path]
    no_face: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)

    @property
    def files_added(self) -> int:
        """How many distinct files gave at least one row."""
        return len(dict.fromkeys(self.paths))


class FaceRecognizer:
    """A recogniser (:class:`~facesphere.infer.embedders.Embedder`) with an optional face detector.

    ``threshold``: the cosine at or above which two faces are declared the same person: a number, a
    :class:`~.thresholds.ModelThreshold`, or None for the one the model carries (:func:`~.thresholds.model_threshold`:
    a run's validation threshold, an export's metadata, a known public model's LFW measurement; else an uncalibrated
    0.3, said so in ``threshold_info``).
    ``flip``: test-time flip fusion (``sum`` / ``concat`` / ``none``, docs/methods.md §8.1).
    ``choose`` / ``min_score``: which face of a photo with several, and the lowest detector score considered.
    ``no_face``: the no-face policy (``crop``, ``resize``, ``skip``, ``fail``; :mod:`facesphere.infer.crops`; default
    ``skip`` with a detector, ``fail`` without). ``workers``: threads decoding and detecting ahead of the model in
    :meth:`embed_files` / :meth:`iter_files`.
    """

    def __init__(self, embedder: Embedder, detector: Any = None, *, threshold: Any = None, flip: str = "sum",
                 choose: str = "largest", batch_size: int = 32, no_face: str | None = None,
                 min_score: float | None = None, workers: int = DEFAULT_WORKERS) -> None:
        self.embedder = embedder
        self.detector = detector
        self.flip = flip
        self.choose = choose
        self.min_score = min_score
        self.no_face = no_face
        self.batch_size = batch_size
        self.workers = workers
        self.template = tuple(embedder.input_size)
        self.preparer()  # checks choose and no_face now
        if isinstance(threshold, ModelThreshold):
            self.threshold_info = threshold
        elif threshold is None:
            self.threshold_info = model_threshold(embedder)
        else:
            self.threshold_info = choose_threshold(model_threshold(embedder), threshold=threshold)

    @property
    def threshold(self) -> float:
        return float(self.threshold_info.value)

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.threshold_info = choose_threshold(self.threshold_info, threshold=value)

    @classmethod
    def from_path(cls, model: Any, detector: Any = None, *, threshold: float | None = None, far: float | None = None,
                  flip: str = "sum", choose: str = "largest", detector_options: dict[str, Any] | None = None,
                  no_face: str | None = None, min_score: float | None = None,
                  **model_options: Any) -> "FaceRecognizer":
        """Open the recogniser at ``model`` (see :func:`~facesphere.infer.embedders.load_embedder` for sources and
        ``model_options``: ``arch``, ``input_color``, ``input_mean``, ``input_std``, ``device``, ``fp16``) and,
        if given, the detector ``detector`` (an SCRFD or YuNet ONNX file, an MTCNN folder, or a detector object,
        built with ``detector_options``: ``score_threshold``, ``max_side``, ...). The threshold: ``threshold``, else
        the model's at ``far`` (a FAR the model records), else the model's own (see the class docstring)."""
        embedder = load_embedder(model, **model_options)
        if detector is not None and isinstance(detector, (str, os.PathLike)):
            detector = build_detector(detector, **(detector_options or {}))
        info = choose_threshold(model_threshold(model), threshold=threshold, far=far)
        return cls(embedder, detector, threshold=info, flip=flip, choose=choose, no_face=no_face,
                   min_score=min_score)

    # ------------------------------------------------------------------------------------------------------------
    def preparer(self, purpose: str = "embed") -> CropPreparer:
        """A :class:`~.crops.CropPreparer` with this recogniser's detector, face choice and no-face policy."""
        return CropPreparer(self.embedder.input_size, self.detector, no_face=self.no_face, choose=self.choose,
                            min_score=self.min_score, purpose=purpose)

    def align(self, image: ImageLike, position: int = 0) -> np.ndarray | None:
        """The aligned crop (uint8 RGB, the recogniser's input size) of ``image``'s chosen face; ``None`` when no
        face is found and the no-face policy skips it. Without a detector the image must already be an aligned crop
        (or ``no_face`` says what to do with it)."""
        array = to_rgb_array(image, position)
        return self.preparer()(array, _describe(image, position))

    def embed(self, images: ImageLike | Sequence[ImageLike], *, on_missing: str = "error") -> np.ndarray:
        """L2-normalised embeddings float32 ``(N, D)`` of ``images`` (one image or a sequence).

        ``on_missing``: what to do with an image without a detected face: ``"error"`` (raise :class:`NoFaceError`
        naming it) or ``"nan"`` (its row is NaN).
        """
        if on_missing not in ("error", "nan"):
            raise InvalidOptionError(f"on_missing must be 'error' or 'nan', got {on_missing!r}")
        single = isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3))
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
            out_rows = self._embed_crops(crops)
            dim = out_rows.shape[1]
        result = np.full((len(items), dim or 1), np.nan, dtype=np.float32)
        if crops:
            result[found] = out_rows
        return result

    def _embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.embedder.embed(crops, flip=self.flip, batch_size=self.batch_size)

    # --- every face of a photo ----------------------------------------------------------------------------------
    def _require_detector(self, what: str) -> None:
        if self.detector is None:
            raise InvalidOptionError(f"{what} needs a face detector: FaceRecognizer.from_path(..., detector=WEIGHTS) "
                                     "or --detector WEIGHTS")

    def detect(self, image: ImageLike) -> list[Face]:
        """Every face the detector finds in ``image`` (best score first; faces under ``min_score`` left out), each
        with its box, score, 5 landmarks and aligned crop (no embedding)."""
        self._require_detector("detect")
        array = to_rgb_array(image)
        faces = [d for d in self.detector.detect(array) if self.min_score is None or d.score >= self.min_score]
        crops = [align_face(array, d.landmarks, self.template) for d in faces]
        return [Face(box=d.box, score=float(d.score), landmarks=d.landmarks, crop=c) for d, c in zip(faces, crops)]

    def faces(self, image: ImageLike, *, embed: bool = True) -> list[Face]:
        """:meth:`detect`, and with ``embed`` each face's L2-normalised embedding (one batch)."""
        found = self.detect(image)
        if embed and found:
            features = self._embed_crops([face.crop for face in found])
            for face, feature in zip(found, features):
                face.embedding = feature
        return found

    # --- folders ------------------------------------------------------------------------------------------------
    def iter_files(self, paths: Sequence[str | os.PathLike[str]], *, all_faces: bool = False,
                   progress: bool = False, skip_unreadable: bool = True, keep_crops: bool = False,
                   desc: str = "embed") -> Iterator[FileFaces]:
        """One :class:`~.faces.FileFaces` per file, in input order, as soon as its batch is embedded: the chosen face
        (``all_faces``: every face) with its embedding, or the file's status (``no_face``, ``unreadable``). Decoding
        and detection run in ``workers`` threads ahead of the model (:mod:`.pipeline`)."""
        preparer = self.preparer()

        def prepare(path: Path) -> list[Prepared]:
            image = read_image(path)
            if all_faces:
                return preparer.prepare_all(image, str(path))
            prepared = preparer.prepare(image, str(path))
            return [] if prepared is None else [prepared]

        return iter_file_faces(paths, prepare, self._embed_crops, batch_size=self.batch_size, workers=self.workers,
                               skip_unreadable=skip_unreadable, progress=progress, desc=desc, keep_crops=keep_crops)

    def embed_files(self, paths: Sequence[str | os.PathLike[str]], *, progress: bool = False,
                    skip_unreadable: bool = True, all_faces: bool = False) -> EmbeddedFiles:
        """Embed many image files, ``batch_size`` crops per forward pass, decoding and detection overlapped with the
        model (see :class:`EmbeddedFiles`).

        A file without a face is listed in ``no_face``; a file that cannot be decoded is listed in ``unreadable``
        (``skip_unreadable=False``: its :class:`~facesphere.errors.DataError` is raised instead). ``all_faces``:
        one row per face found. ``progress``: a tqdm bar over the files.
        """
        rows: list[np.ndarray] = []
        kept: list[Path] = []
        faces: list[Face] = []
        no_face: list[Path] = []
        unreadable: list[tuple[Path, str]] = []
        for item in self.iter_files(paths, all_faces=all_faces, progress=progress, skip_unreadable=skip_unreadable):
            if item.status == "unreadable":
                unreadable.append((item.path, item.message or "unreadable"))
            elif item.status == "no_face":
                no_face.append(item.path)
            for face in item.faces:
                rows.append(np.asarray(face.embedding, dtype=np.float32))
                face.embedding = None
                kept.append(item.path)
                faces.append(face)
        features = np.stack(rows) if rows else np.zeros((0, self.embedder.embedding_dim or 0), np.float32)
        return EmbeddedFiles(features, kept, no_face, unreadable, faces)

    def verify(self, a: ImageLike, b: ImageLike, *, threshold: float | None = None) -> VerifyResult:
        """Cosine similarity of the faces in ``a`` and ``b`` and the decision at ``threshold`` (default: the
        recogniser's, described in the result's ``info``)."""
        features = self.embed([a, b])
        score = float(np.dot(features[0], features[1]))
        info = self.threshold_info if threshold is None else choose_threshold(self.threshold_info,
                                                                              threshold=threshold)
        return VerifyResult(score=score, same=score >= info.value, threshold=float(info.value), info=info)

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


__all__ = ["FaceRecognizer", "EmbeddedFiles", "VerifyResult", "SearchMatch", "NoFaceError", "to_rgb_array", "Face",
           "FileFaces"]
