"""MTCNN: the cascade's numpy parts against hand-computed answers, and the shared weights on real photos."""

from __future__ import annotations

import os

import numpy as np
import pytest

from facesphere.data.align import ARCFACE_112x112
from facesphere.errors import DataError, FaceSphereError, InvalidOptionError
from facesphere.infer.detectors import (
    build_detector,
    choose_face,
    detect_and_align,
    detector_kind,
    nms,
)
from facesphere.infer.detectors.mtcnn import (
    MODEL_FILES,
    MTCNNDetector,
    crop_patches,
    generate_boxes,
    nms_min,
    pad_boxes,
    pyramid_scales,
    regress,
    square,
)
from tests.helpers import MODELS, glint_crops, lfw_photos, pad_image, require

MTCNN = MODELS / "mtcnn"
SCRFD = MODELS / "scrfd_2.5g_bnkps.onnx"


# ------------------------------------------------------------------------------------------------------------------
# pure numpy parts


def test_pyramid_scales():
    # 250 px, min face 20: m = 12 / 20 = 0.6; 250·0.6·0.709^k = 150, 106.4, 75.4, 53.5, 37.9, 26.9, 19.1, 13.5
    # (>= 12), then 9.6 (< 12)
    scales = pyramid_scales(250, 300)
    np.testing.assert_allclose(scales, 0.6 * 0.709 ** np.arange(8))
    assert pyramid_scales(100, 40, min_face_size=40) == [0.3]  # 40·0.3 = 12 exactly: kept; 8.5 is not
    assert pyramid_scales(10, 300) == []  # shorter than 12 at the first scale (min face 20 -> x0.6)
    assert len(pyramid_scales(250, 250, 20, 0.5)) == 4  # 150, 75, 37.5, 18.75
    with pytest.raises(InvalidOptionError):
        pyramid_scales(100, 100, min_face_size=0)
    with pytest.raises(InvalidOptionError):
        pyramid_scales(100, 100, scale_factor=1.0)


def test_generate_boxes_from_a_synthetic_heat_map():
    probability = np.full((3, 4), 0.1)
    probability[1, 2], probability[2, 0], probability[0, 3] = 0.9, 0.7, 0.5
    offsets = np.zeros((3, 4, 4))
    offsets[1, 2] = [0.1, 0.2, 0.3, 0.4]
    boxes, scores, picked = generate_boxes(probability, offsets, 0.5, 0.6)
    # (row 1, col 2): the 12x12 cell at (2·2, 2·1) = (4, 2) of the half-size image -> (8, 4) .. (32, 28)
    # (row 2, col 0): cell at (0, 4) -> (0, 8) .. (24, 32); row-major order
    np.testing.assert_allclose(boxes, [[8, 4, 32, 28], [0, 8, 24, 32]])
    np.testing.assert_allclose(scores, [0.9, 0.7])
    np.testing.assert_allclose(picked, [[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0]])
    boxes, _, _ = generate_boxes(probability, offsets, (0.5, 0.25), 0.8)  # per-axis scale (sx, sy)
    np.testing.assert_allclose(boxes, [[8, 8, 32, 56]])
    empty = generate_boxes(probability, offsets, 1.0, 0.95)
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,) and empty[2].shape == (0, 4)
    with pytest.raises(DataError, match="do not match"):
        generate_boxes(probability, offsets[:2], 1.0, 0.5)


def test_regress_and_square():
    np.testing.assert_allclose(regress([[10, 20, 30, 60]], [[0.1, -0.05, -0.2, 0.25]]), [[12, 18, 26, 70]])
    np.testing.assert_allclose(square([[10, 20, 30, 60], [0, 0, 10, 4], [5, 5, 9, 9]]),
                               [[0, 20, 40, 60], [0, -3, 10, 7], [5, 5, 9, 9]])


