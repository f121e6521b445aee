"""Sub-center cleaning: the docs/methods.md §6.5 test vectors, a slow reference of the rule, and end-to-end cleaning of a tiny
sub-center ArcFace run trained on synthetic identities with 20% flipped labels (folder, list file and RecordIO)."""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facesphere.errors import DataError, InvalidOptionError
from facesphere.run import load_run
from facesphere.workflows.clean import (
    clean_dataset,
    clean_decisions,
    dominant_subcenters,
    nearest_subcenters,
    relabel,
)

# ----------------------------------------------------------------------------------------------------------------------
# tiny trained runs shared by test_cleaning, test_inversion and test_cli_tools (trained once per session)

_RUNS: dict[str, Path] = {}
_ROOT: list[Path] = []

_TINY_MODEL = [
    "--model.backbone", "sfnet4", "--model.channels", "[8, 16, 32, 64]", "--model.batchnorm", "true",
    "--model.embed_dim", "64", "--data.batch_size", "32", "--data.num_workers", "0", "--data.val", "[]",
    "--train.plots", "false", "--train.quiet", "true", "--train.threads", "1", "--train.checkpoint_every", "1000",
    "--optim.warmup_steps", "10", "--train.log_every", "50",
]


def _root() -> Path:
    if not _ROOT:
        root = Path(tempfile.mkdtemp(prefix="facesphere-tools-"))
        atexit.register(shutil.rmtree, root, True)
        _ROOT.append(root)
    return _ROOT[0]


def _train(name: str, overrides: list[str]) -> Path:
    from facesphere.run.config import load_config
    from facesphere.train.loop import train

    out = _root() / name
    threads = torch.get_num_threads()
    try:
        train(load_config(None, _TINY_MODEL + overrides), out=out, progress=False)
    finally:
        torch.set_num_threads(threads)  # train.threads=1 must not leak into the rest of the session
    return out


def noisy_folder() -> Path:
    """24 synthetic identities x 12 images, 20% of the labels flipped (noise.json lists them)."""
    if "data" not in _RUNS:
        from facesphere.data.synthetic import write_synthetic_folder

        out = _root() / "noisy"
        write_synthetic_folder(out, 24, 12, seed=0, difficulty=0.5, label_noise=0.2, progress=False, workers=0)
        _RUNS["data"] = out
    return _RUNS["data"]


def subcenter_run() -> Path:
    """sub-center ArcFace (K = 3) + narrow SFNet-4 with BatchNorm, 150 steps on :func:`noisy_folder`."""
    if "subcenter" not in _RUNS:
        data = noisy_folder()
        _RUNS["subcenter"] = _train("subcenter", ["--data.train", f"folder:{data}", "--head.name",
                                                  "subcenter_arcface", "--train.steps", "150"])
    return _RUNS["subcenter"]


def arcface_run() -> Path:
    """A plain ArcFace (K = 1) run of one step on the same data (for the error path)."""
    if "arcface" not in _RUNS:
        data = noisy_folder()
        _RUNS["arcface"] = _train("arcface", ["--data.train", f"folder:{data}", "--head.name", "arcface",
                                              "--train.steps", "1"])
    return _RUNS["arcface"]


def noisy_files() -> set[str]:
    noise = json.loads((noisy_folder() / "noise.json").read_text())
    return {row["file"] for row in noise["files"]}


# ----------------------------------------------------------------------------------------------------------------------
# a slow reference of the rule (loops, written from docs/methods.md §6.5 independently of the vectorised code)


def reference_decisions(embeddings, labels, weights, threshold_deg):
    c, k, _ = weights.shape
    keep, dominant = [], []
    for j in range(c):
        counts = [0] * k
        for x, y in zip(embeddings, labels):
            if y != j:
                continue
            xn = x / math.sqrt(float(np.dot(x, x)))
            cos = [float(np.dot(xn, w / math.sqrt(float(np.dot(w, w))))) for w in weights[j]]
            best = max(range(k), key=lambda q: (cos[q], -q))
            counts[best] += 1
        best_count = max(counts)
        dominant.append(min(q for q in range(k) if counts[q] == best_count))
    limit = math.cos(math.radians(threshold_deg))
    for x, y in zip(embeddings, labels):
        w = weights[y][dominant[y]]
        cos = float(np.dot(x, w)) / math.sqrt(float(np.dot(x, x)) * float(np.dot(w, w)))
        keep.append(cos > limit)
    return np.array(keep), np.array(dominant)


# ----------------------------------------------------------------------------------------------------------------------
# the rule


def test_dominant_subcenter_test_vector():
    nearest = np.array([0] * 120 + [1] * 15 + [2] * 3)
    rng = np.random.default_rng(0)
    nearest = nearest[rng.permutation(len(nearest))]
    dominant, counts = dominant_subcenters(nearest, np.zeros(len(nearest), dtype=np.int64), 1, 3)
    assert counts.tolist() == [[120, 15, 3]]
    assert dominant.tolist() == [0]


