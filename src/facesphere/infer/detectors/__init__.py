"""Face detectors with 5 landmarks from local ONNX weights, and detect -> align in one call.

    from facesphere.infer.detectors import build_detector, detect_and_align
    detector = build_detector("scrfd_2.5g_bnkps.onnx")          # or face_detection_yunet_2023mar_int8bq.onnx,
                                                                 # or an MTCNN folder (pnet/rnet/onet.onnx)
    faces = detector.detect(image)                               # list[Detection], best score first
    crop, face = detect_and_align(image, detector)               # (112, 112, 3) uint8 ArcFace crop, or (None, None)

Images are uint8 RGB ``(H, W, 3)`` or grey ``(H, W)`` arrays of any size. Every detector returns :class:`Detection`
objects in the original image's pixel coordinates, landmarks in the order left eye, right eye, nose tip, left mouth
corner, right mouth corner, *as seen in the image* (docs/methods.md §9), ready for :func:`facesphere.data.align.align_face`.

The detectors (the :data:`DETECTORS` registry; input conventions confirmed by experiment, see docs/align.md, and
described in each module):

* ``scrfd`` — InsightFace ``scrfd_*_bnkps.onnx`` in onnxruntime (:mod:`.scrfd`);
* ``yunet`` — OpenCV Zoo ``face_detection_yunet_2023mar*.onnx`` in OpenCV (:mod:`.yunet`);
* ``mtcnn`` — a folder holding ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx`` (:mod:`.mtcnn`).

Which colour order: fed to the detector both ways, 381 colour Glint crops score higher with RGB for SCRFD in 76% of
the images, and with BGR for YuNet in 97% of them.

onnxruntime and OpenCV are optional and imported only when a detector is built.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...data.align import TemplateLike, align_face
from ...data.image import read_image
from ...errors import DataError, FaceSphereError, InvalidOptionError, UnknownNameError
from ...registry import Registry
from .base import (
    DEFAULT_MAX_SIDE,
    ONNX_EXTRA,
    Detection,
    FaceDetector,
    anchor_centres,
    as_rgb,
    nms,
    onnx_session,
)
from .mtcnn import MODEL_FILES as MTCNN_FILES
from .mtcnn import MTCNNDetector
from .scrfd import SCRFDDetector, decode_scrfd
from .yunet import YuNetDetector

__all__ = [
    "DETECTORS",
    "Detection",
    "FaceDetector",
    "SCRFDDetector",
    "YuNetDetector",
    "MTCNNDetector",
    "build_detector",
    "choose_face",
    "detect_and_align",
    "nms",
    "anchor_centres",
    "decode_scrfd",
    "detector_kind",
    "CHOOSE_RULES",
    "DEFAULT_MAX_SIDE",
]

#: Every face detector, by the name :func:`detector_kind` gives its weights.
DETECTORS: Registry[type[FaceDetector]] = Registry(
    "detector", {"scrfd": SCRFDDetector, "yunet": YuNetDetector, "mtcnn": MTCNNDetector})

#: How to pick one face among several: the largest box, the box whose centre is nearest the image centre, or the
#: highest score.
CHOOSE_RULES = ("largest", "central", "score")


def _kind_from_graph(path: Path) -> str | None:
    """``"scrfd"`` / ``"yunet"`` from the graph's outputs, ``None`` when it is neither."""
    try:
        import onnxruntime  # noqa: F401  (optional: read the graph with it when installed)
    except ImportError:
        onnxruntime = None
    if onnxruntime is not None:
        session = onnx_session(path, 1)
        outputs = [(o.name, list(o.shape)) for o in session.get_outputs()]
    else:
        try:
            import onnx
        except ImportError:
            raise FaceSphereError(f"{path}: cannot tell which detector this is from its name, and reading the graph "
                                  f"needs onnxruntime ({ONNX_EXTRA})") from None
        try:
            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception as error:
            raise DataError(f"{path}: not a readable ONNX file ({str(error)[:200]})") from None
        outputs = [(o.name, [d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim])
                   for o in graph.output]
    names = {name for name, _ in outputs}
    if {f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)} <= names:
        return "yunet"
    lasts = sorted(shape[-1] if shape else -1 for _, shape in outputs)
    if lasts == [1, 1, 1, 4, 4, 4, 10, 10, 10]:
        return "scrfd"
    if lasts == [1, 1, 1, 4, 4, 4]:
        raise DataError(f"{path}: an SCRFD model without keypoints; alignment needs the 5-landmark variant "
                        "(*_kps.onnx / *_bnkps.onnx)")
    return None


