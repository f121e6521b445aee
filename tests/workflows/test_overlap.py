"""facesphere data overlap on a constructed case with known overlaps, the measured threshold, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facesphere.errors import DataError, InvalidOptionError, UnknownNameError
from facesphere.infer.embedders import Embedder
from facesphere.workflows.overlap import calibrate_threshold, find_overlap, identity_means, leave_one_out_scores

SIZE = 32


class Thumbnail(Embedder):
    """A "recogniser" whose feature is the image's 8x8 grey thumbnail minus its mean: identities drawn as distinct
    random patterns are told apart, images of one pattern with different noise are close."""

    def __init__(self) -> None:
        super().__init__(name="thumbnail", input_size=(SIZE, SIZE), color="rgb", mean=0.0, std=1.0)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        grey = batch.mean(axis=1)
        small = grey.reshape(len(batch), 8, SIZE // 8, 8, SIZE // 8).mean(axis=(2, 4)).reshape(len(batch), -1)
        return (small - small.mean(axis=1, keepdims=True)).astype(np.float32)


def pattern(seed: int) -> np.ndarray:
    coarse = np.random.default_rng(seed).uniform(0, 255, (8, 8)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.NEAREST))


def write_people(root, people: dict[str, int], images: int, noise_seed: int) -> None:
    rng = np.random.default_rng(noise_seed)
    for name, seed in people.items():
        (root / name).mkdir(parents=True)
        for k in range(images):
            grey = np.clip(pattern(seed) + rng.normal(0, 25, (SIZE, SIZE)), 0, 255).astype(np.uint8)
            Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2)).save(root / name / f"{k}.png")


@pytest.fixture
def sets(tmp_path):
    """Training identities A0..A9 (patterns 0..9) and test identities named differently: T0..T2 are A0..A2 (patterns
    0..2, other photos), T3..T14 are nobody in training (patterns 100..111)."""
    train = {f"A{i}": i for i in range(10)}
    test = {f"T{i}": i for i in range(3)} | {f"T{i}": 97 + i for i in range(3, 15)}
    write_people(tmp_path / "train", train, 4, noise_seed=1)
    write_people(tmp_path / "test" / "images", test, 2, noise_seed=2)
    (tmp_path / "test" / "pairs.txt").write_text("1 1\n")
    return tmp_path


def test_known_overlaps_are_found_with_the_measured_threshold(sets, tmp_path):
    report = find_overlap(Thumbnail(), f"folder:{sets / 'train'}", f"lfw:{sets / 'test'}", tmp_path / "out",
                          progress=False)
    out = tmp_path / "out"
    assert (out / "overlap.txt").read_text().split() == [p["train"] for p in report["pairs"]]
    assert sorted((out / "overlap.txt").read_text().split()) == ["A0", "A1", "A2"]
    assert {(p["train"], p["test"]) for p in report["pairs"]} == {("A0", "T0"), ("A1", "T1"), ("A2", "T2")}
    assert report["excluded_identities"] == 3 and report["excluded_images"] == 12
    assert report["train"] == {"spec": f"folder:{sets / 'train'}", "identities": 10, "images": 40}
    cal = report["calibration"]
    assert cal["null_above_threshold"] <= 0.05 and cal["genuine_train_recall_at_threshold"] == 1.0
    assert report["threshold"] == cal["measured_threshold"]
    assert json.loads((out / "report.json").read_text())["pairs"] == report["pairs"]
    rows = (out / "matches.tsv").read_text().splitlines()
    assert rows[0].startswith("train\t") and len(rows) == 11 and rows[1].endswith("\t1")
    assert Image.open(out / "contact_sheet.png").size[1] > 3 * 80
    assert (out / "scores.png").is_file()
    # a given threshold is used as is
    strict = find_overlap(Thumbnail(), f"folder:{sets / 'train'}", f"lfw:{sets / 'test'}", tmp_path / "strict",
                          threshold=0.999, progress=False, plots=False, sheet_pairs=0)
    assert strict["excluded_identities"] == 0 and (tmp_path / "strict" / "overlap.txt").read_text() == ""


def test_identity_statistics_by_hand():
    features = np.array([[1, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1])
    means = identity_means(features, labels, 2)
    np.testing.assert_allclose(means[0], [2 ** -0.5, 2 ** -0.5])
    # identity 0: the mean of image 1 vs image 0 -> cos((0, 1), (1, 0)) = 0; identity 1: (1,1)/√2 vs (1,0) -> 0.7071
    np.testing.assert_allclose(leave_one_out_scores(features, labels, 2), [0.0, 2 ** -0.5], atol=1e-7)
    tau, null = calibrate_threshold(np.eye(3), null_rate=0.05)
    assert tau == 0.0 and null.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(InvalidOptionError, match="fewer than 2 identities"):
        calibrate_threshold(np.eye(1))


def test_bad_input_names_the_problem(sets, tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        find_overlap(Thumbnail(), f"folder:{sets / 'train'}", f"lfw:{tmp_path / 'nope'}", tmp_path / "o",
                     progress=False)
    with pytest.raises(UnknownNameError, match="cannot be used here"):
        find_overlap(Thumbnail(), f"folder:{sets / 'train'}", "bin:x.bin", tmp_path / "o", progress=False)
    with pytest.raises(InvalidOptionError, match="threshold"):
        find_overlap(Thumbnail(), f"folder:{sets / 'train'}", f"lfw:{sets / 'test'}", tmp_path / "o",
                     threshold=3.0, progress=False)
    big = tmp_path / "big" / "X"
    big.mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(big / "0.png")
    with pytest.raises(DataError, match="0.png: image is 64x64"):
        find_overlap(Thumbnail(), f"folder:{tmp_path / 'big'}", f"lfw:{sets / 'test'}", tmp_path / "o",
                     progress=False)
