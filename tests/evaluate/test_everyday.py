"""What evaluation says about its data: faces not found (count in the table, a warning, a chosen policy), probes an
alignment dropped (counted as misses), where an `lfw:` spec fails and what `pairs:` takes instead, the `lfw:FILE`
path-pair form, and a missing image's message pointing to align's list of dropped photos."""

from __future__ import annotations

import numpy as np
import pytest

from facesphere.data.dropped import DROPPED_NAME, dropped_text
from facesphere.errors import DataError, FaceSphereWarning, InvalidOptionError
from facesphere.evaluate.protocols import EvalOptions, run_protocol
from facesphere.evaluate.report import format_table
from facesphere.evaluate.run import evaluate_model

from .conftest import write_image


class _FindsBright:
    """A stand-in detector: a face (its landmarks placed as the ArcFace template's, doubled) in photos whose corner
    pixel is bright, none in the others."""

    def detect(self, image):
        from facesphere.infer.detectors import Detection

        if image[0, 0, 0] < 100:
            return []
        points = np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]]) * 2
        return [Detection(np.array([0.0, 0.0, 224.0, 224.0]), 0.99, points)]


def _pairs_file(tmp_path, dark: int = 1):
    """A pair list over 224x224 photos: the ``dark`` first pairs (both images) without a findable face."""
    lines = []
    for i in range(10):
        colour = (200, 150 + i, 100) if i >= dark else (20, 150 + i, 100)
        a = write_image(tmp_path / f"a{i}.png", colour, size=(224, 224))
        b = write_image(tmp_path / f"b{i}.png", (colour[0], colour[1], 100 + 5 * (i % 2)), size=(224, 224))
        lines.append(f"{i % 2} {a} {b}")
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_faces_not_found_are_counted_said_and_chosen(tmp_path, mean_colour):
    spec = f"pairs:{_pairs_file(tmp_path)}"
    with pytest.warns(FaceSphereWarning, match="no face found in 2 of 20 images: central crop used"):
        results = evaluate_model(mean_colour, spec, None, detector=_FindsBright(), progress=False)
    (metrics,) = results["datasets"].values()
    assert metrics["detection"] == {"aligned_as_given": 0, "detected": 18, "no_face": 2, "no_face_policy": "crop"}
    assert "no face found in 2 of 20 images: central crop used (--no-face crop)" in format_table(results)
    with pytest.warns(FaceSphereWarning, match="whole image resized"):
        evaluate_model(mean_colour, spec, None, detector=_FindsBright(), progress=False, no_face="resize")
    with pytest.raises(DataError, match="no face found"):
        evaluate_model(mean_colour, spec, None, detector=_FindsBright(), progress=False, no_face="fail")
    with pytest.raises(InvalidOptionError, match="cannot skip"):
        evaluate_model(mean_colour, spec, None, detector=_FindsBright(), progress=False, no_face="skip")


def test_probes_an_alignment_dropped_count_as_misses(tmp_path, mean_colour):
    root = tmp_path / "people"
    write_image(root / "gallery" / "A" / "1.png", (200, 0, 0))
    write_image(root / "gallery" / "B" / "1.png", (0, 0, 200))
    write_image(root / "probe" / "A" / "1.png", (190, 10, 0))
    write_image(root / "probe" / "B" / "1.png", (0, 10, 190))
    quiet = EvalOptions(progress=False, batch_size=4)
    before = run_protocol(f"ident:{root}", mean_colour, quiet).metrics
    assert before["rank_accuracy"]["1"] == 1.0 and before["missing_probes"] == 0
    (root / DROPPED_NAME).write_text(dropped_text([("probe/A/2.png", "no face found"),
                                                   ("probe/B/7.png", "no face found"),
                                                   ("gallery/B/3.png", "no face found")]))
    after = run_protocol(f"ident:{root}", mean_colour, quiet).metrics
    assert after["missing_probes"] == 2 and after["missing_gallery_images"] == 1 and after["probes"] == 2
    assert after["mated_probes"] == 4 and after["rank_accuracy"]["1"] == 0.5  # 2 found of 4 mated searches
    assert "missing_probes" in after["definitions"]
    table = format_table({"datasets": {"people": after}})
    assert "2 (+2 missing)" in table and "counted as misses" in table


def test_lfw_failures_point_to_pairs_and_lfw_takes_path_pairs(tmp_path, mean_colour):
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    (folder / "pairs.txt").write_text("10 1\nalice 1 2\n")
    with pytest.raises(DataError, match="pairs:FILE"):
        run_protocol(f"lfw:{folder}", mean_colour, EvalOptions(progress=False))
    lines = []
    for i in range(10):
        write_image(folder / "images" / f"x{i}.png", (10 * i, 100, 50))
        write_image(folder / "images" / f"y{i}.png", (10 * i, 100, 50 + i % 2))
        lines.append(f"images/x{i}.png images/y{i}.png {i % 2}" if i % 3 else f"{i % 2} x{i}.png y{i}.png")
    (folder / "pairs.txt").write_text("\n".join(lines) + "\n")
    for spec in (f"lfw:{folder}", f"lfw:{folder / 'pairs.txt'}"):
        metrics = run_protocol(spec, mean_colour, EvalOptions(progress=False)).metrics
        assert metrics["pairs"] == 10 and metrics["genuine_pairs"] == 5


def test_missing_images_point_to_aligns_list_of_dropped_photos(tmp_path, mean_colour):
    folder = tmp_path / "lfw_aligned"
    for name, number in (("alice", 1), ("alice", 2), ("bob", 1)):
        write_image(folder / "images" / name / f"{name}_{number:04d}.jpg", (number * 50, 80, 80))
    (folder / "pairs.txt").write_text("1 1\nalice 1 2\nalice 1 bob 2\n")
    (folder / "images" / DROPPED_NAME).write_text(dropped_text([("bob/bob_0002.jpg", "no face found")]))
    with pytest.raises(DataError) as error:
        run_protocol(f"lfw:{folder}", mean_colour, EvalOptions(progress=False))
    message = str(error.value)
    assert "image not found" in message and DROPPED_NAME in message and "data align" in message
