"""Every face in a photo: FaceRecognizer.detect / .faces, `facesphere detect --draw` (picture + faces.json), and a
group photo named by a gallery (`detect --gallery`, `gallery search --all-faces`, `embed --all-faces`). The group
photo is built from LFW photos (tests.helpers.group_photo); these tests skip without the shared data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import facesphere as fs
from facesphere.cli import main
from facesphere.errors import InvalidOptionError
from facesphere.infer.draw import draw_faces
from facesphere.infer.faces import Face
from tests.helpers import DATA, GROUP_PEOPLE, MODELS, group_photo, require

SCRFD = MODELS / "scrfd_2.5g_bnkps.onnx"
MOBILEFACENET = MODELS / "mobilefacenet_128d.onnx"
SFACE = MODELS / "face_recognition_sface_2021dec_int8bq.onnx"


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    require(SCRFD, MOBILEFACENET, modules=("onnxruntime",))
    path = tmp_path_factory.mktemp("group") / "group.png"
    Image.fromarray(group_photo()).save(path)
    return path


@pytest.fixture(scope="module")
def recognizer(group):
    return fs.FaceRecognizer.from_path(MOBILEFACENET, detector=SCRFD)


def test_every_face_with_box_landmarks_crop_and_embedding(group, recognizer):
    faces = recognizer.detect(group)
    assert len(faces) == len(GROUP_PEOPLE)
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0.5 < face.score <= 1 and x2 - x1 > 60 and face.crop.shape == (112, 112, 3)
        assert face.embedding is None and face.landmarks.shape == (5, 2)
        assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2))
    rows = sorted(int((face.box[1] + face.box[3]) / 2 // 200) for face in faces)
    assert rows == [0, 0, 0, 1, 1, 1]  # three faces in each row of the canvas
    embedded = recognizer.faces(group)
    features = np.stack([f.embedding for f in embedded])
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
    sims = features @ features.T
    assert sims[~np.eye(len(sims), dtype=bool)].max() < 0.5  # six different people
    with pytest.raises(InvalidOptionError, match="detector"):
        fs.FaceRecognizer.from_path(MOBILEFACENET).detect(group)


def test_drawing_marks_every_box():
    image = np.full((200, 300, 3), 128, np.uint8)
    faces = [Face(np.array([20.0, 30.0, 120.0, 150.0]), 0.9, np.tile([[60.0, 80.0]], (5, 1))),
             Face(np.array([160.0, 40.0, 260.0, 170.0]), 0.8, None, identity=None, match_score=0.1),
             Face(None, None, None, how="aligned")]
    picture = np.asarray(draw_faces(image, faces))
    assert picture.shape == image.shape
    assert (picture[100, 20] != 128).any() and (picture[100, 160] != 128).any()  # both left edges drawn
    assert tuple(picture[100, 260]) == (230, 40, 40)  # an unknown face: red


def test_detect_command_draws_and_writes_faces_json(group, tmp_path, capsys):
    out = tmp_path / "drawn"
    assert main(["detect", str(group), "--detector", str(SCRFD), "--draw", str(out), "--quiet"]) == 0
    assert f"{len(GROUP_PEOPLE)} face(s)" in capsys.readouterr().out
    (record,) = json.loads((out / "faces.json").read_text())
    assert record["image"] == str(group) and len(record["faces"]) == len(GROUP_PEOPLE)
    assert all(len(f["box"]) == 4 and len(f["landmarks"]) == 5 and f["score"] > 0.5 for f in record["faces"])
    drawn = np.asarray(Image.open(record["drawn"]).convert("RGB")).astype(int)
    original = np.asarray(Image.open(group).convert("RGB")).astype(int)
    for face in record["faces"]:  # every face boxed: its box's left edge is painted
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        column = drawn[y1 + 5:y2 - 5, x1]
        assert np.abs(column - original[y1 + 5:y2 - 5, x1]).mean() > 40
    assert main(["detect", str(group), "--quiet"]) == 2  # no detector
    assert main(["detect", str(tmp_path / "missing.jpg"), "--detector", str(SCRFD)]) == 2
    assert "missing.jpg" in capsys.readouterr().err


def test_a_group_photo_searched_in_a_gallery_names_everyone(group, tmp_path, capsys):
    """SFace at its documented LFW threshold names the three enrolled people and calls the three others unknown."""
    require(SFACE, modules=("cv2",))
    lfw = DATA / "lfw" / "images"
    people = tmp_path / "people"
    enrolled = GROUP_PEOPLE[:3]
    for name in enrolled:  # enrol another photo of three of the six (not the one in the group photo)
        photos = sorted((lfw / name).glob("*.jpg"))
        if len(photos) < 2:
            pytest.skip(f"{name} has one LFW photo here")
        (people / name).mkdir(parents=True)
        (people / name / photos[1].name).write_bytes(photos[1].read_bytes())
    gallery = tmp_path / "g"
    assert main(["gallery", "add", str(gallery), str(people), "--model", str(SFACE), "--detector",
                 str(SCRFD), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["gallery", "search", str(gallery), str(group), "--all-faces", "--json", "--quiet"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(GROUP_PEOPLE) and all(len(line["box"]) == 4 for line in lines)
    assert sorted(line["identity"] for line in lines if line["identity"]) == sorted(enrolled)
    assert all(line["score"] is not None for line in lines)  # unknown faces keep their best score
    out = tmp_path / "named"
    assert main(["detect", str(group), "--gallery", str(gallery), "--draw", str(out), "--quiet"]) == 0
    (record,) = json.loads((out / "faces.json").read_text())
    assert sorted(f["identity"] for f in record["faces"] if f["identity"]) == sorted(enrolled)
    # embed --all-faces: one row per face, each with its box
    emb = tmp_path / "emb.npy"
    assert main(["embed", str(MOBILEFACENET), str(group), "--detector", str(SCRFD), "--all-faces", "--out", str(emb),
                 "--quiet"]) == 0
    listing = json.loads(emb.with_suffix(".json").read_text())
    assert np.load(emb).shape == (len(GROUP_PEOPLE), 128) and all(len(f["box"]) == 4 for f in listing["faces"])
