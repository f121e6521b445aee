"""Tests of the procedural synthetic face generator (facesphere.data.synthetic)."""

from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from facesphere.data.synthetic import (
    ARCFACE_TEMPLATE_112,
    EVAL_IDENTITY_OFFSET,
    SyntheticConfig,
    SyntheticFaceDataset,
    SyntheticFaces,
    contact_sheet,
    identity_name,
    noisy_labels,
    pixel_baseline_accuracy,
    synthetic_identification,
    synthetic_pairs,
    write_synthetic_folder,
)
from facesphere.errors import FaceSphereError, InvalidOptionError


@pytest.fixture(scope="module")
def faces() -> SyntheticFaces:
    return SyntheticFaces(SyntheticConfig(seed=0))


# ----------------------------------------------------------------------------------------------------------------------
# rendering


def test_render_shape_dtype(faces: SyntheticFaces) -> None:
    img = faces.render(3, 5)
    assert img.shape == (112, 112, 3)
    assert img.dtype == np.uint8
    assert img.flags["C_CONTIGUOUS"]
    assert 20 < img.mean() < 235 and img.std() > 10  # not blank


def test_render_other_size() -> None:
    img = SyntheticFaces(SyntheticConfig(image_size=64)).render(0, 0)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8


def test_determinism_same_seed_identical_bytes() -> None:
    a = SyntheticFaces(SyntheticConfig(seed=7))
    b = SyntheticFaces(SyntheticConfig(seed=7, cache_size=0))  # no cache: the cached path must not matter
    for ident, k in [(0, 0), (5, 3), (EVAL_IDENTITY_OFFSET + 2, 9), (123, 1000)]:
        x, y = a.render(ident, k), b.render(ident, k)
        assert x.tobytes() == y.tobytes()
    # rendering again (cache hit, after other identities) gives the same bytes
    assert a.render(5, 3).tobytes() == b.render(5, 3).tobytes()


def test_different_seed_identity_image_differ() -> None:
    a, b = SyntheticFaces(SyntheticConfig(seed=0)), SyntheticFaces(SyntheticConfig(seed=1))
    assert a.render(0, 0).tobytes() != b.render(0, 0).tobytes()
    assert not np.allclose(a.identity_vector(0), b.identity_vector(0))
    assert a.render(0, 0).tobytes() != a.render(0, 1).tobytes()
    assert a.render(0, 0).tobytes() != a.render(1, 0).tobytes()


def test_difficulty_zero_is_canonical(faces: SyntheticFaces) -> None:
    imgs = [faces.render(4, k, difficulty=0.0) for k in range(4)]
    assert all(np.array_equal(imgs[0], x) for x in imgs[1:])
    noisy = [faces.render(4, k) for k in range(4)]
    assert not np.array_equal(noisy[0], noisy[1])


def test_landmarks_near_arcface_template(faces: SyntheticFaces) -> None:
    pts = np.stack([faces.landmarks(i) for i in range(50)])
    dev = np.abs(pts - ARCFACE_TEMPLATE_112[None])
    assert dev.max() < 8.0  # per-identity geometry varies around the template ...
    assert np.abs(pts.mean(axis=0) - ARCFACE_TEMPLATE_112).max() < 1.5  # ... but is centred on it


def test_pickle_drops_cache_and_renders_same(faces: SyntheticFaces) -> None:
    faces.render(1, 1)
    clone = pickle.loads(pickle.dumps(faces))
    assert len(clone._cache) == 0
    assert clone.render(1, 1).tobytes() == faces.render(1, 1).tobytes()


def test_identity_params_named_and_fixed_length(faces: SyntheticFaces) -> None:
    p = faces.identity_params(0)
    for key in ("face_ax", "le_x", "re_x", "mouth_hw", "skin_red", "hair_style", "texture"):
        assert key in p
    lengths = {faces.identity_vector(i).shape for i in range(20)}
    assert len(lengths) == 1


def test_train_eval_identities_disjoint_by_parameters() -> None:
    faces = SyntheticFaces(SyntheticConfig(seed=0))
    train = np.stack([faces.identity_vector(i) for i in range(60)])
    evals = np.stack([faces.identity_vector(EVAL_IDENTITY_OFFSET + i) for i in range(60)])
    dist = np.linalg.norm(train[:, None, :] - evals[None, :, :], axis=-1)
    assert dist.min() > 1.0  # no held-out person duplicates a training person
    within = np.linalg.norm(train[:, None, :] - train[None, :, :], axis=-1)
    assert (within + np.eye(len(train)) * 1e9).min() > 1.0
    tr = SyntheticFaceDataset(SyntheticConfig(num_identities=10, images_per_identity=2))
    ev = SyntheticFaceDataset(SyntheticConfig(num_identities=10, images_per_identity=2), split="eval")
    assert not set(tr.identities.tolist()) & set(ev.identities.tolist())
    assert not np.array_equal(tr.image(0), ev.image(0))


