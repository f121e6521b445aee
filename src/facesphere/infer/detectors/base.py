"""What every face detector shares: the :class:`Detection` it returns, the :class:`FaceDetector` base class, NMS,
anchors, resizing and the onnxruntime session."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ...data.image import as_rgb_uint8
from ...errors import DataError, FaceSphereError, InvalidOptionError

__all__ = ["Detection", "FaceDetector", "nms", "anchor_centres", "as_rgb", "resize_rgb", "letterbox", "unscale",
           "onnx_session", "check_thresholds", "input_size_option", "check_max_side", "ONNX_EXTRA",
           "DEFAULT_MAX_SIDE"]

ONNX_EXTRA = 'pip install "facesphere[onnx]"'

#: Every detector shrinks a photo whose longer side exceeds this many pixels before detecting (boxes and landmarks
#: are mapped back to the photo's pixels). Large faces in large photos are found again (YuNet misses them at full
#: size) and memory stays bounded; ``max_side=None`` detects at full size.
DEFAULT_MAX_SIDE = 960


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


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> contiguous uint8 (H, W, 3) RGB."""
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


def resize_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of uint8 (H, W, 3) with Pillow."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def letterbox(image: np.ndarray, width: int, height: int, *, upscale: bool = True, shrink_canvas: bool = False,
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
    canvas[:new_h, :new_w] = resize_rgb(image, new_w, new_h)
    return canvas, np.array([new_w / w, new_h / h])


def unscale(boxes: np.ndarray, landmarks: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Input-pixel boxes (K, 4) and landmarks (K, 5, 2) -> original pixels."""
    return boxes / np.tile(scale, 2), landmarks / scale


def onnx_session(path: Path, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise FaceSphereError(f"{path}: onnxruntime is needed to run this detector ({ONNX_EXTRA})") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the InsightFace exports carry unused initialisers: do not warn about them
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise DataError(f"{path}: onnxruntime cannot load this model: {str(error).splitlines()[0][:300]}") from None


def check_thresholds(score_threshold: float, nms_threshold: float) -> None:
    if not 0.0 <= float(score_threshold) <= 1.0:
        raise InvalidOptionError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if not 0.0 < float(nms_threshold) <= 1.0:
        raise InvalidOptionError(f"nms_threshold must be in (0, 1], got {nms_threshold}")


def input_size_option(input_size: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
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


def check_max_side(max_side: int | None) -> int | None:
    """``max_side`` (a positive int or None) checked."""
    if max_side is None:
        return None
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 32:
        raise InvalidOptionError(f"max_side must be an integer of at least 32 pixels or None, got {max_side!r}")
    return int(max_side)


class FaceDetector:
    """Base class: ``detect(image) -> list[Detection]`` (best score first).

    Subclasses implement ``_detect(rgb)`` on a uint8 RGB image; :meth:`detect` first shrinks a photo whose longer
    side exceeds ``max_side`` (aspect ratio kept) and maps the boxes and landmarks back to the photo's pixels.
    """

    name = "detector"
    path: Path
    max_side: int | None = DEFAULT_MAX_SIDE

    def _detect(self, image: np.ndarray) -> list[Detection]:
        raise NotImplementedError

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in uint8 RGB ``(H, W, 3)`` or grey ``(H, W)`` ``image``, best score first, in its pixels."""
        rgb = as_rgb(image)
        height, width = rgb.shape[:2]
        limit = self.max_side
        if limit is None or max(height, width) <= limit:
            return self._detect(rgb)
        factor = limit / max(height, width)
        new_w, new_h = max(1, int(round(width * factor))), max(1, int(round(height * factor)))
        scale = np.array([new_w / width, new_h / height])
        faces = self._detect(resize_rgb(rgb, new_w, new_h))
        for face in faces:
            face.box, face.landmarks = face.box / np.tile(scale, 2), face.landmarks / scale
        return faces

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
