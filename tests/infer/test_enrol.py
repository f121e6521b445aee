"""Gallery housekeeping (facesphere.infer.enrol and `facesphere gallery`): identities from folders, no duplicates,
the model recorded in the gallery, known / unknown at the model's threshold, list, remove, corrupt images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import facesphere as fs
from facesphere.cli import main
from facesphere.errors import DataError
from facesphere.infer.enrol import decide, enrol, enrolment_identities, open_recognizer_for, recorded_recipe
from facesphere.infer.gallery import Gallery, Match


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """people/<id>/*.png: three synthetic identities, two aligned crops each; a stranger's crop beside."""
    from facesphere.data.synthetic import SyntheticConfig, SyntheticFaceDataset

    dataset = SyntheticFaceDataset(SyntheticConfig(seed=6, num_identities=4, images_per_identity=2))
    root = tmp_path_factory.mktemp("enrol")
    for i in range(6):
        folder = root / "people" / f"person{i // 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dataset.image(i)).save(folder / f"{i}.png")
    Image.fromarray(dataset.image(6)).save(root / "stranger.png")
    return root


def test_identities_come_from_person_folders_or_identity(people, tmp_path):
    found = enrolment_identities([people / "people"])
    assert [(p.name, name) for p, name in found] == [(f"{i}.png", f"person{i // 2}") for i in range(6)]
    assert {name for _, name in enrolment_identities([people / "people" / "person0"], "zoe")} == {"zoe"}
    with pytest.raises(DataError, match="--identity NAME"):
        enrolment_identities([people / "people" / "person0"])  # loose photos: not silently "person0"
    with pytest.raises(DataError, match="needs --identity"):
        enrolment_identities([people / "stranger.png"])
    with pytest.raises(DataError, match="no such"):
        enrolment_identities([tmp_path / "nope"])


def test_enrol_records_the_model_and_skips_duplicates(tiny_run, people, tmp_path):
    gallery = tmp_path / "g"
    rec, recipe = open_recognizer_for(gallery, tiny_run)
    report = enrol(gallery, rec, enrolment_identities([people / "people"]), recipe=recipe)
    assert (report.added, report.files_added, report.entries, report.identities) == (6, 6, 6, 3)
    again = enrol(gallery, rec, enrolment_identities([people / "people"]), recipe=recipe)
    assert again.added == 0 and len(again.duplicates) == 6 and again.entries == 6  # same path and content
    assert recorded_recipe(gallery).model == str(tiny_run.resolve())
    reopened, _ = open_recognizer_for(gallery)  # no model given: the recorded one
    np.testing.assert_allclose(reopened.embed(people / "stranger.png"), rec.embed(people / "stranger.png"))
    with Gallery.open(gallery) as g:
        extra = g.entries()[0].extra
        assert len(extra["sha256"]) == 64 and "face" not in extra
    with pytest.raises(DataError, match="pass --model"):
        open_recognizer_for(tmp_path / "new_gallery")


def test_decide_known_or_unknown():
    matches = [Match("alice", 0.62, None, 1), Match("bob", 0.2, None, 2)]
    assert decide(matches, 0.5).identity == "alice"
    unknown = decide(matches, 0.7)
    assert unknown.identity is None and unknown.best == "alice" and unknown.score == 0.62
    assert decide([], 0.5).identity is None


def test_gallery_commands(tiny_run, people, tmp_path, capsys):
    gallery = tmp_path / "g"
    assert main(["gallery", "add", str(gallery), str(people / "people" / "person0"), "--model", str(tiny_run),
                 "--quiet"]) == 2
    assert "--identity NAME" in capsys.readouterr().err
    assert main(["gallery", "add", str(gallery), str(people / "people"), "--model", str(tiny_run), "--quiet"]) == 0
    assert "added 6 face(s) from 6 image(s)" in capsys.readouterr().out
    # no --model: the gallery's own; re-adding adds nothing
    assert main(["gallery", "add", str(gallery), str(people / "people"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "6 already in the gallery" in captured.out and "recorded in the gallery" in captured.err
    assert main(["gallery", "list", str(gallery)]) == 0
    listing = capsys.readouterr().out
    assert "person0" in listing and "3 identities, 6 entries" in listing
    # a different model (here: another flip fusion) is refused
    assert main(["gallery", "add", str(gallery), str(people / "people"), "--model", str(tiny_run), "--flip", "none",
                 "--quiet"]) == 2
    assert "not comparable" in capsys.readouterr().err
    # search, no --model, in input order, one JSON line per probe, an unreadable one in its place
    (tmp_path / "broken.png").write_bytes(b"nope")
    probes = [people / "people" / "person1" / "2.png", tmp_path / "broken.png", people / "stranger.png"]
    assert main(["gallery", "search", str(gallery), *map(str, probes), "--json", "--quiet", "-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in probes]
    assert lines[0]["identity"] == "person1" and lines[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert "cannot decode" in lines[1]["error"]
    assert lines[2]["threshold"] == pytest.approx(fs.FaceRecognizer.from_path(tiny_run).threshold, abs=1e-6)
    # a stranger comes back unknown at a strict threshold, with the score shown
    assert main(["gallery", "search", str(gallery), str(people / "stranger.png"), "--threshold", "0.9999",
                 "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert "unknown (best" in line and "< 1.000" in line
    # removing someone not there says so
    assert main(["gallery", "remove", str(gallery), "nobody"]) == 2
    assert "no identity 'nobody'" in capsys.readouterr().err
    assert main(["gallery", "remove", str(gallery), "person2"]) == 0
    assert main(["gallery", "info", str(gallery)]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["entries"] == 4 and info["model_source"]["model"] == str(tiny_run.resolve())


def test_gallery_add_skips_a_corrupt_image_or_stops_with_strict(tiny_run, people, tmp_path, capsys):
    folder = tmp_path / "in" / "someone"
    folder.mkdir(parents=True)
    for source in sorted((people / "people" / "person0").iterdir()):
        (folder / source.name).write_bytes(source.read_bytes())
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    gallery = tmp_path / "g"
    assert main(["gallery", "add", str(gallery), str(tmp_path / "in"), "--model", str(tiny_run), "--quiet",
                 "--strict"]) == 2
    assert "--strict" in capsys.readouterr().err and not (gallery / "gallery.sqlite").exists()
    assert main(["gallery", "add", str(gallery), str(tmp_path / "in"), "--model", str(tiny_run), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "corrupt.png" in captured.err and "added 2 face(s)" in captured.out and "1 unreadable" in captured.out
    assert main(["gallery", "add", str(tmp_path / "g2"), str(folder / "corrupt.png"), "--identity", "x", "--model",
                 str(tiny_run), "--quiet"]) == 2  # nothing added: an error
    assert "nothing added" in capsys.readouterr().err