def test_identity_spread_zero_makes_geometry_identical() -> None:
    faces = SyntheticFaces(SyntheticConfig(identity_spread=0.0))
    a, b = faces.identity_params(0), faces.identity_params(1)
    for key in ("face_ax", "le_x", "mouth_hw", "nose_y", "eye_w"):
        assert a[key] == b[key]


def test_config_validation() -> None:
    for bad in ({"seed": -1}, {"num_identities": 0}, {"difficulty": -0.1}, {"difficulty": 9.0},
                {"label_noise": 1.5}, {"image_size": 8}, {"images_per_identity": 0}, {"seed": 1.5},
                {"label_noise": 0.1, "num_identities": 1}):
        with pytest.raises(InvalidOptionError):
            SyntheticConfig(**bad)
    assert issubclass(InvalidOptionError, FaceSphereError)
    with pytest.raises(InvalidOptionError):
        SyntheticFaces().render(-1, 0)
    with pytest.raises(InvalidOptionError):
        SyntheticFaces().render(0, -2)
    with pytest.raises(InvalidOptionError):
        SyntheticFaces(not_an_option=1)


# ----------------------------------------------------------------------------------------------------------------------
# datasets and label noise


def test_dataset_items_shapes_and_values() -> None:
    cfg = SyntheticConfig(num_identities=5, images_per_identity=3)
    ds = SyntheticFaceDataset(cfg)
    assert len(ds) == 15 and ds.num_classes == 5
    x, y = ds[4]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 112, 112) and x.dtype == torch.float32
    assert isinstance(y, int) and y == 1
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    img = ds.image(4)
    expected = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0
    assert torch.allclose(x, expected, atol=1e-6)
    assert np.array_equal(img, SyntheticFaces(cfg).render(1, 1))  # item 4 = identity 1, image 1
    seen = []
    ds_t = SyntheticFaceDataset(cfg, transform=lambda a: seen.append(a) or "ok")
    assert ds_t[0] == ("ok", 0)
    assert seen[0].dtype == np.uint8 and seen[0].shape == (112, 112, 3)
    with pytest.raises(IndexError):
        ds[15]
    with pytest.raises(InvalidOptionError):
        SyntheticFaceDataset(cfg, split="test")


def test_label_noise_fraction_and_mask() -> None:
    cfg = SyntheticConfig(num_identities=20, images_per_identity=10, label_noise=0.2, seed=3)
    ds = SyntheticFaceDataset(cfg)
    assert ds.noisy_mask.dtype == bool and int(ds.noisy_mask.sum()) == 40
    assert np.all(ds.labels[ds.noisy_mask] != ds.true_labels[ds.noisy_mask])
    assert np.array_equal(ds.labels[~ds.noisy_mask], ds.true_labels[~ds.noisy_mask])
    assert np.array_equal(ds.true_labels, np.repeat(np.arange(20), 10))
    assert ds.labels.min() >= 0 and ds.labels.max() < 20
    assert all(ds[i][1] == ds.labels[i] for i in np.flatnonzero(ds.noisy_mask)[:3])
    again = SyntheticFaceDataset(cfg)
    assert np.array_equal(again.labels, ds.labels)
    ev = SyntheticFaceDataset(cfg, split="eval")
    assert not ev.noisy_mask.any() and np.array_equal(ev.labels, ev.true_labels)
    clean = SyntheticFaceDataset(SyntheticConfig(num_identities=20, images_per_identity=10))
    assert not clean.noisy_mask.any()
    labels, true, mask = noisy_labels(0, 7, 3, 1.0)
    assert mask.all() and np.all(labels != true)


def test_dataloader_workers_match_in_process() -> None:
    cfg = SyntheticConfig(num_identities=4, images_per_identity=3)
    ds = SyntheticFaceDataset(cfg)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    ref = torch.stack([ds[i][0] for i in range(len(ds))])
    assert torch.equal(x, ref)
    assert torch.equal(y, torch.from_numpy(ds.labels))


# ----------------------------------------------------------------------------------------------------------------------
# evaluation sets


def test_pairs_structure() -> None:
    kw = dict(seed=0, num_identities=40, images_per_identity=4, n_folds=10, pairs_per_fold=12)
    images, i1, i2, same, folds, labels = synthetic_pairs(**kw, return_labels=True)
    assert images.dtype == np.uint8 and images.shape[1:] == (112, 112, 3)
    assert len(i1) == len(i2) == len(same) == len(folds) == 120
    assert same.dtype == bool and folds.dtype == np.int64
    assert np.array_equal(folds, np.repeat(np.arange(10), 12))  # contiguous blocks
    for f in range(10):
        assert same[folds == f].sum() == 6  # balanced
    assert np.array_equal(same, labels[i1] == labels[i2])
    assert np.all(i1 != i2)
    assert len({(a, b) for a, b in zip(i1.tolist(), i2.tolist())}) == 120  # no duplicated pair
    used = np.unique(np.concatenate([i1, i2]))
    assert np.array_equal(used, np.arange(len(images)))  # exactly the images the pairs use
    fold_ids = [set(labels[np.concatenate([i1[folds == f], i2[folds == f]])].tolist()) for f in range(10)]
    for f in range(10):
        for g in range(f + 1, 10):
            assert not fold_ids[f] & fold_ids[g]  # identities never cross folds
    again = synthetic_pairs(**kw)
    assert all(np.array_equal(a, b) for a, b in zip(again, (images, i1, i2, same, folds)))
    with pytest.raises(InvalidOptionError):
        synthetic_pairs(num_identities=10, n_folds=10)
    with pytest.raises(InvalidOptionError):
        synthetic_pairs(num_identities=20, images_per_identity=2, n_folds=10, pairs_per_fold=600)