def test_dominant_ties_go_to_lowest_k_and_empty_classes_to_zero():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    nearest = np.array([2, 1, 2, 1, 0, 3, 3, 0])
    dominant, counts = dominant_subcenters(nearest, labels, 3, 4)
    assert counts.tolist() == [[0, 2, 2, 0], [2, 0, 0, 2], [0, 0, 0, 0]]
    assert dominant.tolist() == [1, 0, 0]


def test_drop_rule_test_vector_at_75_degrees():
    # class 0: sub-centres e0 (dominant: 5 images sit on it), e1, e2; two probes at cos 0.26 / 0.25 to e0 whose
    # nearest sub-centre is e1 -- the rule looks at the dominant sub-centre only.
    e = np.eye(3)
    weights = np.stack([e[0] * 2.0, e[1] * 0.5, e[2]])[None]  # (1, 3, 3), unnormalised on purpose
    on_e0 = np.tile(e[0], (5, 1)) * 3.0
    probes = np.array([[0.26, math.sqrt(1 - 0.26**2), 0.0], [0.25, math.sqrt(1 - 0.25**2), 0.0]]) * 7.0
    embeddings = np.concatenate([on_e0, probes])
    d = clean_decisions(embeddings, np.zeros(7, dtype=np.int64), weights, 75.0)
    assert d.dominant.tolist() == [0]
    assert d.nearest.tolist() == [0] * 5 + [1, 1]
    assert d.keep.tolist() == [True] * 5 + [True, False]
    assert d.threshold_cos == pytest.approx(0.258819, abs=1e-6)
    np.testing.assert_allclose(d.cos_dominant[5:], [0.26, 0.25], atol=1e-12)
    np.testing.assert_allclose(d.angle_deg[5:], np.degrees(np.arccos([0.26, 0.25])), atol=1e-9)


def test_clean_decisions_match_slow_reference():
    rng = np.random.default_rng(3)
    c, k, dim, n = 6, 3, 5, 200
    weights = rng.normal(size=(c, k, dim)) * rng.uniform(0.1, 3.0, size=(c, k, 1))
    labels = rng.integers(0, c - 1, size=n)  # class c-1 stays empty
    # images near a random sub-centre of their class plus noise, some far
    picks = rng.integers(0, k, size=n)
    embeddings = weights[labels, picks] / np.linalg.norm(weights[labels, picks], axis=1, keepdims=True)
    embeddings = embeddings + rng.normal(scale=rng.uniform(0.1, 1.5, size=(n, 1)), size=(n, dim))
    for threshold in (60.0, 75.0, 90.0):
        d = clean_decisions(embeddings, labels, weights, threshold)
        keep, dominant = reference_decisions(embeddings, labels, weights, threshold)
        assert d.keep.tolist() == keep.tolist()
        assert d.dominant.tolist() == dominant.tolist()
        assert 0 < d.keep.sum() < n
    cos = nearest_subcenters(embeddings, labels, weights)
    assert cos.shape == (n, k)
    assert np.all(np.abs(cos) <= 1 + 1e-12)


def test_relabel_reindexes_surviving_classes_in_order():
    labels = np.array([0, 0, 1, 2, 2, 3, 4])
    keep = np.array([True, False, False, True, True, False, True])
    new, class_map = relabel(labels, keep, 6)
    assert class_map.tolist() == [0, -1, 1, -1, 2, -1]
    assert new.tolist() == [0, 1, 1, 2]


def test_rule_input_errors():
    with pytest.raises(InvalidOptionError, match=r"\(C, K, D\)"):
        clean_decisions(np.zeros((2, 3)), np.zeros(2, dtype=np.int64), np.zeros((2, 3)))
    with pytest.raises(InvalidOptionError, match="labels must lie"):
        clean_decisions(np.ones((2, 3)), np.array([0, 5]), np.ones((2, 2, 3)))
    with pytest.raises(InvalidOptionError, match="threshold"):
        clean_decisions(np.ones((2, 3)), np.array([0, 1]), np.ones((2, 2, 3)), threshold_deg=0.0)


# ----------------------------------------------------------------------------------------------------------------------
# end to end


def _independent_embeddings(run_dir: Path, paths: list[str]) -> np.ndarray:
    """Embeddings computed here with PIL + the training normalisation ((p - 127.5) / 127.5, RGB), no flip."""
    _, backbone, _, _ = load_run(run_dir)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]).astype(np.float32)
    x = torch.from_numpy((images - 127.5) / 127.5).permute(0, 3, 1, 2)
    with torch.no_grad():
        return backbone(x).double().numpy()


