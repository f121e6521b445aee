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
