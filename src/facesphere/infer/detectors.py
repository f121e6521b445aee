"""Face detectors with 5 landmarks from local ONNX weights, and detect -> align in one call.

    from facesphere.infer.detectors import build_detector, detect_and_align
    detector = build_detector("scrfd_2.5g_bnkps.onnx")          # or face_detection_yunet_2023mar_int8bq.onnx,
                                                                 # or an MTCNN folder (pnet/rnet/onet.onnx)
    faces = detector.detect(image)                               # list[Detection], best score first
    crop, face = detect_and_align(image, detector)               # (112, 112, 3) uint8 ArcFace crop, or (None, None)

Images are uint8 RGB ``(H, W, 3)`` or grey ``(H, W)`` arrays of any size. Every detector returns :class:`Detection`
objects in the original image's pixel coordinates, landmarks in the order left eye, right eye, nose tip, left mouth
corner, right mouth corner, *as seen in the image* (METHODS §9), ready for :func:`facesphere.data.align.align_face`.

Input conventions (confirmed by experiment on the shared photos, see docs/align.md):

* **SCRFD** (InsightFace ``scrfd_*_bnkps.onnx``, run in onnxruntime): RGB, ``(p - 127.5) / 128``, NCHW; the image is
  resized keeping its aspect ratio into the top-left corner of an ``input_size`` canvas padded with zeros (height and
  width multiples of 32). Outputs per stride 8 / 16 / 32: scores (already sigmoid) ``(N, 1)``, box distances
  ``(N, 4)`` and keypoint offsets ``(N, 10)`` in units of the stride, ``N = (H/s)·(W/s)·2`` (2 anchors per
  location, consecutive), anchor centres at ``(col·s, row·s)``.
* **YuNet** (OpenCV Zoo ``face_detection_yunet_2023mar*.onnx``): BGR, raw 0..255, run by ``cv2.FaceDetectorYN``
  at each image's own size (OpenCV decodes and applies NMS). onnxruntime loads the block-quantised ``int8bq`` graph
  but fails to run it, so YuNet needs OpenCV.
* **MTCNN** (a folder holding ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``): see :mod:`facesphere.infer.mtcnn`
  (RGB, ``(p - 127.5) / 128``, NHWC, images fed transposed).

Which colour order: fed to the detector both ways, 381 colour Glint crops score higher with RGB for SCRFD in 76% of
the images, and with BGR for YuNet in 97% of them.

onnxruntime and OpenCV are optional and imported only when a detector is built.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.align import TemplateLike, align_face
from ..errors import DataError, FaceSphereError, InvalidOptionError, UnknownNameError

__all__ = [
    "Detection",
    "FaceDetector",
    "SCRFDDetector",
    "YuNetDetector",
    "build_detector",
    "choose_face",
    "detect_and_align",
    "nms",
    "anchor_centres",
    "decode_scrfd",
    "detector_kind",
    "CHOOSE_RULES",
]

#: How to pick one face among several: the largest box, the box whose centre is nearest the image centre, or the
#: highest score.
CHOOSE_RULES = ("largest", "central", "score")

_ONNX_EXTRA = 'pip install "facesphere[onnx]"'


@dataclass(eq=False)
class Detection:
    """One detected face, in original image pixel coordinates.

    ``box``: float64 (4,) ``x1, y1, x2, y2``; ``score``: detector confidence in [0, 1]; ``landmarks``: float64 (5, 2)
    ``(x, y)`` of left eye, right eye, nose tip, left mouth corner, right mouth corner (as seen in the image).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray = field(repr=False)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}


