"""MTCNN face detector (Zhang et al., 2016): the P-Net / R-Net / O-Net cascade with 5 landmarks, from local ONNX files.

    from facesphere.infer.detectors import MTCNNDetector
    detector = MTCNNDetector("../shared/models/mtcnn")     # the folder holding pnet.onnx, rnet.onnx, onet.onnx
    faces = detector.detect(image)                         # list[Detection], best score first
    # or: facesphere.infer.detectors.build_detector("../shared/models/mtcnn")

The cascade, as in the paper:

1. **Image pyramid**: scales ``m·f^k`` with ``m = 12 / min_face_size`` and ``f = scale_factor`` (0.709) while the
   shorter side times the scale is at least 12 px (:func:`pyramid_scales`).
2. **P-Net** on every scale (fully convolutional, stride 2, a 12x12 cell per output position): positions whose face
   probability passes ``thresholds[0]`` become boxes (:func:`generate_boxes`), NMS at IoU 0.5 within the scale, then
   0.7 across scales; the boxes are moved by their regression offsets (:func:`regress`) and made square
   (:func:`square`).
3. **R-Net** on the 24x24 crops of those boxes (zero padding where a box leaves the image, :func:`crop_patches`):
   ``thresholds[1]``, NMS at IoU 0.7, regression, square.
4. **O-Net** on the 48x48 crops: ``thresholds[2]``, the 5 landmarks (relative to the crop) mapped back to image
   pixels, regression, and a final NMS at 0.7 with the *min* overlap (intersection over the smaller box,
   :func:`nms_min`), which also drops a small box lying inside a bigger one.

Boxes are ``x1, y1, x2, y2`` with ``x2 - x1`` the width (the box's pixels are columns ``x1 .. x2 - 1``); landmarks
are ``(x, y)`` pixels. No +1 / -1 of the original MATLAB code: the differences are below a pixel.

onnxruntime is optional and imported only when a detector is built.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import DataError, InvalidOptionError
from .base import DEFAULT_MAX_SIDE, Detection, FaceDetector, as_rgb, check_max_side, nms, onnx_session, resize_rgb

__all__ = [
    "MTCNNDetector",
    "MODEL_FILES",
    "pyramid_scales",
    "generate_boxes",
    "regress",
    "square",
    "nms_min",
    "pad_boxes",
    "crop_patches",
]

#: The three networks' file names inside an MTCNN folder, in cascade order.
MODEL_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")

PNET_STRIDE = 2
PNET_CELL = 12
RNET_SIZE = 24
ONET_SIZE = 48
#: NMS thresholds of the cascade (the paper's / the reference implementation's): P-Net within a scale (IoU), P-Net
#: across scales (IoU), R-Net (IoU), O-Net (intersection over the smaller box).
NMS_PNET_SCALE, NMS_PNET, NMS_RNET, NMS_ONET_MIN = 0.5, 0.7, 0.7, 0.7


# ------------------------------------------------------------------------------------------------------------------
# pure numpy parts


def pyramid_scales(height: int, width: int, min_face_size: float = 20.0, scale_factor: float = 0.709,
                   cell: int = PNET_CELL) -> list[float]:
    """The image pyramid's scales for a ``height x width`` image: ``m·f^k`` (``m = cell / min_face_size``,
    ``f = scale_factor``), largest first, while ``min(height, width)·scale >= cell``. A face of ``min_face_size``
    pixels is ``cell`` pixels at the first scale. Empty when the image is smaller than ``min_face_size``."""
    if min_face_size <= 0:
        raise InvalidOptionError(f"min_face_size must be positive, got {min_face_size}")
    if not 0.0 < scale_factor < 1.0:
        raise InvalidOptionError(f"scale_factor must be in (0, 1), got {scale_factor}")
    first = cell / float(min_face_size)
    shorter = min(height, width)
    scales: list[float] = []
    scale = first
    while shorter * scale >= cell - 1e-9:
        scales.append(scale)
        scale *= scale_factor
    return scales


def generate_boxes(probability: np.ndarray, offsets: np.ndarray, scale: float | Sequence[float], threshold: float,
                   stride: int = PNET_STRIDE, cell: int = PNET_CELL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate boxes from one P-Net output map.

    Args:
        probability: (h, w) face probability per output position (in image orientation: rows = y).
        offsets: (h, w, 4) box regression ``dx1, dy1, dx2, dy2`` per position, in units of the box size.
        scale: the pyramid level's scale (resized = original · scale), or ``(sx, sy)`` per axis.
        threshold: minimum probability.
        stride, cell: output position ``(row, col)`` sees the ``cell x cell`` window at ``(col·stride, row·stride)``
            of the resized image.

    Returns:
        ``(boxes (K, 4) x1 y1 x2 y2 in original pixels, scores (K,), offsets (K, 4))``, positions in row-major
        order, before regression.
    """
    probability = np.asarray(probability, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.float64)
    if probability.ndim != 2 or offsets.shape != probability.shape + (4,):
        raise DataError(f"generate_boxes: probability {probability.shape} and offsets {offsets.shape} do not match "
                        "(expected (h, w) and (h, w, 4))")
    sx, sy = (float(scale), float(scale)) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
    rows, cols = np.nonzero(probability >= threshold)
    x1, y1 = cols * float(stride), rows * float(stride)
    boxes = np.stack([x1 / sx, y1 / sy, (x1 + cell) / sx, (y1 + cell) / sy], axis=1).reshape(-1, 4)
    return boxes, probability[rows, cols], offsets[rows, cols].reshape(-1, 4)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Bounding-box regression: (N, 4) boxes moved by (N, 4) offsets ``dx1, dy1, dx2, dy2`` in units of each box's
    width / height: ``x1 + dx1·w, y1 + dy1·h, x2 + dx2·w, y2 + dy2·h``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
    return boxes + np.asarray(offsets, dtype=np.float64).reshape(-1, 4) * size