@pytest.fixture(scope="module")
def folder_report(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("clean") / "folder"
    return clean_dataset(subcenter_run(), f"folder:{noisy_folder()}", out, progress=False), out


def test_folder_cleaning_matches_reference_and_finds_the_noise(folder_report):
    report, out = folder_report
    from facesphere.data.datasets import ImageFolderDataset

    source = ImageFolderDataset(noisy_folder())
    _, _, head, _ = load_run(subcenter_run())
    weights = head.weight.detach().double().numpy().reshape(head.num_classes, 3, -1)
    embeddings = _independent_embeddings(subcenter_run(), source.paths)
    keep, _ = reference_decisions(embeddings, source.labels, weights, 75.0)
    dropped = {d["source"] for d in report["dropped"]}
    assert dropped == {p for p, k in zip(source.paths, keep) if not k}
    assert report["num_kept"] == int(keep.sum()) and report["num_images"] == len(source.paths) == 288
    assert report["subcenters"] == 3 and report["num_unreadable"] == 0
    per_class = report["classes"]
    assert sum(c["kept"] for c in per_class) == report["num_kept"]
    assert all(c["kept"] + c["dropped"] == c["images"] for c in per_class)
    assert all(sum(c["subcenter_counts"]) == c["images"] for c in per_class)
    assert all(0 <= d["nearest_subcenter"] < 3 and d["angle_deg"] >= 75.0 for d in report["dropped"])

    # the dropped set is mostly the flipped labels (20% of the images are noisy)
    truth = noisy_files()
    dropped_rel = {os.path.relpath(p, noisy_folder()) for p in dropped}
    precision = len(dropped_rel & truth) / len(dropped_rel)
    recall = len(dropped_rel & truth) / len(truth)
    assert precision > 0.6 and recall > 0.3, (precision, recall)

    # the written folder: the kept files, byte for byte, in their class folders
    cleaned = ImageFolderDataset(out)
    assert len(cleaned) == report["num_kept"]
    assert cleaned.classes == [c["name"] for c in per_class if c["new_id"] is not None]
    kept_sources = sorted(p for p, k in zip(source.paths, keep) if k)
    written = sorted(os.path.join(str(noisy_folder()), os.path.relpath(p, out)) for p in cleaned.paths)
    assert written == kept_sources
    for path in cleaned.paths[:5]:
        assert Path(path).read_bytes() == (noisy_folder() / os.path.relpath(path, out)).read_bytes()
    assert (out / "angles.png").stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["num_dropped"] == report["num_dropped"]


def test_list_and_recordio_outputs_match_the_folder_result(folder_report, tmp_path):
    report, _ = folder_report
    from facesphere.data.datasets import ListFileDataset, RecordIODataset
    from facesphere.data.recordio import pack_folder

    root = noisy_folder()
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    # a plain list file with integer labels, paths relative to the list's folder
    lines = [f"{c}/{f.name} {i}" for i, c in enumerate(classes) for f in sorted((root / c).iterdir())]
    listing = root / "train.txt"
    listing.write_text("\n".join(lines) + "\n")
    try:
        list_report = clean_dataset(subcenter_run(), f"list:{listing}", tmp_path / "list", progress=False)
    finally:
        listing.unlink()
    pack_folder(root, tmp_path / "packed" / "train", progress=False)
    rec_report = clean_dataset(subcenter_run(), f"rec:{tmp_path / 'packed' / 'train'}", tmp_path / "rec",
                               progress=False)

    folder_dropped = sorted(os.path.relpath(d["source"], root) for d in report["dropped"])
    list_dropped = sorted(os.path.relpath(d["source"].split(" (listed at")[0], root) for d in list_report["dropped"])
    assert list_dropped == folder_dropped
    assert rec_report["num_dropped"] == report["num_dropped"]
    assert [c["dropped"] for c in rec_report["classes"]] == [c["dropped"] for c in report["classes"]]

    cleaned_list = ListFileDataset(tmp_path / "list" / "train.txt")
    assert len(cleaned_list) == report["num_kept"]
    assert cleaned_list.num_classes == report["num_classes_kept"]
    assert set(np.unique(cleaned_list.labels).tolist()) == set(range(report["num_classes_kept"]))

    cleaned_rec = RecordIODataset(tmp_path / "rec" / "train")
    assert len(cleaned_rec) == report["num_kept"]
    assert cleaned_rec.num_classes == report["num_classes_kept"]
    assert cleaned_rec.classes == [c["name"] for c in report["classes"] if c["new_id"] is not None]
    ranges = cleaned_rec.faceset.class_ranges
    assert ranges.shape == (report["num_classes_kept"], 2)
    counts = np.bincount(cleaned_rec.labels, minlength=report["num_classes_kept"])
    assert (ranges[:, 1] - ranges[:, 0]).tolist() == counts.tolist()
    assert counts.tolist() == [c["kept"] for c in report["classes"] if c["new_id"] is not None]
    # records carry the original bytes: the i-th kept image of class 0 is the i-th kept file of folder class 0
    kept0 = sorted(set(f"{classes[0]}/{f.name}" for f in (root / classes[0]).iterdir())
                   - set(folder_dropped))
    _, first = cleaned_rec.faceset.read(0)
    assert first == (root / kept0[0]).read_bytes()


def test_cleaning_errors(tmp_path):
    with pytest.raises(InvalidOptionError, match="subcenter_arcface and K >= 2"):
        clean_dataset(arcface_run(), None, tmp_path / "a", progress=False)
    subset = tmp_path / "subset"
    shutil.copytree(noisy_folder() / "id_00000", subset / "id_00000")
    with pytest.raises(DataError, match="1 classes but the run's head has 24"):
        clean_dataset(subcenter_run(), f"folder:{subset}", tmp_path / "b", progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("x")
    with pytest.raises(InvalidOptionError, match="not empty"):
        clean_dataset(subcenter_run(), None, busy, progress=False)
    with pytest.raises(InvalidOptionError, match="threshold"):
        clean_dataset(subcenter_run(), None, tmp_path / "c", threshold=200, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_synthetic_training_data_reports_label_noise(tmp_path):
    """A run trained on the built-in synthetic identities: --data defaults to them; the report scores the noise."""
    run = _train("synthetic", ["--data.train", "synthetic", "--data.synthetic_identities", "6",
                               "--data.synthetic_images_per_identity", "5", "--data.synthetic_label_noise", "0.2",
                               "--data.batch_size", "8", "--head.name", "subcenter_arcface", "--head.subcenters", "2",
                               "--train.steps", "1"])
    report = clean_dataset(run, None, tmp_path / "out", progress=False)
    assert report["format"] == "synthetic" and report["num_images"] == 30 and report["subcenters"] == 2
    from facesphere.data.synthetic import noisy_labels

    labels, true, noisy = noisy_labels(0, 6, 5, 0.2)
    dropped = np.zeros(30, dtype=bool)
    dropped[[d["index"] for d in report["dropped"]]] = True
    scores = report["label_noise"]
    assert scores["noisy"] == int(noisy.sum()) == 6
    assert scores["dropped_noisy"] == int((dropped & noisy).sum())
    if scores["dropped"]:
        assert scores["precision"] == pytest.approx(scores["dropped_noisy"] / scores["dropped"])
    assert scores["recall"] == pytest.approx(scores["dropped_noisy"] / 6)
    pngs = sorted((tmp_path / "out").rglob("*.png"))
    assert len([p for p in pngs if p.name != "angles.png"]) == report["num_kept"]


def test_list_layouts_are_kept(folder_report, tmp_path):
    """An MXNet .lst stays a .lst (index, new id, absolute path); name labels stay names."""
    report, _ = folder_report
    from facesphere.data.datasets import ListFileDataset

    root = noisy_folder()
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(i, c, f) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())]
    lst = tmp_path / "faces.lst"
    lst.write_text("".join(f"{n}\t{i}\t{f}\n" for n, (i, _, f) in enumerate(files)))
    named = tmp_path / "named.txt"
    named.write_text("".join(f"{f} person_{c}\n" for _, c, f in files))
    lst_report = clean_dataset(subcenter_run(), f"list:{lst}", tmp_path / "a", progress=False)
    named_report = clean_dataset(subcenter_run(), f"list:{named}", tmp_path / "b", progress=False)
    assert lst_report["num_dropped"] == named_report["num_dropped"] == report["num_dropped"]

    lines = (tmp_path / "a" / "faces.lst").read_text().splitlines()
    assert len(lines) == report["num_kept"]
    fields = [line.split("\t") for line in lines]
    assert [int(f[0]) for f in fields] == list(range(len(lines)))
    assert all(os.path.isabs(f[2]) for f in fields)
    cleaned = ListFileDataset(tmp_path / "a" / "faces.lst")
    assert cleaned.format == "mxnet-lst" and cleaned.num_classes == report["num_classes_kept"]

    cleaned_named = ListFileDataset(tmp_path / "b" / "named.txt")
    kept_names = [f"person_{c['name']}" for c in report["classes"] if c["new_id"] is not None]
    assert cleaned_named.classes == kept_names
    assert len(cleaned_named) == report["num_kept"]


def test_a_threshold_dropping_much_of_the_set_is_said_to_suit_the_model_badly(tmp_path):
    from facesphere.errors import FaceSphereWarning

    with pytest.warns(FaceSphereWarning, match="suits this model badly"):
        report = clean_dataset(subcenter_run(), f"folder:{noisy_folder()}", tmp_path / "out", threshold=5.0,
                               progress=False)
    assert report["num_dropped"] > 0.3 * report["num_images"] and "angles.png" in report["warning"]