# ------------------------------------------------------------------------------------------------------------------
# shared helpers


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> contiguous uint8 (H, W, 3) RGB."""
    from ..data.image import as_rgb_uint8

    return as_rgb_uint8(image, "detector input")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, overlap: str = "iou") -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2``.
        scores: (N,).
        iou_threshold: a box is dropped when its overlap with a kept, higher-scoring box is above this.
        overlap: ``"iou"`` (intersection over union) or ``"min"`` (intersection over the *smaller* area, MTCNN's last
            stage: a box mostly inside another goes too).

    Returns:
        int64 indices of the kept boxes, highest score first (ties: lower index first).
    """
    if overlap not in ("iou", "min"):
        raise InvalidOptionError(f"nms: overlap must be 'iou' or 'min', got {overlap!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise DataError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0)
        inter_h = np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0)
        inter = inter_w * inter_h
        if overlap == "iou":
            denominator = areas[best] + areas[rest] - inter
        else:
            denominator = np.minimum(areas[best], areas[rest])
        ratio = np.where(denominator > 0, inter / np.where(denominator > 0, denominator, 1), 0.0)
        order = rest[ratio <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def anchor_centres(height: int, width: int, stride: int, anchors: int = 1, offset: float = 0.0) -> np.ndarray:
    """Anchor centres of a ``height x width`` network input at ``stride``: float64 (N, 2) ``(x, y)``,
    ``N = (height // stride) · (width // stride) · anchors``, row-major, the ``anchors`` of one location
    consecutive; centre of cell ``(row, col)`` = ``((col + offset)·stride, (row + offset)·stride)``."""
    rows, cols = height // stride, width // stride
    ys, xs = np.mgrid[0:rows, 0:cols]
    centres = np.stack([(xs + offset) * stride, (ys + offset) * stride], axis=-1).reshape(-1, 2).astype(np.float64)
    return np.repeat(centres, anchors, axis=0) if anchors > 1 else centres


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of uint8 (H, W, 3) with Pillow."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _letterbox(image: np.ndarray, width: int, height: int, *, upscale: bool = True, shrink_canvas: bool = False,
               multiple: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Resize keeping the aspect ratio into the top-left of a zero ``height x width`` canvas.

    ``upscale=False``: images that fit are not enlarged. ``shrink_canvas``: the canvas is only as large as the
    resized image rounded up to a multiple of ``multiple`` (at most ``height x width``).

    Returns ``(canvas (H', W', 3), scale (2,))``: input pixel = original pixel · scale, per axis ``(x, y)`` (the
    two differ only by the rounding of the resized size)."""
    h, w = image.shape[:2]
    factor = min(width / w, height / h)
    if not upscale:
        factor = min(factor, 1.0)
    new_w, new_h = max(1, min(width, int(round(w * factor)))), max(1, min(height, int(round(h * factor))))
    if shrink_canvas:
        width, height = min(width, -(-new_w // multiple) * multiple), min(height, -(-new_h // multiple) * multiple)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = _resize(image, new_w, new_h)
    return canvas, np.array([new_w / w, new_h / h])


def _unscale(boxes: np.ndarray, landmarks: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Input-pixel boxes (K, 4) and landmarks (K, 5, 2) -> original pixels."""
    return boxes / np.tile(scale, 2), landmarks / scale


def _onnx_session(path: Path, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise FaceSphereError(f"{path}: onnxruntime is needed to run this detector ({_ONNX_EXTRA})") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the InsightFace exports carry unused initialisers: do not warn about them
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise DataError(f"{path}: onnxruntime cannot load this model: {str(error).splitlines()[0][:300]}") from None


def _check_thresholds(score_threshold: float, nms_threshold: float) -> None:
    if not 0.0 <= float(score_threshold) <= 1.0:
        raise InvalidOptionError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if not 0.0 < float(nms_threshold) <= 1.0:
        raise InvalidOptionError(f"nms_threshold must be in (0, 1], got {nms_threshold}")


def _input_size(input_size: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
    """``input_size`` (an int, ``(W, H)`` or None) -> ``(W, H)``."""
    if input_size is None:
        return None
    if isinstance(input_size, (int, np.integer)):
        size = (int(input_size), int(input_size))
    else:
        try:
            width, height = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise InvalidOptionError(f"{what}: input_size must be an int or (W, H), got {input_size!r}") from None
        size = (width, height)
    if min(size) <= 0:
        raise InvalidOptionError(f"{what}: input_size must be positive, got {input_size!r}")
    return size


class FaceDetector:
    """Base class: ``detect(image) -> list[Detection]`` (best score first)."""

    name = "detector"
    path: Path

    def detect(self, image: np.ndarray) -> list[Detection]:
        raise NotImplementedError

    def __call__(self, image: np.ndarray) -> list[Detection]:
        return self.detect(image)

    def _finish(self, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, nms_threshold: float,
                max_faces: int | None) -> list[Detection]:
        keep = nms(boxes, scores, nms_threshold)
        if max_faces is not None:
            keep = keep[:max_faces]
        return [Detection(boxes[i].astype(np.float64), float(scores[i]), landmarks[i].astype(np.float64))
                for i in keep]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(getattr(self, 'path', ''))!r})"


# ------------------------------------------------------------------------------------------------------------------
# SCRFD


class SCRFDDetector(FaceDetector):
    """InsightFace SCRFD with 5 keypoints (``*_kps`` / ``*_bnkps`` ONNX), in onnxruntime; decoding and NMS here.

    Args:
        path: the ONNX file.
        input_size: the largest network input ``(W, H)``, or an int for a square (multiples of 32; default 640,
            InsightFace's). Larger images are shrunk to fit (aspect ratio kept); smaller ones are fed at their own
            size padded up to multiples of 32, unless ``upscale``. ``None``: every image at its own size, padded.
            Graphs with a fixed input size use theirs.
        upscale: enlarge small images to fill ``input_size`` (InsightFace's behaviour). Off by default: on 250x250
            LFW photos the enlarged faces (~500 px) are often missed, and it is 4x slower.
        score_threshold: minimum face score.
        nms_threshold: IoU above which the lower-scoring of two overlapping boxes is dropped.
        max_faces: keep at most this many faces (best first); ``None``: all.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
    """

    name = "scrfd"
    STRIDES = (8, 16, 32)

    def __init__(self, path: str | os.PathLike[str], input_size: int | Sequence[int] | None = 640,
                 score_threshold: float = 0.5, nms_threshold: float = 0.4, max_faces: int | None = None,
                 upscale: bool = False, threads: int | None = None) -> None:
        self.path = Path(path)
        _check_thresholds(score_threshold, nms_threshold)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_faces = max_faces
        self.session = _onnx_session(self.path, threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise DataError(f"{self.path}: an SCRFD model has one NCHW input, this one has "
                            f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        fixed_h, fixed_w = inputs[0].shape[2], inputs[0].shape[3]
        self.output_names, self.outputs_by_kind = _scrfd_outputs(self.session, self.path)
        size = _input_size(input_size, str(self.path))
        self.fixed_input = isinstance(fixed_h, int) and isinstance(fixed_w, int)
        if self.fixed_input:
            size = (fixed_w, fixed_h)
        self.upscale = bool(upscale)
        if size is not None and (size[0] % 32 or size[1] % 32):
            raise InvalidOptionError(f"{self.path}: SCRFD input size must be multiples of 32, got {size[0]}x{size[1]}"
                                     " (W x H)")
        self.input_size = size

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB image -> (normalised NCHW float32 input, (x, y) scale from original to input pixels)."""
        if self.input_size is None:
            h, w = image.shape[:2]
            height, width = -(-h // 32) * 32, -(-w // 32) * 32
            canvas = np.zeros((height, width, 3), dtype=np.uint8)
            canvas[:h, :w] = image
            scale = np.ones(2)
        else:
            canvas, scale = _letterbox(image, *self.input_size, upscale=self.upscale,
                                       shrink_canvas=not (self.upscale or self.fixed_input))
        blob = (canvas.astype(np.float32) - 127.5) / 128.0
        return blob.transpose(2, 0, 1)[None], scale

    def decode(self, outputs: Sequence[np.ndarray], input_hw: tuple[int, int],
               score_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw network outputs (in ``self.output_names`` order) for an input of ``input_hw`` -> candidate
        ``(boxes (K, 4), scores (K,), landmarks (K, 5, 2))`` in input pixels, above the score threshold, before
        NMS (see :func:`decode_scrfd`)."""
        by_size = {kind: sorted((np.asarray(outputs[self.output_names.index(name)]) for name in names),
                                key=lambda a: -a.size)
                   for kind, names in self.outputs_by_kind.items()}  # the most anchors = the smallest stride
        threshold = self.score_threshold if score_threshold is None else score_threshold
        try:
            return decode_scrfd(by_size["score"], by_size["box"], by_size["keypoints"], input_hw, threshold,
                                self.STRIDES)
        except DataError as error:
            raise DataError(f"{self.path}: {error}") from None

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in uint8 RGB ``(H, W, 3)`` or grey ``(H, W)`` ``image``, best score first."""
        rgb = _as_rgb(image)
        blob, scale = self._prepare(rgb)
        outputs = self.session.run(self.output_names, {self.input_name: blob})
        boxes, scores, landmarks = self.decode(outputs, blob.shape[2:])
        boxes, landmarks = _unscale(boxes, landmarks, scale)
        return self._finish(boxes, scores, landmarks, self.nms_threshold, self.max_faces)


def decode_scrfd(scores: Sequence[np.ndarray], distances: Sequence[np.ndarray], keypoints: Sequence[np.ndarray],
                 input_hw: Sequence[int], score_threshold: float, strides: Sequence[int] = (8, 16, 32)
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode SCRFD outputs, one array per stride (in ``strides`` order), for a network input of ``input_hw``.

    Per stride ``s``: ``scores`` (N, 1), ``distances`` (N, 4) (left, top, right, bottom distances from the anchor
    centre, in units of ``s``), ``keypoints`` (N, 10) (5 ``(dx, dy)`` offsets from the anchor centre, in units of
    ``s``), ``N = (H // s)·(W // s)·A`` with ``A`` anchors per location (2 for the InsightFace models), anchor
    centres from :func:`anchor_centres` (no half-cell offset).

    Returns ``(boxes (K, 4) x1 y1 x2 y2, scores (K,), landmarks (K, 5, 2))`` of the anchors scoring at least
    ``score_threshold``, in input pixels, stride by stride (no NMS).
    """
    height, width = (int(v) for v in input_hw)
    boxes, kept_scores, landmarks = [], [], []
    for stride, score, distance, offset in zip(strides, scores, distances, keypoints):
        score = np.asarray(score, dtype=np.float64).reshape(-1)
        cells = (height // stride) * (width // stride)
        if cells == 0 or score.size % cells:
            raise DataError(f"stride {stride} output has {score.size} anchors for a {height}x{width} input")
        centres = anchor_centres(height, width, stride, score.size // cells)
        chosen = np.nonzero(score >= score_threshold)[0]
        if chosen.size == 0:
            continue
        distance = np.asarray(distance, dtype=np.float64).reshape(-1, 4)[chosen] * stride
        offset = np.asarray(offset, dtype=np.float64).reshape(-1, 5, 2)[chosen] * stride
        centre = centres[chosen]
        boxes.append(np.concatenate([centre - distance[:, :2], centre + distance[:, 2:]], axis=1))
        landmarks.append(centre[:, None, :] + offset)
        kept_scores.append(score[chosen])
    if not kept_scores:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    return np.concatenate(boxes), np.concatenate(kept_scores), np.concatenate(landmarks)


def _scrfd_outputs(session: Any, path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Output names, and the names of the score / box / keypoint outputs (3 each: strides 8, 16, 32, told apart at
    run time by their anchor counts), from the graph's output widths (1, 4, 10)."""
    outputs = session.get_outputs()
    kinds: dict[int, list[str]] = {1: [], 4: [], 10: []}
    for output in outputs:
        last = output.shape[-1] if output.shape else None
        if last not in kinds:
            raise DataError(f"{path}: not an SCRFD model: output {output.name} has shape {output.shape}")
        kinds[last].append(output.name)
    if not kinds[10]:
        raise DataError(f"{path}: this SCRFD model has no keypoint outputs; alignment needs the 5-landmark "
                        "variant (*_kps.onnx / *_bnkps.onnx)")
    if not (len(kinds[1]) == len(kinds[4]) == len(kinds[10]) == 3):
        raise DataError(f"{path}: expected 3 score, 3 box and 3 keypoint outputs (strides 8, 16, 32), got "
                        f"{[(o.name, o.shape) for o in outputs]}")
    return [o.name for o in outputs], {"score": kinds[1], "box": kinds[4], "keypoints": kinds[10]}


# ------------------------------------------------------------------------------------------------------------------
# YuNet


class YuNetDetector(FaceDetector):
    """OpenCV Zoo YuNet (``face_detection_yunet_2023mar*.onnx``) through ``cv2.FaceDetectorYN`` (OpenCV 4.8+).

    OpenCV runs the network at each image's own size and does the decoding and NMS itself. (onnxruntime loads the
    block-quantised ``*_int8bq`` graph but cannot run it, so OpenCV is the one backend.)

    Args:
        path: the ONNX file.
        score_threshold: minimum face score (OpenCV Zoo's demo uses 0.9; 0.6 keeps harder faces).
        nms_threshold: NMS IoU threshold.
        max_faces: keep at most this many faces (best first); ``None``: all.
        top_k: candidates kept before NMS.
    """

    name = "yunet"

    def __init__(self, path: str | os.PathLike[str], score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 max_faces: int | None = None, top_k: int = 5000) -> None:
        self.path = Path(path)
        _check_thresholds(score_threshold, nms_threshold)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_faces = max_faces
        try:
            import cv2
        except ImportError:
            raise FaceSphereError(f"{self.path}: the YuNet detector runs in OpenCV ({_ONNX_EXTRA})") from None
        if not hasattr(cv2, "FaceDetectorYN"):
            raise FaceSphereError(f"{self.path}: this OpenCV ({cv2.__version__}) has no FaceDetectorYN; install "
                                  "opencv-python(-headless) 4.8 or newer")
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such detector weights file")
        self._size = (320, 320)
        try:
            self._net = cv2.FaceDetectorYN.create(str(self.path), "", self._size, self.score_threshold,
                                                  self.nms_threshold, int(top_k))
        except cv2.error as error:
            raise DataError(f"{self.path}: OpenCV cannot load this YuNet model: "
                            f"{str(error).strip().splitlines()[-1][:300]}") from None

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in uint8 RGB ``(H, W, 3)`` or grey ``(H, W)`` ``image``, best score first."""
        bgr = np.ascontiguousarray(_as_rgb(image)[:, :, ::-1])  # YuNet is fed BGR, raw 0..255
        size = (bgr.shape[1], bgr.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, faces = self._net.detect(bgr)
        if faces is None or len(faces) == 0:
            return []
        # rows: x, y, w, h, 5 landmarks (x, y) in our order (the person's right eye = the image's left first), score
        faces = np.asarray(faces, dtype=np.float64).reshape(-1, 15)
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
        order = np.argsort(-faces[:, 14], kind="stable")  # OpenCV has already applied NMS
        if self.max_faces is not None:
            order = order[: self.max_faces]
        return [Detection(boxes[i], float(faces[i, 14]), faces[i, 4:14].reshape(5, 2)) for i in order]


# ------------------------------------------------------------------------------------------------------------------
# building and using detectors

DETECTORS: dict[str, type[FaceDetector]] = {"scrfd": SCRFDDetector, "yunet": YuNetDetector}


def _kind_from_graph(path: Path) -> str | None:
    """``"scrfd"`` / ``"yunet"`` from the graph's outputs, ``None`` when it is neither."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        onnxruntime = None
    if onnxruntime is not None:
        session = _onnx_session(path, 1)
        outputs = [(o.name, list(o.shape)) for o in session.get_outputs()]
    else:
        try:
            import onnx
        except ImportError:
            raise FaceSphereError(f"{path}: cannot tell which detector this is from its name, and reading the graph "
                                  f"needs onnxruntime ({_ONNX_EXTRA})") from None
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
        from .mtcnn import MODEL_FILES

        missing = [name for name in MODEL_FILES if not (file / name).is_file()]
        if missing:
            raise DataError(f"{file}: is a folder, read as an MTCNN detector, which needs {', '.join(MODEL_FILES)}; "
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

    ``options`` go to :class:`SCRFDDetector` / :class:`YuNetDetector` / :class:`~facesphere.infer.mtcnn.MTCNNDetector`
    (``score_threshold``, ``nms_threshold``, ``input_size``, ``max_faces``, ``threads``; YuNet ``top_k``; MTCNN
    ``min_face_size``, ``scale_factor``, ``thresholds``); an option the detector does not take is an
    :class:`~facesphere.errors.InvalidOptionError`. A detector object is returned as is.
    """
    if isinstance(path, FaceDetector) or (not isinstance(path, (str, os.PathLike)) and hasattr(path, "detect")):
        return path  # type: ignore[return-value]
    kind = detector_kind(path)
    if kind == "mtcnn":
        from .mtcnn import MTCNNDetector

        cls: type[FaceDetector] = MTCNNDetector
    else:
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
    112x96, or a size; METHODS §9).

    Returns ``(crop, detection)``: crop uint8 ``(H_t, W_t, 3)`` RGB (grey input replicated), or ``(None, None)``
    when no face is found.
    """
    if isinstance(image, (str, os.PathLike)):
        from ..data.image import read_image

        image = read_image(image)
    rgb = _as_rgb(image)
    face = choose_face(detector.detect(rgb), rgb.shape, choose, min_score)
    if face is None:
        return None, None
    return align_face(rgb, face.landmarks, template), face