def square(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> squares of side ``max(w, h)`` with the same centres."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.max(boxes[:, 2:] - boxes[:, :2], axis=1, keepdims=True) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS with MTCNN's "min" overlap: a box is dropped when its intersection with a kept, higher-scoring box
    is more than ``threshold`` of the *smaller* of the two areas (so a box mostly inside another goes too).

    Returns int64 indices of the kept boxes, highest score first (ties: lower index first)."""
    return nms(boxes, scores, threshold, overlap="min")


def pad_boxes(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer crop windows of (N, 4) float boxes in a ``height x width`` image, and how each meets the image.

    Each box is rounded to the pixel window ``x0 .. x0 + w - 1``, ``y0 .. y0 + h - 1`` with ``x0 = round(x1)``,
    ``w = max(1, round(x2 - x1))`` (the same for y).

    Returns ``(windows, source, target)``, all int64 (N, 4):

    * ``windows``: ``x0, y0, x0 + w, y0 + h`` (the box actually cropped, in image pixels);
    * ``source``: ``sx1, sy1, sx2, sy2``, the part of the window inside the image (``image[sy1:sy2, sx1:sx2]``;
      empty, ``sx1 == sx2`` or ``sy1 == sy2``, when the window misses the image);
    * ``target``: ``tx1, ty1, tx2, ty2``, where that part goes in the ``h x w`` crop (the rest is zero padding;
      all zeros when the window misses the image).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = np.round(boxes[:, 0]).astype(np.int64)
    y0 = np.round(boxes[:, 1]).astype(np.int64)
    w = np.maximum(np.round(boxes[:, 2] - boxes[:, 0]).astype(np.int64), 1)
    h = np.maximum(np.round(boxes[:, 3] - boxes[:, 1]).astype(np.int64), 1)
    windows = np.stack([x0, y0, x0 + w, y0 + h], axis=1)
    sx1, sy1 = np.clip(x0, 0, width), np.clip(y0, 0, height)
    sx2, sy2 = np.maximum(np.clip(x0 + w, 0, width), sx1), np.maximum(np.clip(y0 + h, 0, height), sy1)
    source = np.stack([sx1, sy1, sx2, sy2], axis=1)
    target = np.stack([sx1 - x0, sy1 - y0, sx2 - x0, sy2 - y0], axis=1)
    target[(sx2 == sx1) | (sy2 == sy1)] = 0  # the window misses the image: an all-padding crop
    return windows, source, target


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop (N, 4) boxes out of uint8 ``(H, W, 3)`` ``image`` (zero outside the image, see :func:`pad_boxes`) and
    resize each to ``size x size`` (bilinear, antialiased).

    Returns ``(patches uint8 (N, size, size, 3), windows int64 (N, 4))``, the windows being the integer boxes
    actually cropped (what the network's regression and landmarks are relative to)."""
    windows, source, target = pad_boxes(boxes, image.shape[0], image.shape[1])
    patches = np.zeros((len(windows), size, size, 3), dtype=np.uint8)
    for i, ((x0, y0, x1, y1), (sx1, sy1, sx2, sy2), (tx1, ty1, tx2, ty2)) in enumerate(zip(windows, source, target)):
        crop = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        crop[ty1:ty2, tx1:tx2] = image[sy1:sy2, sx1:sx2]
        patches[i] = resize_rgb(crop, size, size)
    return patches, windows


# ------------------------------------------------------------------------------------------------------------------
# the detector


def _outputs_by_width(session: Any, path: Path, widths: Sequence[int], what: str) -> list[str]:
    """Names of the outputs whose last dimension is each of ``widths`` (in that order)."""
    outputs = session.get_outputs()
    found = {}
    for output in outputs:
        last = output.shape[-1] if output.shape else None
        if last in widths and last not in found:
            found[last] = output.name
    if sorted(found) != sorted(widths) or len(outputs) != len(widths):
        raise DataError(f"{path}: not an MTCNN {what}: expected outputs of widths {list(widths)}, got "
                        f"{[(o.name, o.shape) for o in outputs]}")
    return [found[w] for w in widths]


def _check_input(session: Any, path: Path, size: int | None, what: str) -> str:
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    ok = shape is not None and len(shape) == 4 and shape[3] == 3
    if ok and size is not None:
        ok = shape[1] == size and shape[2] == size
    if not ok:
        expected = "(N, H, W, 3)" if size is None else f"(N, {size}, {size}, 3)"
        raise DataError(f"{path}: not an MTCNN {what}: expected one NHWC input {expected}, got "
                        f"{[(i.name, i.shape) for i in inputs]}")
    return inputs[0].name


class MTCNNDetector(FaceDetector):
    """MTCNN (P-Net, R-Net, O-Net) with 5 landmarks, from three ONNX files, in onnxruntime; the cascade here.

    Input convention of the shared weights (``../shared/models/mtcnn``: keras2onnx 1.7 exports of Keras models whose
    weights come from the original Caffe MTCNN; inputs ``input_1`` (N, H, W, 3), ``input_2`` (N, 24, 24, 3),
    ``input_3`` (N, 48, 48, 3)), confirmed by experiment (``docs/align.md``):

    * NHWC float32, ``(p - 127.5) · 0.0078125`` (= ``/ 128``);
    * **RGB**: on 193 colour Glint crops (padded to 224x224), P-Net's best face probability was higher fed RGB than
      BGR on 189, and O-Net's on a fixed face window on 175; fed BGR, 10 faces were missed instead of 1. (The shared
      LFW copy is grey, so it cannot tell.)
    * **transposed** (x and y exchanged; presumably the original Caffe models were trained through MATLAB, whose
      arrays are column-major): each
      image / crop is fed as ``(N, W, H, 3)``, and P-Net's output maps come back ``(N, w, h, ·)`` and are transposed
      back here. Not transposed, the central face of only 1 of 30 LFW photos was found;
    * yet the outputs are in the *original image's* x / y: regression offsets ``dx1, dy1, dx2, dy2`` and landmarks
      ``x1..x5, y1..y5``, in units of the crop's width / height from its top-left corner. With the transposed
      photos these put the landmarks of all 30 LFW faces ~2 px (mean) from SCRFD's; reading them the other way
      round (``dy1, dx1, ...`` / ``y..., x...``) found 23 of the 30 with landmarks ~36 px off;
    * landmarks come in the standard order as seen in the image: left eye, right eye, nose, left mouth corner,
      right mouth corner.

    Args:
        path: the folder holding ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx`` (or ``None`` with all three
            explicit paths).
        min_face_size: smallest face to look for, in pixels (the pyramid's first scale is ``12 / min_face_size``).
        scale_factor: ratio between pyramid levels (0.709 ~ 1/√2: each level halves the area).
        thresholds: minimum face probability after P-Net, R-Net and O-Net.
        score_threshold: overrides ``thresholds[2]`` (the final score), for callers that set one threshold for
            every detector.
        max_faces: keep at most this many faces (best first); ``None``: all.
        threads: onnxruntime intra-op threads per network (default 1: the cascade makes many small runs, for
            which onnxruntime's thread pool costs more than it gains, most of all on a busy machine: both are timed
            by ``benchmarks/infer.py``, docs/benchmarks.md; ``None``: onnxruntime's default).
        pnet, rnet, onet: explicit paths to one or more of the networks, instead of the files in ``path``.
        max_side: photos whose longer side exceeds this are shrunk first (default 960; ``None``: never), so the
            pyramid of a large photo stays bounded (``min_face_size`` then counts pixels of the shrunk photo).
    """

    name = "mtcnn"
    # the input convention (see above); class attributes so an experiment can flip them on an instance
    transpose = True
    bgr = False

    def __init__(self, path: str | os.PathLike[str] | None = None, min_face_size: float = 20.0,
                 scale_factor: float = 0.709, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 score_threshold: float | None = None, max_faces: int | None = None, threads: int | None = 1,
                 pnet: str | os.PathLike[str] | None = None, rnet: str | os.PathLike[str] | None = None,
                 onet: str | os.PathLike[str] | None = None, max_side: int | None = DEFAULT_MAX_SIDE) -> None:
        self.max_side = check_max_side(max_side)
        explicit = [pnet, rnet, onet]
        if path is None and any(p is None for p in explicit):
            raise InvalidOptionError("MTCNNDetector needs the folder holding pnet.onnx, rnet.onnx and onet.onnx, or "
                                     "all three of pnet=, rnet=, onet=")
        folder = Path(path) if path is not None else None
        if folder is not None and not folder.is_dir():
            raise DataError(f"{folder}: no such folder (MTCNN needs a folder holding {', '.join(MODEL_FILES)})")
        files = [Path(p) if p is not None else folder / name  # type: ignore[operator]
                 for p, name in zip(explicit, MODEL_FILES)]
        missing = [str(f) if p is not None else f.name for f, p in zip(files, explicit) if not f.is_file()]
        if missing:
            where = f"{folder}: " if folder is not None else ""
            raise DataError(f"{where}MTCNN weights missing: {', '.join(missing)} (needs {', '.join(MODEL_FILES)})")
        self.path = folder if folder is not None else files[0].parent
        self.files = files

        try:
            values = [float(t) for t in thresholds]
        except (TypeError, ValueError):
            raise InvalidOptionError(f"thresholds must be 3 numbers (P-Net, R-Net, O-Net), got {thresholds!r}"
                                     ) from None
        if score_threshold is not None and len(values) == 3:
            values[2] = float(score_threshold)
        if len(values) != 3 or not all(0.0 <= t <= 1.0 for t in values):
            raise InvalidOptionError(f"thresholds must be 3 numbers in [0, 1] (P-Net, R-Net, O-Net), got "
                                     f"{values if score_threshold is not None else thresholds!r}")
        self.thresholds = tuple(values)
        pyramid_scales(100, 100, min_face_size, scale_factor)  # checks both
        self.min_face_size = float(min_face_size)
        self.scale_factor = float(scale_factor)
        if max_faces is not None and int(max_faces) < 1:
            raise InvalidOptionError(f"max_faces must be at least 1 or None, got {max_faces}")
        self.max_faces = None if max_faces is None else int(max_faces)

        self.sessions = [onnx_session(f, threads) for f in files]
        pnet_s, rnet_s, onet_s = self.sessions
        self._inputs = [_check_input(pnet_s, files[0], None, "P-Net"),
                        _check_input(rnet_s, files[1], RNET_SIZE, "R-Net"),
                        _check_input(onet_s, files[2], ONET_SIZE, "O-Net")]
        self._outputs = [_outputs_by_width(pnet_s, files[0], (2, 4), "P-Net"),  # probability, offsets
                         _outputs_by_width(rnet_s, files[1], (2, 4), "R-Net"),
                         _outputs_by_width(onet_s, files[2], (2, 4, 10), "O-Net")]  # + landmarks

    def __repr__(self) -> str:
        return f"MTCNNDetector({str(self.path)!r}, min_face_size={self.min_face_size:g})"

    # -- running the networks --------------------------------------------------------------------------------------

    def _blob(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> the float32 network input (see the class docstring for the convention)."""
        blob = (images.astype(np.float32) - 127.5) * 0.0078125
        if self.bgr:
            blob = blob[..., ::-1]
        if self.transpose:
            blob = blob.transpose(0, 2, 1, 3)
        return np.ascontiguousarray(blob)

    def _run(self, stage: int, images: np.ndarray) -> list[np.ndarray]:
        return self.sessions[stage].run(self._outputs[stage], {self._inputs[stage]: self._blob(images)})

    def run_pnet(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P-Net on one (resized) uint8 RGB ``(H, W, 3)`` image -> ``(probability (h, w), offsets (h, w, 4))`` in
        image orientation, ``h = (H - 12) // 2 + 1`` (the same for w)."""
        probability, offsets = self._run(0, image[None])
        probability, offsets = probability[0, :, :, 1], offsets[0]
        if self.transpose:
            probability, offsets = probability.T, offsets.transpose(1, 0, 2)
        return probability, offsets

    def run_rnet(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """R-Net on uint8 RGB ``(N, 24, 24, 3)`` crops -> ``(probability (N,), offsets (N, 4))``."""
        if len(patches) == 0:
            return np.zeros(0), np.zeros((0, 4))
        probability, offsets = self._run(1, patches)
        return probability[:, 1].astype(np.float64), offsets.astype(np.float64)

    def run_onet(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net on uint8 RGB ``(N, 48, 48, 3)`` crops -> ``(probability (N,), offsets (N, 4), landmarks (N, 5, 2))``,
        the landmarks ``(x, y)`` in units of the crop's size from its top-left corner."""
        if len(patches) == 0:
            return np.zeros(0), np.zeros((0, 4)), np.zeros((0, 5, 2))
        probability, offsets, points = self._run(2, patches)
        points = points.astype(np.float64).reshape(-1, 2, 5).transpose(0, 2, 1)  # x1..x5, y1..y5 -> (5, 2)
        return probability[:, 1].astype(np.float64), offsets.astype(np.float64), points

    # -- the cascade -----------------------------------------------------------------------------------------------

    def proposals(self, image: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net over the pyramid of uint8 RGB ``image`` -> square candidate boxes (K, 4), best first."""
        height, width = image.shape[:2]
        boxes, scores, offsets = [], [], []
        for scale in pyramid_scales(height, width, self.min_face_size, self.scale_factor):
            new_h, new_w = int(math.ceil(height * scale)), int(math.ceil(width * scale))
            probability, offset = self.run_pnet(resize_rgb(image, new_w, new_h))
            b, s, o = generate_boxes(probability, offset, (new_w / width, new_h / height), self.thresholds[0])
            keep = nms(b, s, NMS_PNET_SCALE)
            boxes.append(b[keep])
            scores.append(s[keep])
            offsets.append(o[keep])
        if not boxes or sum(len(s) for s in scores) == 0:
            return np.zeros((0, 4))
        boxes_, scores_, offsets_ = np.concatenate(boxes), np.concatenate(scores), np.concatenate(offsets)
        keep = nms(boxes_, scores_, NMS_PNET)
        return _valid(square(regress(boxes_[keep], offsets_[keep])))

    def refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on the 24x24 crops of ``boxes`` -> square boxes (K, 4), best first."""
        if len(boxes) == 0:
            return np.zeros((0, 4))
        patches, windows = crop_patches(image, boxes, RNET_SIZE)
        probability, offsets = self.run_rnet(patches)
        chosen = np.nonzero(probability >= self.thresholds[1])[0]
        windows, probability, offsets = windows[chosen].astype(np.float64), probability[chosen], offsets[chosen]
        keep = nms(windows, probability, NMS_RNET)
        return _valid(square(regress(windows[keep], offsets[keep])))

    def output(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3: O-Net on the 48x48 crops of ``boxes`` -> ``(boxes (K, 4), scores (K,), landmarks (K, 5, 2))`` in
        image pixels after the final "min" NMS, best first."""
        if len(boxes) == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        patches, windows = crop_patches(image, boxes, ONET_SIZE)
        probability, offsets, points = self.run_onet(patches)
        chosen = np.nonzero(probability >= self.thresholds[2])[0]
        windows, probability = windows[chosen].astype(np.float64), probability[chosen]
        size = windows[:, 2:] - windows[:, :2]
        landmarks = windows[:, None, :2] + points[chosen] * size[:, None, :]  # relative to the crop, not regressed
        final = regress(windows, offsets[chosen])
        keep = nms_min(final, probability, NMS_ONET_MIN)
        return final[keep], probability[keep], landmarks[keep]

    def _detect(self, image: np.ndarray) -> list[Detection]:
        rgb = as_rgb(image)
        boxes, scores, landmarks = self.output(rgb, self.refine(rgb, self.proposals(rgb)))
        count = len(scores) if self.max_faces is None else min(len(scores), self.max_faces)
        return [Detection(boxes[i].copy(), float(scores[i]), landmarks[i].copy()) for i in range(count)]


def _valid(boxes: np.ndarray) -> np.ndarray:
    """Drop boxes with a non-finite coordinate or no area (a regression can in principle flip a box)."""
    good = np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[good]
