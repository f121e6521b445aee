"""Folders at the speed the model allows: the threaded, batched pipeline keeps input order, names what it skips,
and the commands skip corrupt images instead of stopping (facesphere.infer.pipeline, FaceRecognizer.embed_files)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

import facesphere as fs
from facesphere.cli import main
from facesphere.errors import DataError, NoFaceError
from facesphere.infer.crops import Prepared
from facesphere.infer.pipeline import iter_file_faces


def _fake_prepare(path):
    name = path.name
    if name.startswith("bad"):
        raise DataError(f"{path}: cannot decode image: broken")
    if name.startswith("none"):
        return []
    if name.startswith("fail"):
        raise NoFaceError(f"{path}: no face found")
    count = 2 if name.startswith("two") else 1
    value = int(name.split("_")[-1])
    return [Prepared(np.full((4, 4, 3), value, np.uint8), "aligned") for _ in range(count)]


@pytest.mark.parametrize("workers", [0, 3])
def test_results_come_back_in_input_order_in_batches(tmp_path, workers):
    names = [f"img_{i}" for i in range(10)] + ["bad_1", "none_2", "two_7", "img_11"]
    paths = [tmp_path / n for n in names]
    batches, threads = [], set()

    def embed(crops):
        batches.append(len(crops))
        threads.add(threading.current_thread().name)
        return np.stack([np.full(3, c[0, 0, 0], np.float32) for c in crops])

    results = list(iter_file_faces(paths, _fake_prepare, embed, batch_size=4, workers=workers))
    assert [r.path for r in results] == paths  # input order, whatever thread prepared them
    assert [r.status for r in results][10:] == ["unreadable", "no_face", "ok", "ok"]
    assert "broken" in results[10].message
    assert [float(f.embedding[0]) for r in results for f in r.faces] == [*range(10), 7, 7, 11]
    assert all(f.crop is None for r in results for f in r.faces)  # crops dropped once embedded
    assert min(batches[:-1]) >= 4 and sum(batches) == 13  # batch_size crops per model call (the last may be short)
    assert threads == {threading.main_thread().name}  # the model runs in the calling thread
    with pytest.raises(DataError):
        list(iter_file_faces(paths, _fake_prepare, embed, batch_size=4, workers=workers, skip_unreadable=False))
    with pytest.raises(NoFaceError):  # the fail policy always stops
        list(iter_file_faces([tmp_path / "fail_1"], _fake_prepare, embed, workers=workers))


@pytest.fixture(scope="module")
def folder_with_a_corrupt_image(tmp_path_factory):
    from facesphere.data.synthetic import SyntheticConfig, SyntheticFaceDataset

    dataset = SyntheticFaceDataset(SyntheticConfig(seed=5, num_identities=2, images_per_identity=3))
    root = tmp_path_factory.mktemp("people")
    for i in range(6):
        (root / f"id{i // 3}").mkdir(exist_ok=True)
        Image.fromarray(dataset.image(i)).save(root / f"id{i // 3}" / f"{i}.png")
    (root / "id1" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return root


def test_embed_files_batches_and_skips_the_corrupt_image(tiny_run, folder_with_a_corrupt_image):
    rec = fs.FaceRecognizer.from_path(tiny_run)
    rec.batch_size = 4
    paths = sorted(p for p in folder_with_a_corrupt_image.rglob("*") if p.is_file())
    result = rec.embed_files(paths)
    assert len(result.paths) == 6 and [p.name for p, _ in result.unreadable] == ["corrupt.jpg"]
    assert "corrupt.jpg: cannot decode image" in result.unreadable[0][1] and "BytesIO" not in result.unreadable[0][1]
    expected = rec.embed([p for p in paths if p.name != "corrupt.jpg"])
    np.testing.assert_allclose(result.features, expected, atol=1e-5)
    rec.workers = 0
    np.testing.assert_allclose(rec.embed_files(paths).features, expected, atol=1e-5)


def test_embed_command_skips_names_counts_and_strict_stops(tiny_run, folder_with_a_corrupt_image, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    assert main(["embed", str(tiny_run), str(folder_with_a_corrupt_image), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "corrupt.jpg" in captured.err and "1 image(s) skipped" in captured.out
    listing = json.loads(out.with_suffix(".json").read_text())
    assert np.load(out).shape == (6, 32) and len(listing["unreadable"]) == 1 and len(listing["faces"]) == 6
    strict = tmp_path / "strict.npy"
    assert main(["embed", str(tiny_run), str(folder_with_a_corrupt_image), "--out", str(strict), "--quiet",
                 "--strict"]) == 2
    assert "--strict" in capsys.readouterr().err and not strict.exists()
    assert main(["embed", str(tiny_run), str(folder_with_a_corrupt_image / "id1" / "corrupt.jpg"), "--out",
                 str(strict), "--quiet"]) == 2  # nothing embedded: an error
    assert "nothing embedded" in capsys.readouterr().err
