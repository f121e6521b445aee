"""facesphere.infer.crops: aligned crops as given, photos detected and aligned, the no-face fallback."""

from __future__ import annotations

import numpy as np

from facesphere.infer.crops import CropPreparer, central_crop


def test_crop_preparer_with_a_detector(monkeypatch):
    import facesphere.infer.crops as crops

    calls = []

    def fake_detect_and_align(image, detector, template="arcface", **kw):
        calls.append((image.shape, detector, template))
        if image[0, 0, 0] == 0:
            return None, None
        return np.full((112, 112, 3), 7, np.uint8), object()

    monkeypatch.setattr(crops, "detect_and_align", fake_detect_and_align)
    prep = CropPreparer((112, 112), detector="DET")
    aligned = np.zeros((112, 112, 3), np.uint8)
    assert prep(aligned, "a") is aligned  # already an aligned crop: untouched, no detection
    assert prep(np.full((250, 250, 3), 9, np.uint8), "b")[0, 0, 0] == 7
    fallback = prep(np.zeros((250, 200, 3), np.uint8), "c")
    assert fallback.shape == (112, 112, 3)
    assert prep.summary() == {"aligned_as_given": 1, "detected": 1, "no_face": 1}
    assert calls[0] == ((250, 250, 3), "DET", (112, 112))  # the template of a 112x112 model: ArcFace's
    # the central-crop fallback: the middle of the image
    img = np.zeros((200, 200, 3), np.uint8)
    img[50:150, 50:150] = 255
    assert central_crop(img, (112, 112)).min() == 255


class _Finds:
    """A stand-in detector: one face in images whose top-left pixel is bright, none otherwise."""

    max_side = None

    def detect(self, image):
        from facesphere.infer.detectors import Detection

        if image[0, 0, 0] < 128:
            return []
        points = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]]) * 2
        return [Detection(np.array([20.0, 20.0, 200.0, 220.0]), 0.9, points),
                Detection(np.array([0.0, 0.0, 30.0, 30.0]), 0.6, points / 4)]


def test_no_face_policies():
    import pytest

    from facesphere.errors import DataError, InvalidOptionError, NoFaceError

    photo = np.zeros((240, 200, 3), np.uint8)
    photo[60:180, 50:150] = 200
    for policy, expected in (("crop", central_crop(photo, (112, 112))), ("resize", None)):
        prep = CropPreparer((112, 112), _Finds(), no_face=policy)
        prepared = prep.prepare(photo, "p.jpg")
        assert prepared.how == policy and prepared.crop.shape == (112, 112, 3) and prep.no_face == 1
        if expected is not None:
            np.testing.assert_array_equal(prepared.crop, expected)
    resized = CropPreparer((112, 112), _Finds(), no_face="resize").prepare(photo, "p.jpg").crop
    assert resized[0, 0, 0] == 0 and resized[56, 56, 0] == 200  # the whole photo, not its middle
    assert CropPreparer((112, 112), _Finds(), no_face="skip")(photo, "p.jpg") is None
    with pytest.raises(NoFaceError, match="p.jpg: no face found"):
        CropPreparer((112, 112), _Finds(), no_face="fail")(photo, "p.jpg")
    # defaults: crop for evaluation, skip for embedding; without a detector: refused, unless a policy is chosen
    assert CropPreparer((112, 112), _Finds()).no_face_policy == "crop"
    assert CropPreparer((112, 112), _Finds(), purpose="embed").no_face_policy == "skip"
    with pytest.raises(DataError, match="--no-face resize"):
        CropPreparer((112, 112))(photo, "p.jpg")
    assert CropPreparer((112, 112), no_face="resize").prepare(photo, "p.jpg").how == "resize"  # cropped faces
    with pytest.raises(InvalidOptionError):
        CropPreparer((112, 112), no_face="maybe")
    # a detected photo: the chosen face aligned; every face with prepare_all
    bright = np.full((240, 240, 3), 200, np.uint8)
    one = CropPreparer((112, 112), _Finds()).prepare(bright, "b.jpg")
    assert one.how == "detected" and one.detection.score == 0.9
    every = CropPreparer((112, 112), _Finds()).prepare_all(bright, "b.jpg")
    assert [p.detection.score for p in every] == [0.9, 0.6] and all(p.crop.shape == (112, 112, 3) for p in every)
    assert CropPreparer((112, 112), _Finds(), min_score=0.7).prepare_all(bright, "b.jpg")[0].detection.score == 0.9
    assert len(CropPreparer((112, 112), _Finds(), min_score=0.7).prepare_all(bright, "b.jpg")) == 1
