"""FaceRecognizer on aligned crops (the detector path is tested with the real models below)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import facesphere as fs
from facesphere.errors import DataError, InvalidOptionError
from facesphere.infer.recognizer import NoFaceError, to_rgb_array
from tests.helpers import DATA, MODELS


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Three aligned synthetic crops on disk: two of identity 0, one of identity 1."""
    from facesphere.data.synthetic import SyntheticConfig, SyntheticFaceDataset

    dataset = SyntheticFaceDataset(SyntheticConfig(seed=3, num_identities=2, images_per_identity=2))
    folder = tmp_path_factory.mktemp("faces")
    paths = []
    for i in (0, 1, 2):
        path = folder / f"{i}.png"
        Image.fromarray(dataset.image(i)).save(path)
        paths.append(path)
    return paths


def test_embed_accepts_paths_pil_and_arrays(tiny_run, faces):
    rec = fs.FaceRecognizer.from_path(tiny_run)
    array = np.asarray(Image.open(faces[0]).convert("RGB"))
    one = rec.embed(faces[0])
    assert one.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(rec.embed(Image.open(faces[0])), one, atol=1e-6)
    np.testing.assert_allclose(rec.embed(array), one, atol=1e-6)
    batch = rec.embed(faces)
    assert batch.shape == (3, 32)
    np.testing.assert_allclose(batch[0], one[0], atol=1e-6)
    # the recogniser's embeddings are the embedder's flip-summed ones
    np.testing.assert_allclose(batch, rec.embedder.embed(np.stack([to_rgb_array(p) for p in faces])), atol=1e-6)


def test_verify_is_the_cosine_and_the_threshold_decides(tiny_run, faces):
    rec = fs.FaceRecognizer.from_path(tiny_run, threshold=0.5)
    features = rec.embed(faces)
    result = rec.verify(faces[0], faces[1])
    assert result.score == pytest.approx(float(features[0] @ features[1]), abs=1e-6)
    assert result.threshold == 0.5 and result.same == (result.score >= 0.5)
    assert rec.verify(faces[0], faces[1], threshold=result.score).same
    assert not rec.verify(faces[0], faces[1], threshold=result.score + 1e-4).same


def test_search_in_memory_gallery_is_per_identity(tiny_run, faces):
    rec = fs.FaceRecognizer.from_path(tiny_run)
    gallery = rec.embed(faces)
    identities = ["a", "a", "b"]
    matches = rec.search(faces[0], (gallery, identities), k=5)
    assert [m.identity for m in matches] == ["a", "b"]  # one hit per identity, best first
    assert matches[0].score == pytest.approx(1.0, abs=1e-5) and matches[0].index == 0
    assert matches[1].index == 2


def test_unaligned_input_without_detector_is_refused(tiny_run):
    rec = fs.FaceRecognizer.from_path(tiny_run)
    with pytest.raises(DataError, match="detector"):
        rec.embed(np.zeros((250, 250, 3), np.uint8))
    with pytest.raises(DataError, match="uint8"):
        rec.embed(np.zeros((112, 112, 3), np.float32))
    with pytest.raises(InvalidOptionError):
        rec.embed(np.zeros((112, 112, 3), np.uint8), on_missing="skip")


class _NoFaces:
    def detect(self, image):
        return []


def test_images_without_faces(tiny_run, faces, tmp_path):
    rec = fs.FaceRecognizer(fs.load_embedder(tiny_run), _NoFaces())
    photos = []
    for path in faces[:2]:  # photos (not of the model's input size) go to the detector, which finds nothing
        photos.append(tmp_path / path.name)
        Image.open(path).resize((150, 150)).save(photos[-1])
    with pytest.raises(NoFaceError, match="0.png"):
        rec.embed(photos[0])
    rows = rec.embed(photos, on_missing="nan")
    assert rows.shape[0] == 2 and np.isnan(rows).all()
    # an aligned crop of the model's input size is taken as given, even with a detector
    assert np.isfinite(rec.embed(faces[0])).all()


def test_real_pipeline_on_lfw_photos():
    """Detect (SCRFD) -> align -> SFace on raw 250x250 LFW photos: a same pair scores higher than a different one."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    detector = MODELS / "scrfd_2.5g_bnkps.onnx"
    sface = MODELS / "face_recognition_sface_2021dec_int8bq.onnx"
    lfw = DATA / "lfw" / "images"
    if not (detector.is_file() and sface.is_file() and lfw.is_dir()):
        pytest.skip("shared models / LFW not present")
    rec = fs.FaceRecognizer.from_path(sface, detector=detector)
    a1, a2 = lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg"
    b = lfw / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg"
    if not (a1.is_file() and a2.is_file() and b.is_file()):
        pytest.skip("expected LFW images not present")
    same, different = rec.verify(a1, a2), rec.verify(a1, b)
    assert same.score > 0.5 > different.score + 0.2
