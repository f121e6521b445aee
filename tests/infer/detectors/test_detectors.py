"""Face detectors: NMS and SCRFD decoding against hand-made answers, and both real detectors on real photos."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from facesphere.data.align import ARCFACE_112x112, align_face, get_template
from facesphere.errors import DataError, InvalidOptionError, UnknownNameError
from facesphere.infer.detectors import (
    Detection,
    anchor_centres,
    build_detector,
    choose_face,
    decode_scrfd,
    detect_and_align,
    detector_kind,
    nms,
)
from tests.helpers import DATA, MODELS, glint_crops, lfw_photos, pad_image, require

SCRFD = MODELS / "scrfd_2.5g_bnkps.onnx"
YUNET = MODELS / "face_detection_yunet_2023mar_int8bq.onnx"


# ------------------------------------------------------------------------------------------------------------------
# pure numpy parts


def _slow_nms(boxes, scores, threshold):
    """Reference: textbook greedy NMS with plain Python loops."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(iou(boxes[i], boxes[j]) <= threshold for j in kept):
            kept.append(i)
    return kept


def test_nms_matches_slow_reference():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(0, 60))
        xy = rng.uniform(0, 100, size=(n, 2))
        wh = rng.uniform(1, 40, size=(n, 2))
        boxes = np.hstack([xy, xy + wh])
        scores = np.round(rng.uniform(0, 1, size=n), 1)  # ties on purpose
        threshold = float(rng.uniform(0.1, 0.7))
        assert nms(boxes, scores, threshold).tolist() == _slow_nms(boxes.tolist(), scores.tolist(), threshold)


def test_nms_hand_case():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 5]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # IoU(3, 0) = 50 / 100 = 0.5, IoU(3, 1) = 45 / 105 = 0.43, IoU(0, 1) = 90 / 110 = 0.82, box 2 is apart
    assert nms(boxes, scores, 0.6).tolist() == [3, 0, 2]
    assert nms(boxes, scores, 0.45).tolist() == [3, 1, 2]
    assert nms(boxes, scores, 0.4).tolist() == [3, 2]


def test_anchor_centres():
    centres = anchor_centres(16, 24, 8, anchors=2)
    assert centres.shape == (2 * 3 * 2, 2)
    np.testing.assert_array_equal(centres[:6], [[0, 0], [0, 0], [8, 0], [8, 0], [16, 0], [16, 0]])
    np.testing.assert_array_equal(centres[6], [0, 8])


def test_decode_scrfd_synthetic_outputs():
    """A 64x96 (HxW) input: one anchor of the stride-16 map fires; its box and keypoints are known by hand."""
    height, width = 64, 96
    scores, distances, keypoints = [], [], []
    for stride in (8, 16, 32):
        n = (height // stride) * (width // stride) * 2
        scores.append(np.full((n, 1), 0.1, np.float32))
        distances.append(np.ones((n, 4), np.float32))
        keypoints.append(np.zeros((n, 10), np.float32))
    # stride 16: 4 rows x 6 cols x 2 anchors; row 2, col 1, second anchor -> centre (16, 32)
    index = (2 * 6 + 1) * 2 + 1
    scores[1][index] = 0.9
    distances[1][index] = [1, 2, 3, 0.5]
    keypoints[1][index] = [-1, -1, 1, -1, 0, 0, -1, 1, 1, 1]
    boxes, kept, landmarks = decode_scrfd(scores, distances, keypoints, (height, width), 0.5)
    np.testing.assert_allclose(kept, [0.9], rtol=1e-6)
    np.testing.assert_allclose(boxes, [[16 - 16, 32 - 32, 16 + 48, 32 + 8]])
    np.testing.assert_allclose(landmarks[0], [[0, 16], [32, 16], [16, 32], [0, 48], [32, 48]])
    assert decode_scrfd(scores, distances, keypoints, (height, width), 0.95)[1].size == 0
    with pytest.raises(DataError, match="anchors"):
        decode_scrfd(scores, distances, keypoints, (height + 32, width), 0.5)


def _face(x, y, size, score=0.9):
    box = np.array([x, y, x + size, y + size], float)
    return Detection(box, score, ARCFACE_112x112 * size / 112 + [x, y])


def test_choose_face():
    shape = (200, 200, 3)
    small_central, big_corner = _face(80, 80, 40, 0.99), _face(0, 0, 70, 0.8)
    cut_by_border = _face(-60, 60, 100, 0.7)  # 100x100 box but only 40x100 inside the image
    faces = [small_central, big_corner, cut_by_border]
    assert choose_face(faces, shape, "largest") is big_corner
    assert choose_face(faces, shape, "central") is small_central
    assert choose_face(faces, shape, "score") is small_central
    assert choose_face(faces, shape, "largest", min_score=0.9) is small_central
    assert choose_face([], shape) is None
    with pytest.raises(UnknownNameError):
        choose_face(faces, shape, "biggest")


class _FixedDetector:
    def __init__(self, faces):
        self.faces = faces

    def detect(self, image):
        return list(self.faces)


def test_detect_and_align_with_a_fixed_detector():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(150, 160), dtype=np.uint8)
    face = _face(30, 20, 112)
    crop, found = detect_and_align(image, _FixedDetector([face]))
    assert found is face
    np.testing.assert_array_equal(crop[:, :, 0], image[20:132, 30:142])  # the identity warp of that window
    assert crop.shape == (112, 112, 3)
    assert detect_and_align(image, _FixedDetector([]), template="sphereface") == (None, None)
    crop, _ = detect_and_align(image, _FixedDetector([face]), template="sphereface")
    assert crop.shape == (112, 96, 3)