def detector_kind(path: str | os.PathLike[str]) -> str:
    """Which detector a weights file holds: ``"scrfd"`` or ``"yunet"``, from its name, else from its ONNX graph;
    ``"mtcnn"`` for a folder holding ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx``."""
    file = Path(path)
    if not file.exists():
        raise DataError(f"{file}: no such detector weights file")
    if file.is_dir():
        missing = [name for name in MTCNN_FILES if not (file / name).is_file()]
        if missing:
            raise DataError(f"{file}: is a folder, read as an MTCNN detector, which needs {', '.join(MTCNN_FILES)}; "
                            f"missing: {', '.join(missing)} (or give an SCRFD or YuNet .onnx file)")
        return "mtcnn"
    lower = file.name.lower()
    if "scrfd" in lower:
        return "scrfd"
    if "yunet" in lower:
        return "yunet"
    kind = _kind_from_graph(file) if lower.endswith(".onnx") or _looks_like_onnx(file) else None
    if kind is None:
        raise DataError(f"{file}: not a supported face detector: expected an SCRFD (5 keypoints) or YuNet ONNX "
                        "model (known by its file name or its outputs), or an MTCNN folder")
    return kind


def _looks_like_onnx(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head[:1] == b"\x08"  # protobuf field 1 (ir_version), varint


def build_detector(path: str | os.PathLike[str] | FaceDetector, **options: Any) -> FaceDetector:
    """Open the face detector in ``path``: SCRFD or YuNet ONNX (the type comes from the file name, else the graph),
    or a folder holding MTCNN's ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``.

    ``options`` go to :class:`SCRFDDetector` / :class:`YuNetDetector` / :class:`MTCNNDetector`
    (``score_threshold``, ``nms_threshold``, ``input_size``, ``max_faces``, ``threads``, ``max_side`` (every
    detector: photos larger than this are shrunk before detection, default 960); YuNet ``top_k``; MTCNN
    ``min_face_size``, ``scale_factor``, ``thresholds``); an option the detector does not take is an
    :class:`~facesphere.errors.InvalidOptionError`. A detector object is returned as is.
    """
    if isinstance(path, FaceDetector) or (not isinstance(path, (str, os.PathLike)) and hasattr(path, "detect")):
        return path  # type: ignore[return-value]
    kind = detector_kind(path)
    cls = DETECTORS[kind]
    accepted = [name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "path")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidOptionError(f"{kind} detector: unknown option(s) {', '.join(unknown)}; valid: "
                                 f"{', '.join(accepted)}")
    return cls(path, **options)


def choose_face(detections: Sequence[Detection], image_shape: Sequence[int], choose: str = "largest",
                min_score: float | None = None) -> Detection | None:
    """One face among ``detections`` in an image of ``image_shape`` (H, W, ...): ``"largest"`` area of the box's
    part inside the image (a face cut by the border, often a bystander, counts only what is visible), ``"central"``
    (box centre nearest the image centre), or highest ``"score"``; ties go to the higher score. Faces under
    ``min_score`` are ignored. ``None`` when no face is left."""
    if choose not in CHOOSE_RULES:
        raise UnknownNameError(f"unknown face choice {choose!r}; valid: {', '.join(CHOOSE_RULES)}")
    faces = [d for d in detections if min_score is None or d.score >= min_score]
    if not faces:
        return None
    height, width = float(image_shape[0]), float(image_shape[1])
    if choose == "largest":
        def visible_area(d: Detection) -> float:
            x1, y1 = max(float(d.box[0]), 0.0), max(float(d.box[1]), 0.0)
            x2, y2 = min(float(d.box[2]), width), min(float(d.box[3]), height)
            return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)

        return max(faces, key=lambda d: (visible_area(d), d.score))
    if choose == "central":
        cy, cx = height / 2.0, width / 2.0

        def distance(d: Detection) -> float:
            x, y = d.centre
            return (x - cx) ** 2 + (y - cy) ** 2

        return min(faces, key=lambda d: (distance(d), -d.score))
    return max(faces, key=lambda d: d.score)


def detect_and_align(image: np.ndarray | str | os.PathLike[str], detector: Any, template: TemplateLike = "arcface",
                     choose: str = "largest", min_score: float | None = None
                     ) -> tuple[np.ndarray | None, Detection | None]:
    """Detect faces in ``image`` (uint8 RGB (H, W, 3) or grey (H, W), or an image file path), pick one by
    ``choose`` (see :func:`choose_face`) and align it to ``template`` (``"arcface"`` 112x112, ``"sphereface"``
    112x96, or a size; docs/methods.md §9).

    Returns ``(crop, detection)``: crop uint8 ``(H_t, W_t, 3)`` RGB (grey input replicated), or ``(None, None)``
    when no face is found.
    """
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    rgb = as_rgb(image)
    face = choose_face(detector.detect(rgb), rgb.shape, choose, min_score)
    if face is None:
        return None, None
    return align_face(rgb, face.landmarks, template), face
