"""InsightFace SCRFD (5 keypoints), run in onnxruntime; anchor decoding and NMS written here.

Input convention (confirmed on the shared photos): RGB, ``(p - 127.5) / 128``, NCHW; the image is resized keeping its
aspect ratio into the top-left corner of an ``input_size`` canvas padded with zeros (height and width multiples of 32).
Outputs per stride 8 / 16 / 32: scores (already sigmoid) ``(N, 1)``, box distances ``(N, 4)`` and keypoint offsets
``(N, 10)`` in units of the stride, ``N = (H/s)·(W/s)·2`` (2 anchors per location, consecutive), anchor centres at
``(col·s, row·s)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import DataError, InvalidOptionError
from .base import (
    DEFAULT_MAX_SIDE,
    Detection,
    FaceDetector,
    anchor_centres,
    as_rgb,
    check_max_side,
    check_thresholds,
    input_size_option,
    letterbox,
    onnx_session,
    unscale,
)

__all__ = ["SCRFDDetector", "decode_scrfd"]


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
        max_side: photos whose longer side exceeds this are shrunk first (default 960; ``None``: never), see
            :class:`~.base.FaceDetector`; with the default ``input_size`` the network input is smaller anyway.
    """

    name = "scrfd"
    STRIDES = (8, 16, 32)

    def __init__(self, path: str | os.PathLike[str], input_size: int | Sequence[int] | None = 640,
                 score_threshold: float = 0.5, nms_threshold: float = 0.4, max_faces: int | None = None,
                 upscale: bool = False, threads: int | None = None,
                 max_side: int | None = DEFAULT_MAX_SIDE) -> None:
        self.path = Path(path)
        self.max_side = check_max_side(max_side)
        check_thresholds(score_threshold, nms_threshold)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_faces = max_faces
        self.session = onnx_session(self.path, threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise DataError(f"{self.path}: an SCRFD model has one NCHW input, this one has "
                            f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        fixed_h, fixed_w = inputs[0].shape[2], inputs[0].shape[3]
        self.output_names, self.outputs_by_kind = _scrfd_outputs(self.session, self.path)
        size = input_size_option(input_size, str(self.path))
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
            canvas, scale = letterbox(image, *self.input_size, upscale=self.upscale,
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

    def _detect(self, image: np.ndarray) -> list[Detection]:
        rgb = as_rgb(image)
        blob, scale = self._prepare(rgb)
        outputs = self.session.run(self.output_names, {self.input_name: blob})
        boxes, scores, landmarks = self.decode(outputs, blob.shape[2:])
        boxes, landmarks = unscale(boxes, landmarks, scale)
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