# ------------------------------------------------------------------------------------------------------------------
# real models on real photos


@pytest.fixture(scope="module")
def scrfd():
    require(SCRFD, modules=("onnxruntime",))
    return build_detector(SCRFD)


@pytest.fixture(scope="module")
def yunet():
    require(YUNET, modules=("cv2",))
    return build_detector(YUNET)


@pytest.mark.parametrize("which", ["scrfd", "yunet"])
def test_landmarks_on_aligned_crops_land_on_the_template(which, request):
    """Glint crops are aligned to the ArcFace template: detected on a padded canvas, the landmarks fall back on it."""
    detector = request.getfixturevalue(which)
    errors = []
    for crop in glint_crops(12):
        faces = detector.detect(pad_image(crop, 56))
        assert faces, "no face on an aligned crop"
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
        errors.append(np.linalg.norm(faces[0].landmarks - 56 - ARCFACE_112x112, axis=1))
    errors = np.array(errors)  # (images, 5) pixel distances
    assert np.median(errors[:, :2]) < 3.0  # eyes
    assert np.median(errors) < 4.0  # all five (mouth corners sit a few px off in both detectors' conventions)
    assert errors.max() < 12.0


def test_detectors_agree_on_lfw_photos(scrfd, yunet):
    distances = []
    for photo in lfw_photos(12):
        a = choose_face(scrfd.detect(photo), photo.shape, "central")
        b = choose_face(yunet.detect(photo), photo.shape, "central")
        assert a is not None and b is not None
        distances.append(np.linalg.norm(a.landmarks - b.landmarks, axis=1))
        # a roughly centred face, landmarks in their order on an upright face
        cx, cy = a.centre
        assert abs(cx - 125) < 40 and abs(cy - 125) < 50
        left_eye, right_eye, nose, left_mouth, right_mouth = a.landmarks
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert np.median(distances) < 5.0


def test_aligned_lfw_faces_redetect_where_the_transform_says(scrfd):
    """Detect -> align raw LFW photos; detecting again on the aligned crop finds the landmarks where the similarity
    transform sent them (the warp is right), and the eyes near the template (the fit is right)."""
    from facesphere.data.align import estimate_similarity, transform_points

    moved, eyes = [], []
    for photo in lfw_photos(8):
        crop, face = detect_and_align(photo, scrfd, choose="central")
        assert crop.shape == (112, 112, 3) and face is not None
        mapped = transform_points(face.landmarks, estimate_similarity(face.landmarks, ARCFACE_112x112))
        again = scrfd.detect(pad_image(crop, 56))
        assert again
        landmarks = again[0].landmarks - 56
        moved.append(np.linalg.norm(landmarks - mapped, axis=1).mean())
        eyes.append(np.linalg.norm(landmarks[:2] - ARCFACE_112x112[:2], axis=1).mean())
    assert np.median(moved) < 2.0
    assert np.median(eyes) < 4.5 and max(eyes) < 8.0


def test_orl_faces_found_upright(scrfd, yunet):
    paths = sorted((DATA / "orl").glob("s*/1.pgm"))[:6]
    if not paths:
        pytest.skip("ORL not present")
    from facesphere.data.image import read_image

    for path in paths:
        image = read_image(path)[:, :, 0]  # grey input
        for detector in (scrfd, yunet):
            crop, face = detect_and_align(image, detector)
            assert face is not None, f"{detector.name}: no face in {path}"
            assert face.landmarks[0, 0] < face.landmarks[1, 0] < image.shape[1]


def test_yunet_wants_bgr(yunet):
    """The colour convention: YuNet scores higher when the network sees BGR (what the detector feeds it)."""
    given, swapped = [], []
    for crop in glint_crops(16):
        canvas = pad_image(crop, 56)
        given.append(max((f.score for f in yunet.detect(canvas)), default=0.0))
        swapped.append(max((f.score for f in yunet.detect(canvas[:, :, ::-1])), default=0.0))
    assert np.mean(given) > np.mean(swapped)


def test_several_faces_and_empty_images(scrfd):
    crops = glint_crops(2)
    canvas = np.zeros((320, 480, 3), np.uint8)
    canvas[100:212, 40:152] = crops[0]  # 112 px face, off-centre
    big = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(crops[1]).resize((168, 168)))
    canvas[60:228, 260:428] = big  # a larger face
    faces = scrfd.detect(canvas)
    assert len(faces) == 2
    largest = choose_face(faces, canvas.shape, "largest")
    assert largest.centre[0] > 240
    assert scrfd.detect(np.zeros((200, 300, 3), np.uint8)) == []
    assert detect_and_align(np.full((64, 64), 128, np.uint8), scrfd) == (None, None)


