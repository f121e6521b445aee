"""OpenCV Zoo YuNet, run by ``cv2.FaceDetectorYN`` (OpenCV decodes and applies NMS).

Input convention: BGR, raw 0..255, at each image's own size, after photos larger than ``max_side`` (960 px by
default) are shrunk: at full size YuNet misses large faces in large photos and its memory grows with the photo.
onnxruntime loads the block-quantised ``int8bq`` graph but fails to run it, so YuNet needs OpenCV.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ...errors import DataError, FaceSphereError
from .base import DEFAULT_MAX_SIDE, ONNX_EXTRA, Detection, FaceDetector, as_rgb, check_max_side, check_thresholds

__all__ = ["YuNetDetector"]


class YuNetDetector(FaceDetector):
    """OpenCV Zoo YuNet (``face_detection_yunet_2023mar*.onnx``) through ``cv2.FaceDetectorYN`` (OpenCV 4.8+).

    OpenCV runs the network at each image's own size (capped at ``max_side``) and does the decoding and NMS itself.
    One OpenCV network object is shared: calls from several threads take turns (a lock). (onnxruntime loads the
    block-quantised ``*_int8bq`` graph but cannot run it, so OpenCV is the one backend.)

    Args:
        path: the ONNX file.
        score_threshold: minimum face score (OpenCV Zoo's demo uses 0.9; 0.6 keeps harder faces).
        nms_threshold: NMS IoU threshold.
        max_faces: keep at most this many faces (best first); ``None``: all.
        top_k: candidates kept before NMS.
        max_side: photos whose longer side exceeds this are shrunk first (default 960; ``None``: never).
    """

    name = "yunet"

    def __init__(self, path: str | os.PathLike[str], score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 max_faces: int | None = None, top_k: int = 5000, max_side: int | None = DEFAULT_MAX_SIDE) -> None:
        self.path = Path(path)
        self.max_side = check_max_side(max_side)
        self._lock = threading.Lock()
        check_thresholds(score_threshold, nms_threshold)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_faces = max_faces
        try:
            import cv2
        except ImportError:
            raise FaceSphereError(f"{self.path}: the YuNet detector runs in OpenCV ({ONNX_EXTRA})") from None
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

    def _detect(self, image: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(as_rgb(image)[:, :, ::-1])  # YuNet is fed BGR, raw 0..255
        size = (bgr.shape[1], bgr.shape[0])
        with self._lock:
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