def test_pairs_use_held_out_identities() -> None:
    images, i1, i2, same, folds, labels = synthetic_pairs(num_identities=20, images_per_identity=3, n_folds=10,
                                                          pairs_per_fold=2, return_labels=True)
    faces = SyntheticFaces(SyntheticConfig())
    c = int(labels[0])
    candidates = [faces.render(EVAL_IDENTITY_OFFSET + c, k) for k in range(3)]
    assert any(np.array_equal(images[0], x) for x in candidates)


def test_pixel_baseline_accuracy_bounds() -> None:
    easy = synthetic_pairs(num_identities=20, images_per_identity=3, n_folds=10, pairs_per_fold=4, difficulty=0.0)
    acc, _ = pixel_baseline_accuracy(*easy)
    assert acc >= 0.9  # canonical images of one identity are identical (two people may still look alike)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    i1, i2 = np.arange(0, 40, 2), np.arange(1, 40, 2)
    same = np.arange(20) % 2 == 0
    imgs = noise.copy()
    imgs[i2[same]] = imgs[i1[same]]
    acc, std = pixel_baseline_accuracy(imgs, i1, i2, same, np.repeat(np.arange(10), 2), size=8)
    assert acc == 1.0 and std == 0.0


def test_identification_split() -> None:
    g, gl, p, pl = synthetic_identification(num_identities=5, gallery_per_identity=1, probes_per_identity=2,
                                            num_distractors=2)
    assert g.shape == (7, 112, 112, 3) and p.shape == (10, 112, 112, 3)
    assert gl.tolist() == list(range(7)) and pl.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert not any(np.array_equal(g[0], x) for x in p)


# ----------------------------------------------------------------------------------------------------------------------
# writing


def test_write_synthetic_folder_layout_and_noise(tmp_path) -> None:
    out = tmp_path / "synth"
    summary = write_synthetic_folder(out, num_identities=4, images_per_identity=3, seed=2, label_noise=0.25,
                                     progress=False, workers=2)
    assert summary["num_images"] == 12 and summary["num_noisy"] == 3
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs == [identity_name(i, 4) for i in range(4)] == ["id_00000", "id_00001", "id_00002", "id_00003"]
    files = sorted(out.glob("*/*.jpg"))
    assert len(files) == 12
    noise = json.loads((out / "noise.json").read_text())
    assert noise["num_noisy"] == 3 and len(noise["files"]) == 3
    for row in noise["files"]:
        assert (out / row["file"]).is_file()
        assert row["file"].split("/")[0] == identity_name(row["label"], 4)
        assert row["label"] != row["true_label"] and row["true_identity"] == identity_name(row["true_label"], 4)
    with open(out / "noise.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    meta = json.loads((out / "synthetic.json").read_text())
    assert meta["config"]["seed"] == 2
    # a clean file is the dataset's image, JPEG-encoded
    ds = SyntheticFaceDataset(SyntheticConfig(num_identities=4, images_per_identity=3, seed=2, label_noise=0.25))
    first_clean = int(np.flatnonzero(~ds.noisy_mask)[0])
    lab = int(ds.labels[first_clean])
    assert first_clean < 3 and lab == 0
    decoded = np.asarray(Image.open(out / "id_00000" / f"{first_clean:04d}.jpg").convert("RGB")).astype(np.float32)
    assert np.abs(decoded - ds.image(first_clean)).mean() < 8.0
    with pytest.raises(InvalidOptionError):  # refuses to write into a non-empty directory
        write_synthetic_folder(out, num_identities=2, images_per_identity=1, progress=False, workers=0)


def test_write_synthetic_folder_clean_in_process(tmp_path) -> None:
    out = tmp_path / "clean"
    summary = write_synthetic_folder(out, 2, 2, progress=False, workers=0)
    assert summary["num_noisy"] == 0 and not (out / "noise.json").exists()
    assert sorted(str(p.relative_to(out)) for p in out.glob("*/*.jpg")) == [
        "id_00000/0000.jpg", "id_00000/0001.jpg", "id_00001/0000.jpg", "id_00001/0001.jpg"]


def test_contact_sheet(tmp_path) -> None:
    path = contact_sheet(tmp_path / "sheet.png", num_identities=2, images_per_identity=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (4 * 114 + 2, 2 * 114 + 2)