def test_scrfd_input_sizes_agree(scrfd):
    photo = lfw_photos(1)[0]
    reference = choose_face(scrfd.detect(photo), photo.shape, "central")
    for options in ({"input_size": None}, {"input_size": (320, 256)}, {"input_size": 640, "upscale": True}):
        other = choose_face(build_detector(SCRFD, **options).detect(photo), photo.shape, "central")
        assert np.abs(other.landmarks - reference.landmarks).max() < 6.0, options


def test_build_detector_kinds_and_errors(tmp_path):
    require(SCRFD, YUNET, modules=("onnxruntime", "cv2"))
    assert detector_kind(SCRFD) == "scrfd" and detector_kind(YUNET) == "yunet"
    renamed = tmp_path / "model.onnx"
    shutil.copy(SCRFD, renamed)
    assert detector_kind(renamed) == "scrfd"  # recognised from the graph's outputs
    with pytest.raises(DataError, match="no such"):
        build_detector(tmp_path / "missing.onnx")
    recogniser = MODELS / "mobilefacenet_128d.onnx"
    if recogniser.is_file():
        with pytest.raises(DataError, match="not a supported face detector"):
            build_detector(recogniser)
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(DataError, match="not a supported face detector"):
        build_detector(junk)
    with pytest.raises(InvalidOptionError, match="unknown option"):
        build_detector(SCRFD, top_k=3)
    with pytest.raises(InvalidOptionError, match="multiples of 32"):
        build_detector(SCRFD, input_size=100)
    with pytest.raises(InvalidOptionError):
        build_detector(YUNET, score_threshold=1.5)
    detector = _FixedDetector([])
    assert build_detector(detector) is detector


def test_detector_input_errors(scrfd):
    with pytest.raises(DataError, match="uint8"):
        scrfd.detect(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(DataError, match="shape"):
        scrfd.detect(np.zeros((50, 50, 2), np.uint8))


def test_sphereface_template_from_detection(scrfd):
    photo = lfw_photos(1)[0]
    crop, face = detect_and_align(photo, scrfd, template="sphereface")
    assert crop.shape == (112, 96, 3)
    np.testing.assert_array_equal(crop, align_face(np.repeat(photo[:, :, :1], 3, 2), face.landmarks,
                                                   get_template("sphereface")))


def test_missing_optional_dependencies_are_named(monkeypatch):
    import sys

    from facesphere.errors import FaceSphereError
    from facesphere.infer.detectors import SCRFDDetector, YuNetDetector

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(FaceSphereError, match=r"facesphere\[onnx\]"):
        SCRFDDetector(SCRFD)
    with pytest.raises(FaceSphereError, match=r"facesphere\[onnx\]"):
        YuNetDetector(YUNET)


def test_every_detector_caps_the_photo_side_and_maps_faces_back():
    from facesphere.infer.detectors.base import DEFAULT_MAX_SIDE, Detection, FaceDetector

    class Recorder(FaceDetector):
        def __init__(self, max_side=DEFAULT_MAX_SIDE):
            self.max_side = max_side
            self.seen = None

        def _detect(self, image):
            self.seen = image.shape
            h, w = image.shape[:2]
            return [Detection(np.array([w / 4, h / 4, w / 2, h / 2]), 0.9, np.tile([[w / 3, h / 3]], (5, 1)))]

    big = np.zeros((1500, 3000, 3), np.uint8)
    detector = Recorder()
    (face,) = detector.detect(big)
    assert detector.seen[:2] == (480, 960)  # longer side capped at 960, aspect ratio kept
    np.testing.assert_allclose(face.box, [750, 375, 1500, 750])  # back in the photo's pixels
    np.testing.assert_allclose(face.landmarks[0], [1000, 500])
    uncapped = Recorder(max_side=None)
    uncapped.detect(big)
    assert uncapped.seen[:2] == (1500, 3000)
    small = Recorder()
    small.detect(np.zeros((250, 250), np.uint8))
    assert small.seen == (250, 250, 3)


def test_yunet_finds_a_large_face_in_a_large_photo():
    """Shrinking large photos before YuNet (default max side 960): the face of an LFW photo enlarged to 2000 px."""
    require(YUNET, DATA / "lfw" / "images", modules=("cv2",))
    from PIL import Image

    photo = np.asarray(Image.fromarray(lfw_photos(1)[0]).resize((2000, 2000), Image.BILINEAR))
    faces = build_detector(YUNET).detect(photo)
    assert faces, "no face found in the enlarged photo"
    best = max(faces, key=lambda d: d.score)
    assert 600 < best.centre[0] < 1400 and 600 < best.centre[1] < 1400 and best.width > 400  # in photo pixels
    with pytest.raises(InvalidOptionError, match="max_side"):
        build_detector(YUNET, max_side=5)
