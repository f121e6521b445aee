"""`align_folder` / `facesphere data align`: landmarks files, detectors, reports, resume, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from facesphere.cli import main
from facesphere.data.align import ARCFACE_112x112, SPHEREFACE_112x96
from facesphere.errors import DataError, InvalidOptionError
from facesphere.infer.align_folder import DROPPED_NAME, align_folder, read_landmarks_file
from facesphere.infer.detectors import Detection
from tests.helpers import DATA, MODELS


def _dotted_image(landmarks, shape=(180, 160)):
    """Grey image with 5 bright dots at ``landmarks``."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    image = np.zeros(shape, np.uint8)
    for x, y in landmarks:
        image[(xs - x) ** 2 + (ys - y) ** 2 <= 9] = 255
    return image


def _dots_near(crop, points):
    """Mean distance between each template point and the bright centroid around it."""
    grey = np.asarray(crop, float)
    grey = grey if grey.ndim == 2 else grey[:, :, 0]
    cy, cx = np.mgrid[0:grey.shape[0], 0:grey.shape[1]]
    distances = []
    for x, y in points:
        weights = grey * ((cx - x) ** 2 + (cy - y) ** 2 <= 25)
        centroid = np.array([(weights * cx).sum(), (weights * cy).sum()]) / weights.sum()
        distances.append(np.linalg.norm(centroid - (x, y)))
    return float(np.mean(distances))