def _slow_nms_min(boxes, scores, threshold):
    def overlap(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
        return w * h / smaller if smaller > 0 else 0.0

    kept = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if all(overlap(boxes[i], boxes[j]) <= threshold for j in kept):
            kept.append(i)
    return kept


def test_nms_min_overlap():
    boxes = np.array([[0, 0, 10, 10], [2, 2, 6, 6], [5, 0, 15, 10], [30, 30, 40, 40]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # box 1 lies inside box 0: intersection 16 = all of the smaller box (IoU only 0.16); box 2 covers half of box 0
    assert nms_min(boxes, scores, 0.7).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2, 3]
    assert nms_min(boxes, scores, 0.4).tolist() == [0, 3]
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(0, 40))
        xy = rng.uniform(0, 60, size=(n, 2))
        random_boxes = np.hstack([xy, xy + rng.uniform(1, 30, size=(n, 2))])
        random_scores = np.round(rng.uniform(size=n), 1)
        assert nms_min(random_boxes, random_scores, 0.6).tolist() == _slow_nms_min(random_boxes.tolist(),
                                                                                    random_scores.tolist(), 0.6)


def test_pad_boxes_at_image_borders():
    # a 10 (H) x 20 (W) image
    boxes = [[-3, 2, 5, 10],             # leaves on the left: 3 columns of padding
             [15.4, 6.6, 24.6, 12.4],    # rounded to x 15..23, y 7..12: leaves at the right and the bottom
             [30, 30, 40, 40],           # misses the image
             [2, 3, 2.2, 3.1]]           # thinner than a pixel: one pixel
    windows, source, target = pad_boxes(boxes, 10, 20)
    np.testing.assert_array_equal(windows, [[-3, 2, 5, 10], [15, 7, 24, 13], [30, 30, 40, 40], [2, 3, 3, 4]])
    np.testing.assert_array_equal(source, [[0, 2, 5, 10], [15, 7, 20, 10], [20, 10, 20, 10], [2, 3, 3, 4]])
    np.testing.assert_array_equal(target, [[3, 0, 8, 8], [0, 0, 5, 3], [0, 0, 0, 0], [0, 0, 1, 1]])


def test_crop_patches_pad_with_zeros():
    image = (np.arange(10 * 20 * 3) % 251 + 1).astype(np.uint8).reshape(10, 20, 3)  # no zero pixel
    patches, windows = crop_patches(image, np.array([[-2, -1, 4, 5], [17, 6, 23, 12], [50, 50, 56, 56]]), 6)
    assert patches.shape == (3, 6, 6, 3) and patches.dtype == np.uint8
    np.testing.assert_array_equal(windows[0], [-2, -1, 4, 5])
    # window the size of the patch: no resampling, the image where it lies inside, zeros elsewhere
    np.testing.assert_array_equal(patches[0, 1:, 2:], image[0:5, 0:4])
    assert not patches[0, 0].any() and not patches[0, :, :2].any()
    np.testing.assert_array_equal(patches[1, :4, :3], image[6:10, 17:20])
    assert not patches[1, 4:].any() and not patches[1, :, 3:].any()
    assert not patches[2].any()
    resized, _ = crop_patches(image, np.array([[0, 0, 12, 10]]), 4)  # squashed to 4x4
    assert resized.shape == (1, 4, 4, 3)


# ------------------------------------------------------------------------------------------------------------------
# building the detector


@pytest.fixture(scope="module")
def mtcnn():
    require(*(MTCNN / name for name in MODEL_FILES), modules=("onnxruntime",))
    return build_detector(MTCNN)


@pytest.fixture(scope="module")
def scrfd():
    require(SCRFD, modules=("onnxruntime",))
    return build_detector(SCRFD)


def test_build_detector_on_an_mtcnn_folder(mtcnn, tmp_path):
    assert isinstance(mtcnn, MTCNNDetector) and detector_kind(MTCNN) == "mtcnn"
    assert mtcnn.thresholds == (0.6, 0.7, 0.7)
    for name in MODEL_FILES[:2]:  # pnet and rnet, no onet
        os.symlink(MTCNN / name, tmp_path / name)
    with pytest.raises(DataError, match=r"missing: onet\.onnx"):
        build_detector(tmp_path)
    with pytest.raises(DataError, match=r"onet\.onnx"):
        MTCNNDetector(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"missing: pnet\.onnx, rnet\.onnx, onet\.onnx"):
        build_detector(empty)
    with pytest.raises(InvalidOptionError, match="unknown option"):
        build_detector(MTCNN, input_size=640)
    assert build_detector(MTCNN, score_threshold=0.9, min_face_size=40).thresholds == (0.6, 0.7, 0.9)
    explicit = MTCNNDetector(None, pnet=MTCNN / "pnet.onnx", rnet=MTCNN / "rnet.onnx", onet=MTCNN / "onet.onnx")
    assert explicit.path == MTCNN
    with pytest.raises(InvalidOptionError, match="pnet="):
        MTCNNDetector(None, pnet=MTCNN / "pnet.onnx")
    for bad in ({"thresholds": (0.6, 0.7)}, {"thresholds": (0.6, 0.7, 1.5)}, {"min_face_size": -1},
                {"scale_factor": 1.2}, {"max_faces": 0}):
        with pytest.raises(InvalidOptionError):
            MTCNNDetector(MTCNN, **bad)
    (tmp_path / "onet.onnx").write_text("not a model")
    with pytest.raises(DataError, match=r"onet\.onnx: onnxruntime cannot load"):
        build_detector(tmp_path)


def test_missing_onnxruntime_is_named(monkeypatch):
    require(MTCNN, modules=("onnxruntime",))
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(FaceSphereError, match=r"facesphere\[onnx\]"):
        MTCNNDetector(MTCNN)


# ------------------------------------------------------------------------------------------------------------------
# the shared weights on real photos


def test_lfw_faces_and_landmarks_agree_with_scrfd(mtcnn, scrfd):
    distances = []
    for photo in lfw_photos(10):
        faces = mtcnn.detect(photo)
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
        face = choose_face(faces, photo.shape, "central")
        reference = choose_face(scrfd.detect(photo), photo.shape, "central")
        assert face is not None and reference is not None
        cx, cy = face.centre
        assert abs(cx - 125) < 40 and abs(cy - 125) < 50 and face.score > 0.9
        assert np.abs(face.box - reference.box).max() < 30
        left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
        distances.append(np.linalg.norm(face.landmarks - reference.landmarks, axis=1).mean())
    # measured: median 1.75 px, 95th percentile 3.5 px on 200 random LFW photos
    assert np.mean(distances) < 4.0 and max(distances) < 8.0


def test_aligning_with_mtcnn_landmarks(mtcnn, scrfd):
    """detect -> align with MTCNN; SCRFD finds the eyes of the aligned crop near the ArcFace template's."""
    eyes = []
    for photo in lfw_photos(4):
        crop, face = detect_and_align(photo, mtcnn, choose="central")
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8 and face is not None
        again = scrfd.detect(pad_image(crop, 56))
        assert again
        eyes.append(np.linalg.norm(again[0].landmarks[:2] - 56 - ARCFACE_112x112[:2], axis=1).mean())
    assert np.median(eyes) < 4.5 and max(eyes) < 8.0


def test_colour_crops_land_on_the_template_and_want_rgb(mtcnn):
    """Aligned Glint crops, padded: the landmarks fall back on the ArcFace template (the transposed input and the
    x-first output layout are right), and P-Net is surer of the face fed RGB than BGR (the colour order)."""
    errors, rgb, bgr = [], [], []
    for crop in glint_crops(8):
        canvas = pad_image(crop, 56)
        face = choose_face(mtcnn.detect(canvas), canvas.shape, "central")
        assert face is not None
        errors.append(np.linalg.norm(face.landmarks - 56 - ARCFACE_112x112, axis=1).mean())
        small = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(canvas).resize((56, 56)))
        rgb.append(mtcnn.run_pnet(small)[0].max())
        bgr.append(mtcnn.run_pnet(np.ascontiguousarray(small[:, :, ::-1]))[0].max())
    assert np.median(errors) < 4.5 and max(errors) < 8.0
    assert np.mean(rgb) > np.mean(bgr)


def test_two_faces_and_no_face(mtcnn):
    crops = glint_crops(2)
    canvas = np.zeros((320, 480, 3), np.uint8)
    canvas[100:212, 40:152] = crops[0]
    big = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(crops[1]).resize((168, 168)))
    canvas[60:228, 260:428] = big
    faces = mtcnn.detect(canvas)
    assert len(faces) == 2
    assert choose_face(faces, canvas.shape, "largest").centre[0] > 240
    assert len(MTCNNDetector(MTCNN, max_faces=1).detect(canvas)) == 1
    assert mtcnn.detect(np.full((250, 250, 3), 128, np.uint8)) == []
    assert mtcnn.detect(np.full((120, 90), 128, np.uint8)) == []  # grey input
    assert mtcnn.detect(np.zeros((10, 10, 3), np.uint8)) == []  # smaller than the smallest face
    assert detect_and_align(np.full((64, 64), 128, np.uint8), mtcnn) == (None, None)
    with pytest.raises(DataError, match="uint8"):
        mtcnn.detect(np.zeros((50, 50, 3), np.float32))
