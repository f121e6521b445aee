"""facesphere.evaluate.protocols: pair sets, a hand-built IJB folder (docs/methods.md §8.3 test vector), ident:DIR
with distractors, checked against numbers computed by hand."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from facesphere.data.align import ARCFACE_112x112
from facesphere.data.ijb import read_ijb
from facesphere.errors import DataError, UnknownNameError
from facesphere.evaluate import metrics as M
from facesphere.evaluate.protocols import EvalOptions, run_protocol

from .conftest import write_image

QUIET = EvalOptions(progress=False, batch_size=4)


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_eval_options_validation():
    with pytest.raises(UnknownNameError, match="exact, insightface, sphereface"):
        EvalOptions(accuracy_method="lfw")
    with pytest.raises(UnknownNameError, match="interpolate, nearest"):
        EvalOptions(tar_method="linear")
    with pytest.raises(UnknownNameError, match="sum, concat, none"):
        EvalOptions(flip="mean")


# ---------------------------------------------------------------------------------------------------- pair sets


def _write_lfw(root, size=(112, 112)):
    """2 folds x (1 same + 1 different): A_1/A_2 same, A_1/B_1 different, C_1/C_2 same, C_1/B_1 different."""
    colours = {("A", 1): (200, 0, 0), ("A", 2): (150, 50, 0), ("B", 1): (0, 0, 200),
               ("C", 1): (0, 200, 0), ("C", 2): (0, 160, 90)}
    for (name, i), colour in colours.items():
        write_image(root / "images" / name / f"{name}_{i:04d}.jpg", colour, size=size)
    (root / "pairs.txt").write_text("2 1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t2\nC\t1\tB\t1\n")
    return colours


def test_lfw_pairs_by_hand(tmp_path, mean_colour):
    colours = _write_lfw(tmp_path / "tiny")
    result = run_protocol(f"lfw:{tmp_path / 'tiny'}", mean_colour,
                          EvalOptions(progress=False, batch_size=2))
    c = {k: unit(v) for k, v in colours.items()}
    expected = [c["A", 1] @ c["A", 2], c["A", 1] @ c["B", 1], c["C", 1] @ c["C", 2], c["C", 1] @ c["B", 1]]
    np.testing.assert_allclose(result.scores, expected, atol=1e-6)
    assert result.issame.tolist() == [True, False, True, False]
    assert result.metrics["accuracy"] == 1.0 and result.metrics["auc"] == 1.0
    assert result.metrics["fold_accuracies"] == [1.0, 1.0]  # the file's own 2 folds
    assert result.metrics["images"] == 5 and result.metrics["protocol"] == "pairs"


def test_bin_set_by_hand(tmp_path, mean_colour):
    from facesphere.data.binfile import write_bin

    def png(colour):
        buf = io.BytesIO()
        Image.fromarray(np.full((112, 112, 3), colour, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    colours = [(200, 0, 0), (180, 20, 0), (0, 200, 0), (0, 0, 200)] * 5
    write_bin(tmp_path / "t.bin", [png(c) for c in colours], [True, False] * 5)
    out = run_protocol(f"bin:{tmp_path / 't.bin'}", mean_colour, QUIET)
    assert out.name == "t"
    np.testing.assert_allclose(out.scores[:2], [unit(colours[0]) @ unit(colours[1]), 0.0], atol=1e-6)
    assert out.metrics["accuracy"] == 1.0 and out.metrics["pairs"] == 10


def test_unaligned_images_need_a_detector(tmp_path, mean_colour):
    _write_lfw(tmp_path / "big", size=(250, 250))
    with pytest.raises(DataError, match="--detector"):
        run_protocol(f"lfw:{tmp_path / 'big'}", mean_colour, QUIET)


# ---------------------------------------------------------------------------------------------------- IJB

# loose crops 250x250: the face region (the part that lands in the 112x112 crop when the landmarks are
# 2 x template + (10, 20)) has the image's colour, everything else is white; so only a correct alignment gives
# the colour-mean recogniser the colour itself.
LANDMARKS = 2.0 * ARCFACE_112x112 + np.array([10.0, 20.0])
IJB_IMAGES = [  # name, template, media, colour, faceness
    ("a.png", 1, 10, (200, 0, 0), 1.0),
    ("b.png", 1, 11, (0, 100, 0), 1.0),
    ("c.png", 1, 11, (0, 0, 50), 1.0),
    ("d.png", 2, 20, (200, 200, 0), 0.5),
    ("e.png", 2, 20, (200, 0, 0), 1.0),
    ("f.png", 3, 30, (0, 0, 200), 1.0),
    ("g.png", 4, 40, (0, 200, 0), 1.0),
    ("h.png", 4, 41, (0, 200, 0), 0.9),
    ("i.png", 5, 50, (0, 150, 50), 1.0),
    ("j.png", 6, 60, (200, 150, 0), 1.0),
]
IJB_PAIRS = [(1, 2, 1), (1, 3, 0), (2, 4, 0), (3, 4, 0), (4, 5, 1), (3, 6, 1), (1, 6, 0), (2, 3, 0), (2, 5, 0),
             (1, 5, 0), (3, 5, 0), (4, 6, 0), (5, 6, 0)]


def _write_ijb(root, with_1n=True):
    meta = root / "meta"
    meta.mkdir(parents=True)
    lines5, lines_tm = [], []
    for name, tid, mid, colour, faceness in IJB_IMAGES:
        write_image(root / "loose_crop" / name, colour, size=(250, 250), outside=(255, 255, 255),
                    box=(10, 20, 234, 244))
        lines5.append(" ".join([name, *(f"{v:.4f}" for v in LANDMARKS.ravel()), f"{faceness}"]))
        lines_tm.append(f"{name} {tid} {mid}")
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(lines5) + "\n")
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(lines_tm) + "\n")
    (meta / "ijbc_template_pair_label.txt").write_text("\n".join(f"{a} {b} {l}" for a, b, l in IJB_PAIRS) + "\n")
    if with_1n:
        header = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
        (meta / "ijbc_1N_gallery_G1.csv").write_text(header + "1,100,img/a.png\n1,100,img/b.png\n3,300,img/f.png\n")
        (meta / "ijbc_1N_gallery_G2.csv").write_text(header + "4,400,img/g.png\n")
        (meta / "ijbc_1N_probe_mixed.csv").write_text(header + "2,100,img/d.png\n5,400,img/i.png\n6,300,img/j.png\n")
    return root


def _hand_templates():
    """docs/methods.md §8.3 by hand: flip-sum doubles each colour; x faceness; media mean; template = unit(sum of media)."""
    v = {name: 2.0 * np.array(colour) * q for name, _, _, colour, q in IJB_IMAGES}
    return {
        1: unit(v["a.png"] + (v["b.png"] + v["c.png"]) / 2),  # the test vector: normalize(v1 + (v2 + v3)/2)
        2: unit((v["d.png"] + v["e.png"]) / 2),
        3: unit(v["f.png"]),
        4: unit(v["g.png"] + v["h.png"]),
        5: unit(v["i.png"]),
        6: unit(v["j.png"]),
    }


def test_ijb_pooling_matches_hand_computation(tmp_path, mean_colour):
    root = _write_ijb(tmp_path / "IJBC")
    result = run_protocol(f"ijb:{root}", mean_colour, QUIET)
    t = _hand_templates()
    np.testing.assert_allclose(t[1], unit([400, 100, 50]), atol=1e-12)  # the docs/methods.md §8.3 vector with these colours
    np.testing.assert_allclose(t[2], unit([3, 1, 0]), atol=1e-12)  # faceness 0.5 halves d's weight
    expected = [t[a] @ t[b] for a, b, _ in IJB_PAIRS]
    np.testing.assert_allclose(result.scores, expected, atol=1e-6)
    m = result.metrics
    assert m["protocol"] == "ijb" and m["templates"] == 6 and m["images"] == 10 and m["pairs"] == 13
    assert m["tar_method"] == "nearest"  # the published IJB definition by default
    assert "accuracy" not in m
    # positives {.9898, .9487, 0}; negatives {.9150, .6, .5692, .3162, .3162, .3, .2665, .1204, 0, 0}:
    # AUC = (10 + 10 + 2 x 0.5) / 30; at FAR 0.1 (one false accept) TAR = 2/3 on either definition
    assert m["auc"] == pytest.approx(21 / 30)
    assert m["tar_at_far"] == {"1e-01": pytest.approx(2 / 3)}  # 10 impostors: only FAR 0.1 is defined
    assert m["tar_at_far_by_method"]["interpolate"]["1e-01"] == pytest.approx(
        M.tar_at_far(expected, [l == 1 for *_, l in IJB_PAIRS], 0.1))


def test_ijb_identification_by_hand(tmp_path, mean_colour):
    root = _write_ijb(tmp_path / "IJBC")
    ident = run_protocol(f"ijb:{root}", mean_colour, QUIET).metrics["identification"]
    assert ident["probes"] == 3
    g1, g2, mean = ident["nist"]["G1"], ident["nist"]["G2"], ident["nist"]["mean"]
    # G1 = {T1 (subject 100), T3 (300)}: probe T2 (100) rank 1 at .9898; T6 (300) mate score 0, behind T1 -> rank 2;
    # T5 (400) non-mated with top-1 .3162 -> no false alarm allowed at FPIR 1e-2 or 1e-1 -> only T2 accepted
    assert g1["rank_accuracy"] == {"1": 0.5, "5": 1.0, "10": 1.0}
    assert g1["tpir_at_fpir"] == {"1e-02": 0.5, "1e-01": 0.5}
    assert g1["thresholds"]["1e-02"] == pytest.approx(1 / math.sqrt(10))
    # G2 = {T4 (400)}: T5 mated at .9487, rank 1; non-mated T2 (.3162), T6 (.6) -> tau .6
    assert g2["rank_accuracy"]["1"] == 1.0 and g2["tpir_at_fpir"] == {"1e-02": 1.0, "1e-01": 1.0}
    assert g2["thresholds"]["1e-01"] == pytest.approx(0.6)
    assert mean["rank_accuracy"]["1"] == 0.75 and mean["tpir_at_fpir"]["1e-02"] == 0.75
    # toolbox: gallery G1 u G2, all probes mated; largest non-mate similarity T6-T1 = .9150 -> TPIR 2/3
    tb = ident["toolbox"]
    assert tb["rank_accuracy"] == {"1": pytest.approx(2 / 3), "5": 1.0, "10": 1.0}
    assert tb["tpir_at_fpir"] == {"1e-02": pytest.approx(2 / 3), "1e-01": pytest.approx(2 / 3)}
    assert tb["thresholds"]["1e-02"] == pytest.approx(1900 / (5 * math.sqrt(400**2 + 100**2 + 50**2)))


def test_ijb_without_1n_files_and_meta_errors(tmp_path, mean_colour):
    root = _write_ijb(tmp_path / "IJBB", with_1n=False)
    assert "identification" not in run_protocol(f"ijb:{root}", mean_colour, QUIET).metrics
    meta = read_ijb(root)
    assert meta.image_dir == root / "loose_crop" and meta.template_ids.tolist()[:3] == [1, 1, 1]
    np.testing.assert_allclose(meta.landmarks[0], LANDMARKS, atol=1e-4)
    assert meta.faceness[3] == 0.5
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("1 2 1\n1 99 0\n")
    with pytest.raises(DataError, match="99"):
        read_ijb(root)
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("1 2 7\n")
    with pytest.raises(DataError, match="0 or 1"):
        read_ijb(root)
    (root / "meta" / "ijbc_template_pair_label.txt").unlink()
    with pytest.raises(DataError, match="template_pair_label"):
        read_ijb(root)


# ---------------------------------------------------------------------------------------------------- ident:DIR


def _write_ident(root):
    write_image(root / "gallery" / "A" / "1.png", (200, 0, 0))
    write_image(root / "gallery" / "A" / "2.png", (0, 200, 0))
    write_image(root / "gallery" / "B" / "1.png", (0, 0, 200))
    write_image(root / "gallery" / "C" / "1.png", (100, 100, 100))
    write_image(root / "probe" / "A" / "1.png", (200, 150, 0))
    write_image(root / "probe" / "B" / "1.png", (0, 100, 200))
    write_image(root / "probe" / "D" / "1.png", (150, 0, 150))  # not in the gallery: a non-mated search
    write_image(root / "distractors" / "x" / "d1.png", (250, 0, 0))
    write_image(root / "distractors" / "d2.png", (0, 50, 200))
    return root


def test_ident_dir_by_hand(tmp_path, mean_colour):
    root = _write_ident(tmp_path / "people")
    result = run_protocol(f"ident:{root}", mean_colour, QUIET)
    m = result.metrics
    assert (m["gallery_identities"], m["gallery_images"], m["probes"], m["distractors"]) == (3, 4, 3, 2)
    assert (m["mated_probes"], m["nonmated_probes"]) == (2, 1)
    # probe A (.8, .6, 0): template A = unit(1, 1, 0) scores .98995, rank 1.  probe B unit(0, 1, 2): its template
    # (0, 0, 1) scores .8944 but distractor d2 = unit(0, 1, 4) scores .9762 -> rank 2
    assert m["rank_accuracy"] == {"1": 0.5, "5": 1.0, "10": 1.0}
    # NIST: non-mated probe D's best score is template C (.8165) -> tau = .8165 -> only probe A accepted
    assert m["tpir_at_fpir"]["nist"] == {"1e-02": 0.5, "1e-01": 0.5}
    assert m["tpir_at_fpir"]["toolbox"] is None  # needs every probe mated
    np.testing.assert_allclose(sorted(result.genuine), [2 / math.sqrt(5), 1.4 / math.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(sorted(result.impostor), [1.4 / math.sqrt(3), 2 / math.sqrt(6), 9 / math.sqrt(85)],
                               atol=1e-6)
    # MegaFace-style leave-one-in over A's 3 and B's 2 images against the 2 distractors: 6 + 2 searches, one of
    # them (A's gallery image 2 as the mate of the probe image (.8, .6, 0)) has no distractor ahead
    mf = m["megaface"]
    assert (mf["searches"], mf["identities"], mf["distractors"]) == (8, 2, 2)
    assert mf["rank_accuracy"] == {"1": 1 / 8, "5": 1.0, "10": 1.0}


def test_ident_dir_closed_set_toolbox(tmp_path, mean_colour):
    root = _write_ident(tmp_path / "people")
    for p in (root / "probe" / "D").iterdir():
        p.unlink()
    (root / "probe" / "D").rmdir()
    m = run_protocol(f"ident:{root}", mean_colour, QUIET).metrics
    assert m["tpir_at_fpir"]["nist"] is None  # no non-mated searches: FPIR undefined
    # toolbox, N_q = 2: tau = the largest non-mate similarity over both probes = d2 vs probe B (.9762)
    assert m["tpir_at_fpir"]["toolbox"] == {"1e-02": 0.5, "1e-01": 0.5}


def test_ident_dir_errors(tmp_path, mean_colour):
    (tmp_path / "empty" / "gallery").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        run_protocol(f"ident:{tmp_path / 'empty'}", mean_colour, QUIET)
    write_image(tmp_path / "empty" / "gallery" / "A" / "1.png", (1, 2, 3))
    with pytest.raises(DataError, match="no probe/ folder"):
        run_protocol(f"ident:{tmp_path / 'empty'}", mean_colour, QUIET)


@pytest.mark.parametrize("pairs, problem", [
    (0, "scores is empty"),
    (3, "n_folds=10 is larger than the number of pairs (3)"),
    (20, "no negative (different-identity) pair"),
])
def test_bin_files_that_cannot_be_evaluated_are_named(tmp_path, pairs, problem):
    from facesphere.data.binfile import write_bin

    from .conftest import MeanColour

    images = []
    for i in range(2 * pairs):
        buffer = io.BytesIO()
        Image.new("RGB", (112, 112), (i % 256, 0, 0)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    path = tmp_path / "odd.bin"
    write_bin(path, images, [True] * pairs)
    with pytest.raises(DataError) as info:
        run_protocol(f"bin:{path}", MeanColour(), QUIET)
    assert str(info.value).startswith(f"{path}: cannot evaluate these {pairs} pairs: ") and problem in str(info.value)