@pytest.fixture()
def photo_tree(tmp_path):
    """src/a/one.png, src/a/two.jpg (colour), src/b/three.pgm, src/b/broken.jpg; landmarks of the three faces."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    rng = np.random.default_rng(0)
    landmarks = {}
    for name in ("a/one.png", "a/two.jpg", "b/three.pgm"):
        angle = rng.uniform(-0.3, 0.3)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = 1.2 * ARCFACE_112x112 @ rotation.T + rng.uniform(5, 25, size=2)
        image = _dotted_image(points)
        if name.endswith(".jpg"):
            image = np.stack([image, image // 2, image // 3], axis=2)
        Image.fromarray(image).save(src / name, quality=100) if name.endswith(".jpg") else \
            Image.fromarray(image).save(src / name)
        landmarks[name] = points
    (src / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    landmarks["b/broken.jpg"] = landmarks["a/one.png"]
    lines = ["# relative/path x1 y1 ... x5 y5 [score]"]
    for i, (name, points) in enumerate(landmarks.items()):
        coords = " ".join(f"{v:.4f}" for v in points.ravel())
        lines.append(f"{name} {coords}" + (" 0.99" if i == 1 else ""))
    file = tmp_path / "landmarks.txt"
    file.write_text("\n".join(lines) + "\n\n")
    return src, file, landmarks


def test_align_with_a_landmarks_file(photo_tree, tmp_path):
    src, file, landmarks = photo_tree
    (src / "b" / "unlisted.png").write_bytes((src / "a" / "one.png").read_bytes())
    dst = tmp_path / "dst"
    report = align_folder(src, dst, landmarks=file, progress=False)
    assert (report.total, report.aligned, report.already_aligned) == (4, 3, 0)
    assert [u["path"] for u in report.unreadable] == ["b/broken.jpg"]
    assert "cannot decode" in report.unreadable[0]["error"]
    assert report.not_listed == ["b/unlisted.png"]
    outputs = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    # pgm -> png, no temp files; the unreadable photo listed in align_dropped.txt
    assert outputs == ["a/one.png", "a/two.jpg", "align_dropped.txt", "align_report.json", "b/three.png"]
    assert (dst / "align_dropped.txt").read_text().splitlines()[1].startswith("b/broken.jpg\tunreadable: ")
    for name, out in (("a/one.png", "a/one.png"), ("a/two.jpg", "a/two.jpg"), ("b/three.pgm", "b/three.png")):
        with Image.open(dst / out) as im:
            assert im.size == (112, 112)
            assert im.mode == ("RGB" if name.endswith(".jpg") else "L")  # grey stays grey
            assert _dots_near(np.asarray(im), ARCFACE_112x112) < 1.0, name
    saved = json.loads((dst / "align_report.json").read_text())
    assert saved["counts"] == {"images": 4, "aligned": 3, "already_aligned": 0, "no_face": 0, "unreadable": 1,
                               "several_faces": 0, "not_listed": 1, "no_face_replaced": 0}

    # resume: existing outputs are skipped, the missing one is redone
    (dst / "a" / "one.png").unlink()
    again = align_folder(src, dst, landmarks=file, template="arcface", progress=False)
    assert (again.aligned, again.already_aligned) == (1, 2)


def test_sphereface_template_and_formats(photo_tree, tmp_path):
    src, file, _ = photo_tree
    dst = tmp_path / "dst"
    report = align_folder(src, dst, landmarks=file, template="sphereface", image_format="png", progress=False)
    assert report.aligned == 3 and report.size == (112, 96)
    with Image.open(dst / "a" / "two.png") as im:
        assert im.size == (96, 112)
        assert _dots_near(np.asarray(im), SPHEREFACE_112x96) < 1.0


class _DotDetector:
    """A stand-in detector: returns the given faces per image shape marker."""

    def __init__(self, faces_by_size):
        self.faces_by_size = faces_by_size
        self.path = "dots.onnx"

    def detect(self, image):
        return list(self.faces_by_size.get(image.shape[:2], []))


def test_align_with_a_detector_object(photo_tree, tmp_path):
    src, _, landmarks = photo_tree
    points = landmarks["a/one.png"]
    real = Detection(np.array([0, 0, 150, 170.0]), 0.9, points)
    decoy = Detection(np.array([100, 100, 140, 140.0]), 0.95, points * 0.2 + 100)
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(src / "a" / "empty.png")
    detector = _DotDetector({(180, 160): [decoy, real]})
    dst = tmp_path / "dst"
    report = align_folder(src, dst, detector, progress=False)
    assert report.total == 5 and report.aligned == 3
    assert report.no_face == ["a/empty.png"]
    assert sorted(report.several_faces) == ["a/one.png", "a/two.jpg", "b/three.pgm"]
    with Image.open(dst / "a" / "one.png") as im:  # the largest face was chosen
        assert _dots_near(np.asarray(im), ARCFACE_112x112) < 1.0
    # min_score drops the real face (0.9): the decoy is aligned instead
    report = align_folder(src, tmp_path / "dst2", detector, min_score=0.92, progress=False)
    assert report.aligned == 3 and report.several_faces == []


def test_landmarks_file_parsing(tmp_path):
    coords = " ".join(str(v) for v in ARCFACE_112x112.ravel())
    file = tmp_path / "l.txt"
    file.write_text(f"# comment\nmy photos/a b.jpg {coords}\nc.jpg {coords} 0.5\n")
    parsed = read_landmarks_file(file)
    assert list(parsed) == ["my photos/a b.jpg", "c.jpg"]
    np.testing.assert_allclose(parsed["c.jpg"], ARCFACE_112x112)
    for text, match in ((f"c.jpg {coords}\nc.jpg {coords}\n", "twice"),
                        ("c.jpg 1 2 3\n", r"l.txt:1: expected"),
                        (f"c.jpg {coords.replace('38.2946', 'nan')}\n", "NaN"),
                        ("# nothing\n", "lists no image")):
        file.write_text(text)
        with pytest.raises(DataError, match=match):
            read_landmarks_file(file)
    with pytest.raises(DataError, match="no such"):
        read_landmarks_file(tmp_path / "missing.txt")


def test_align_folder_errors(photo_tree, tmp_path):
    src, file, _ = photo_tree
    with pytest.raises(InvalidOptionError, match="exactly one"):
        align_folder(src, tmp_path / "d", progress=False)
    with pytest.raises(InvalidOptionError, match="inside"):
        align_folder(src, src / "aligned", landmarks=file, progress=False)
    with pytest.raises(DataError, match="no such folder"):
        align_folder(tmp_path / "nope", tmp_path / "d", landmarks=file, progress=False)
    coords = " ".join(str(v) for v in ARCFACE_112x112.ravel())
    escape = tmp_path / "escape.txt"
    escape.write_text(f"../outside.jpg {coords}\n")
    with pytest.raises(DataError, match="relative"):
        align_folder(src, tmp_path / "d", landmarks=escape, progress=False)
    with pytest.raises(InvalidOptionError):
        align_folder(src, tmp_path / "d", landmarks=file, template="square", progress=False)


def test_cli_data_align(photo_tree, tmp_path, capsys):
    src, file, _ = photo_tree
    dst = tmp_path / "dst"
    assert main(["data", "align", str(src), str(dst), "--landmarks", str(file), "--template", "sphereface",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "aligned now" in out and "sphereface 112x96" in out and "broken.jpg" in out
    assert (dst / "align_report.json").is_file()
    with pytest.raises(SystemExit):  # --detector and --landmarks are exclusive, one is required
        main(["data", "align", str(src), str(dst)])
    assert main(["data", "align", str(src), str(tmp_path / "x"), "--landmarks", str(tmp_path / "none.txt"),
                 "--quiet"]) == 2
    assert "no such landmarks file" in capsys.readouterr().err


def test_real_detector_on_lfw_folder(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    detector = MODELS / "scrfd_2.5g_bnkps.onnx"
    people = sorted((DATA / "lfw" / "images").glob("Aaron_P*"))[:2]
    if not detector.is_file() or not people:
        pytest.skip("shared SCRFD model / LFW not present")
    src = tmp_path / "lfw"
    for person in people:
        shutil.copytree(person, src / person.name)
    count = sum(1 for _ in src.rglob("*.jpg"))
    dst = tmp_path / "aligned"
    assert main(["data", "align", str(src), str(dst), "--detector", str(detector), "--choose", "central",
                 "--quiet"]) == 0
    report = json.loads((dst / "align_report.json").read_text())
    assert report["counts"]["aligned"] == count and report["no_face"] == []
    for path in dst.rglob("*.jpg"):
        with Image.open(path) as im:
            assert im.size == (112, 112) and im.mode == "L"


def test_align_lists_what_it_dropped_copies_pairs_and_can_keep_a_fallback(photo_tree, tmp_path):
    src, _, landmarks = photo_tree
    lfw = tmp_path / "lfw"
    shutil.copytree(src, lfw / "images")
    (lfw / "pairs.txt").write_text("1 1\na 1 2\nb 1 c 1\n")
    Image.fromarray(np.full((50, 60), 90, np.uint8)).save(lfw / "images" / "a" / "empty.png")
    detector = _DotDetector({(180, 160): [Detection(np.array([0, 0, 150, 170.0]), 0.9, landmarks["a/one.png"])]})
    out = tmp_path / "aligned"
    report = align_folder(lfw / "images", out / "images", detector, progress=False)
    assert report.pairs_copied == str(out / "pairs.txt") and (out / "pairs.txt").read_text().startswith("1 1")
    dropped = (out / "images" / DROPPED_NAME).read_text().splitlines()[1:]
    assert "a/empty.png\tno face found" in dropped and any(line.startswith("b/broken.jpg\t") for line in dropped)
    assert "align_dropped.txt" in report.format_table() and "pairs.txt copied" in report.format_table()
    # --no-face crop: the photo without a face is written as its central crop, counted, not dropped
    kept = align_folder(lfw / "images", tmp_path / "kept", detector, no_face="crop", progress=False)
    assert kept.replaced == ["a/empty.png"] and (tmp_path / "kept" / "a" / "empty.png").is_file()
    assert "a/empty.png" not in (tmp_path / "kept" / DROPPED_NAME).read_text()
    assert (tmp_path / "pairs.txt").exists() is False  # dst not named images: pairs.txt goes into dst itself
    assert kept.pairs_copied == str(tmp_path / "kept" / "pairs.txt")
    with pytest.raises(InvalidOptionError, match="no_face"):
        align_folder(lfw / "images", tmp_path / "x", detector, no_face="fail", progress=False)
