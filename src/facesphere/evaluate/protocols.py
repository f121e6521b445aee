"""Evaluation protocols: a ``--data`` spec -> its reader -> embeddings -> :mod:`facesphere.metrics`.

Specs (one per ``--data``):

* ``synthetic`` — the built-in held-out synthetic pairs (10 folds); options as ``synthetic:key=value,...`` with
  keys ``pairs_per_fold``, ``seed``, ``difficulty``, ``identity_spread``.
* ``bin:FILE.bin`` — an InsightFace verification ``.bin`` (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, ...).
* ``lfw:DIR`` — ``DIR/pairs.txt`` (View 2) with images in ``DIR/images/<name>/`` or ``DIR/<name>/``.
* ``pairs:FILE`` — an OpenSphere ``label path0 path1`` list (one fold per 1/10 of the file).
* ``ijb:DIR`` — IJB-B / IJB-C (InsightFace release): meta files ``*_name_5pts_score.txt``, ``*_face_tid_mid.txt``,
  ``*_template_pair_label.txt`` in ``DIR`` or ``DIR/meta``, loose crops in ``DIR/loose_crop`` (or ``DIR/images``,
  or ``DIR``); 1:N too when ``*1N_gallery_G1.csv``, ``*1N_gallery_G2.csv`` and ``*1N_probe_mixed.csv`` are there.
* ``ident:DIR`` — 1:N identification: ``DIR/gallery/<identity>/*``, ``DIR/probe/<identity>/*`` and optionally
  ``DIR/distractors/**`` (any depth; every image its own identity).

Pair protocols (synthetic, bin, lfw, pairs) report the LFW-style 10-fold accuracy (``exact`` by default), the
best-threshold accuracy (opensphere), AUC, EER and TAR at FAR 1e-1 … 1e-6 where there are enough impostor pairs
(``#impostors × FAR >= 1``); TAR@FAR is interpolated on the ROC by default. IJB reports the same ROC numbers with
nearest-point TAR@FAR by default (what the published tables use), both variants recorded. Every result records the
definitions it used (``"definitions"``).

Images must be aligned crops of the model's input size, except: IJB loose crops are aligned with their 5 given
landmarks (:func:`facesphere.data.align.align_face`), and any image of another size is detected and aligned when a
face detector is given (``detector=``); an image in which the detector finds no face falls back to its central
crop (counted in ``"detection"``).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import metrics as M
from ..errors import DataError, InvalidOptionError, UnknownNameError

SPEC_KINDS = ("synthetic", "bin", "lfw", "pairs", "ijb", "ident")
FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
RANKS = (1, 5, 10)
FPIRS = (1e-2, 1e-1)
TAR_METHODS = ("interpolate", "nearest")
#: TAR@FAR definition used when none is asked for: nearest ROC point for IJB (the published tables), else interpolated.
DEFAULT_TAR_METHOD = {"pairs": "interpolate", "ijb": "nearest"}
SYNTHETIC_OPTIONS = {"pairs_per_fold": int, "seed": int, "difficulty": float, "identity_spread": float}

ACCURACY_DEFINITIONS = {
    "exact": "10-fold; per fold the exact optimal threshold on the other 9 folds (sort-based, same iff score > τ; "
             "facesphere); threshold in cosine space",
    "insightface": "10-fold; thresholds np.arange(0, 4, 0.01) on the squared distance 2 − 2·cos, same iff d < τ, "
                   "first argmax on the 9 training folds (insightface verification.py); threshold in distance space",
    "sphereface": "10-fold; thresholds −1:1e−4:1 on the cosine, correct iff pos > τ / neg < τ, τ = mean of all "
                  "optimal grid values (SphereFace evaluation.m); threshold in cosine space",
}
TAR_DEFINITIONS = {
    "interpolate": "TPR linearly interpolated on the ROC at the target FPR (opensphere interp1d)",
    "nearest": "TPR of the ROC point (sklearn roc_curve, drop_intermediate) whose FPR is nearest to the target, ties "
               "-> larger TPR (insightface / arcface_torch IJB evaluation)",
}
IDENT_DEFINITIONS = {
    "rank": "rank-k over mated probes; rank = 1 + #non-mate gallery entries scoring >= the mate (ties count against)",
    "nist": "NIST open-set: FPIR = non-mated probes whose top-1 score >= τ; TPIR = mated probes with mate at rank 1 "
            "and score > τ (needs non-mated probes)",
    "toolbox": "insightface ijb_1n / opensphere: τ = ceil(FPIR·N_q)-th largest of all non-mate similarities, "
               "TPIR = probes whose mate score > τ (needs every probe mated)",
}

__all__ = [
    "SPEC_KINDS", "FARS", "RANKS", "FPIRS", "DEFAULT_TAR_METHOD", "DataSpec", "EvalOptions", "ProtocolResult",
    "parse_spec", "run_protocol", "pair_metrics", "CropPreparer", "read_ijb", "IJBMeta", "read_ident", "IdentSet",
    "identification_search", "leave_one_in", "far_key",
]


def far_key(rate: float) -> str:
    """The JSON key of a FAR / FPIR: ``1e-04``."""
    return f"{rate:.0e}"


# ----------------------------------------------------------------------------------------------------------------
# specs


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` spec: ``kind`` (one of :data:`SPEC_KINDS`), ``path`` (None for synthetic), ``name`` (the
    dataset's display name) and ``options`` (synthetic only)."""

    text: str
    kind: str
    path: Path | None
    name: str
    options: dict = field(default_factory=dict)


def parse_spec(spec: str) -> DataSpec:
    """Parse and check one ``--data`` spec (see the module docstring); a missing path is a :class:`DataError`."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidOptionError(f"a --data spec must be a non-empty string, got {spec!r}")
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if kind == "synthetic":
        options: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in rest.split(","))) if sep else ():
            key, eq, value = item.partition("=")
            if not eq or key not in SYNTHETIC_OPTIONS:
                raise InvalidOptionError(
                    f"--data {text}: bad synthetic option {item!r}; use key=value with keys "
                    f"{', '.join(SYNTHETIC_OPTIONS)}"
                )
            try:
                options[key] = SYNTHETIC_OPTIONS[key](value)
            except ValueError:
                raise InvalidOptionError(f"--data {text}: {key} must be a number, got {value!r}") from None
        return DataSpec(text, "synthetic", None, "synthetic", options)
    if kind not in SPEC_KINDS or not sep or not rest:
        raise UnknownNameError(
            f"unknown --data spec {text!r}; valid: synthetic, bin:FILE.bin, lfw:DIR, pairs:FILE, ijb:DIR, ident:DIR"
        )
    path = Path(rest).expanduser()
    want_dir = kind in ("lfw", "ijb", "ident")
    if want_dir and not path.is_dir():
        raise DataError(f"--data {text}: {path} is not a directory")
    if not want_dir and not path.is_file():
        raise DataError(f"--data {text}: {path} is not a file")
    name = (path.resolve().name if want_dir else path.stem) or kind
    return DataSpec(text, kind, path, name)


# ----------------------------------------------------------------------------------------------------------------
# options and results


@dataclass
class EvalOptions:
    """How to evaluate: flip fusion, batch size, metric definitions, detector, search, progress bars.

    ``tar_method`` None uses :data:`DEFAULT_TAR_METHOD` per protocol; ``synthetic`` holds defaults for the synthetic
    set (keys of :data:`SYNTHETIC_OPTIONS`), overridden by the spec's own options.
    """

    flip: str = "sum"
    batch_size: int = 64
    accuracy_method: str = "exact"
    tar_method: str | None = None
    detector: Any = None
    progress: bool = True
    search_method: str = "auto"
    ranks: Sequence[int] = RANKS
    fpirs: Sequence[float] = FPIRS
    fars: Sequence[float] = FARS
    synthetic: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.flip not in ("sum", "concat", "none"):
            raise UnknownNameError(f"unknown flip mode {self.flip!r}; valid: sum, concat, none")
        if self.accuracy_method not in M.KFOLD_METHODS:
            raise UnknownNameError(
                f"unknown accuracy method {self.accuracy_method!r}; valid: {', '.join(M.KFOLD_METHODS)}")
        if self.tar_method is not None and self.tar_method not in TAR_METHODS:
            raise UnknownNameError(f"unknown TAR@FAR method {self.tar_method!r}; valid: {', '.join(TAR_METHODS)}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise InvalidOptionError(f"batch size must be >= 1, got {self.batch_size!r}")


@dataclass
class ProtocolResult:
    """One dataset's evaluation: ``metrics`` (JSON-ready), and the raw scores for plots.

    ``scores`` / ``issame`` (pair protocols: every pair's cosine and label, for the ROC); ``genuine`` / ``impostor``
    (the two score populations of the histogram: pair scores, or for 1:N each mated probe's mate score and each
    probe's best non-mate score).
    """

    name: str
    spec: str
    protocol: str
    metrics: dict
    scores: np.ndarray | None = None
    issame: np.ndarray | None = None
    genuine: np.ndarray | None = None
    impostor: np.ndarray | None = None
    folds: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------------------------
# pair metrics


def pair_metrics(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray | None = None, *,
                 accuracy_method: str | None = "exact", tar_method: str = "interpolate",
                 fars: Sequence[float] = FARS) -> dict[str, Any]:
    """Verification metrics of scored pairs (JSON-ready).

    ``accuracy_method`` one of ``exact`` / ``insightface`` / ``sphereface`` (10-fold; ``folds`` gives each pair's
    fold, else — or when it names a single fold — 10 contiguous blocks), or None for no k-fold accuracy (IJB). TAR@FAR is reported for every FAR with
    ``#impostors × FAR >= 1``, with both definitions (``tar_at_far_by_method``); ``tar_at_far`` is the one named by
    ``tar_method``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    n_pos = int(issame.sum())
    n_neg = int(issame.size - n_pos)
    out: dict[str, Any] = {"pairs": int(issame.size), "genuine_pairs": n_pos, "impostor_pairs": n_neg}
    definitions: dict[str, str] = {}
    if folds is not None and np.unique(folds).size < 2:  # e.g. a one-fold View-1 list: 10 contiguous blocks instead
        folds = None
        definitions["folds"] = "the set defines a single fold: 10 contiguous blocks of pairs in file order used"
    if accuracy_method is not None:
        kfold = M.kfold_accuracy(scores, issame, 10, method=accuracy_method, folds=folds)
        out.update({
            "accuracy": kfold.mean,
            "accuracy_std": kfold.std,
            "threshold": float(np.mean(kfold.thresholds)),
            "fold_thresholds": [float(t) for t in kfold.thresholds],
            "fold_accuracies": [float(a) for a in kfold.accuracies],
            "threshold_space": kfold.threshold_space,
            "accuracy_method": accuracy_method,
            "best_threshold_accuracy": M.best_threshold_accuracy(scores, issame),
        })
        definitions["accuracy"] = ACCURACY_DEFINITIONS[accuracy_method]
        definitions["accuracy_std"] = "population std (ddof=0) over the 10 folds"
        definitions["best_threshold_accuracy"] = "no folds, best accuracy over all ROC thresholds (opensphere ACC)"
    curve = M.roc(scores, issame)
    out["auc"] = M.auc(curve.fpr, curve.tpr)
    out["eer"] = M.eer(scores, issame)
    defined = [f for f in fars if n_neg * f >= 1]
    by_method: dict[str, dict[str, float]] = {}
    for method in TAR_METHODS:
        values = M.tar_at_far(scores, issame, defined, method=method) if defined else []
        by_method[method] = {far_key(f): float(v) for f, v in zip(defined, values)}
    out["tar_method"] = tar_method
    out["tar_at_far"] = by_method[tar_method]
    out["tar_at_far_by_method"] = by_method
    definitions["tar_at_far"] = TAR_DEFINITIONS[tar_method] + "; reported where #impostor pairs × FAR >= 1"
    definitions["auc"] = "trapezoidal area under the full ROC (sklearn auc)"
    definitions["eer"] = "FPR where the piecewise-linear ROC crosses FPR = 1 − TPR"
    out["definitions"] = definitions
    return out


# ----------------------------------------------------------------------------------------------------------------
# image preparation: aligned crops, or detect + align


def template_for(size: Sequence[int]) -> str | tuple[int, int]:
    """The 5-point alignment template of a model input size: ``arcface`` (112x112), ``sphereface`` (112x96)."""
    hw = (int(size[0]), int(size[1]))
    if hw == (112, 112):
        return "arcface"
    if hw == (112, 96):
        return "sphereface"
    return hw


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def central_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fallback crop when no face is detected: the central region of half the image's shorter side (with the
    model's aspect ratio), resized to ``size`` (bilinear)."""
    h, w = image.shape[:2]
    ch = max(1, min(h, int(round(0.5 * min(h, w) * max(1.0, size[0] / size[1])))))
    cw = max(1, min(w, int(round(ch * size[1] / size[0]))))
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(np.ascontiguousarray(image[top:top + ch, left:left + cw]), size)


class CropPreparer:
    """``(image uint8 (H, W, 3), source) -> aligned crop (input_size)``.

    An image already of ``input_size`` is taken as an aligned crop. Any other image is detected and aligned with
    ``detector`` (``facesphere.infer.detectors.detect_and_align``, largest face); without a detector it is a
    :class:`DataError`. When the detector finds no face the central crop is used (:func:`central_crop`) and counted
    in ``no_face``.
    """

    def __init__(self, input_size: Sequence[int], detector: Any = None) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.detector = detector
        self.template = template_for(self.input_size)
        self.aligned_as_given = 0
        self.detected = 0
        self.no_face = 0

    def __call__(self, image: np.ndarray, source: str) -> np.ndarray:
        if tuple(image.shape[:2]) == self.input_size:
            self.aligned_as_given += 1
            return image
        if self.detector is None:
            raise DataError(
                f"{source}: image is {image.shape[0]}x{image.shape[1]}, the model takes aligned "
                f"{self.input_size[0]}x{self.input_size[1]} crops: align the data first (facesphere data align) or "
                "pass a face detector (--detector WEIGHTS)"
            )
        from ..infer.detectors import detect_and_align

        aligned, _ = detect_and_align(image, self.detector, template=self.template)
        if aligned is None:
            self.no_face += 1
            return central_crop(image, self.input_size)
        self.detected += 1
        if tuple(aligned.shape[:2]) != self.input_size:
            aligned = _resize(np.ascontiguousarray(aligned), self.input_size)
        return aligned

    def summary(self) -> dict[str, int]:
        """Counts of images used as given, detected and aligned, and with no face found (central crop)."""
        return {"aligned_as_given": self.aligned_as_given, "detected": self.detected, "no_face": self.no_face}


# ----------------------------------------------------------------------------------------------------------------
# embedding with a progress bar


def _bar(total: int, desc: str, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False)


def _embed(embedder: Any, load: Callable[[int], np.ndarray], n: int, options: EvalOptions, desc: str, *,
           normalize: bool = True, bar: Any = None) -> np.ndarray:
    from .verification import embed_images

    own = bar is None
    bar = _bar(n, desc, options.progress) if own else bar
    try:
        return embed_images(embedder, load, n, batch_size=int(options.batch_size), flip=options.flip,
                            progress=bar, normalize=normalize)
    finally:
        if own and bar is not None:
            bar.close()


def _input_size(embedder: Any) -> tuple[int, int]:
    size = getattr(embedder, "input_size", None)
    if size is None:
        raise InvalidOptionError("the model has no input_size: load it with facesphere.infer.models.load_embedder")
    return int(size[0]), int(size[1])


# ----------------------------------------------------------------------------------------------------------------
# pair protocols


def _run_pairs(spec: DataSpec, embedder: Any, options: EvalOptions) -> ProtocolResult:
    from .verification import load_verification_set

    size = _input_size(embedder)
    preparer = CropPreparer(size, options.detector)
    if spec.kind == "synthetic":
        synth = {**options.synthetic, **spec.options}
        vset = load_verification_set("synthetic", image_size=size, **synth)
    else:
        vset = load_verification_set(f"{spec.kind}:{spec.path}", image_size=size, prepare=preparer)
    features = _embed(embedder, vset.load, vset.num_images, options, spec.name)
    scores = np.einsum("ij,ij->i", features[vset.idx1], features[vset.idx2]).astype(np.float64)
    tar_method = options.tar_method or DEFAULT_TAR_METHOD["pairs"]
    result = pair_metrics(scores, vset.issame, vset.folds, accuracy_method=options.accuracy_method,
                          tar_method=tar_method, fars=options.fars)
    result = {"protocol": "pairs", "spec": spec.text, "images": int(vset.num_images), **result}
    if spec.kind == "synthetic":
        result["synthetic"] = {**options.synthetic, **spec.options}
    if preparer.detected or preparer.no_face:
        result["detection"] = preparer.summary()
    return ProtocolResult(spec.name, spec.text, "pairs", result, scores, np.asarray(vset.issame, dtype=bool),
                          scores[vset.issame], scores[~vset.issame],
                          None if vset.folds is None else np.asarray(vset.folds))


# ----------------------------------------------------------------------------------------------------------------
# IJB-B / IJB-C


@dataclass
class IJBMeta:
    """IJB meta data (FORMATS §5), one row per face image.

    ``names`` (n,) image file names; ``landmarks`` (n, 5, 2) on the loose crop; ``faceness`` (n,); ``template_ids``
    and ``media_ids`` (n,) int64; ``pairs`` (P, 3) int64 rows ``t1 t2 label``; ``gallery`` ``{"G1": (templates,
    subjects), "G2": ...}`` and ``probe`` ``(templates, subjects)`` for 1:N (None when the CSVs are absent).
    """

    root: Path
    image_dir: Path
    names: list[str]
    landmarks: np.ndarray
    faceness: np.ndarray
    template_ids: np.ndarray
    media_ids: np.ndarray
    pairs: np.ndarray
    gallery: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    probe: tuple[np.ndarray, np.ndarray] | None = None


def _find_one(root: Path, pattern: str, what: str, required: bool = True) -> Path | None:
    found: list[Path] = []
    for folder in (root, root / "meta"):
        if folder.is_dir():
            found += sorted(p for p in folder.glob(pattern) if p.is_file())
    if not found:
        if required:
            raise DataError(f"{root}: no IJB {what} file ({pattern}) here or in {root / 'meta'}")
        return None
    if len(found) > 1:
        raise DataError(f"{root}: several IJB {what} files ({', '.join(p.name for p in found)}); point ijb: at a "
                        "folder holding one protocol")
    return found[0]


def _read_text_rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        with open(path, encoding="utf-8") as f:
            return [(n, line.split()) for n, line in enumerate(f, 1) if line.strip()]
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 text file ({error})") from None


def _read_int_table(path: Path, columns: int, what: str) -> np.ndarray:
    try:
        table = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise DataError(f"{path}: cannot read the {what} ({error})") from None
    if table.size == 0:
        raise DataError(f"{path}: the {what} file is empty")
    if table.shape[1] != columns:
        raise DataError(f"{path}: expected {columns} integer columns per line ({what}), found {table.shape[1]}")
    return table


def _read_csv_templates(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unique (TEMPLATE_ID, SUBJECT_ID) of a 1:N protocol CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip().upper() for h in next(reader, [])]
            try:
                t_col, s_col = header.index("TEMPLATE_ID"), header.index("SUBJECT_ID")
            except ValueError:
                raise DataError(f"{path}: expected columns TEMPLATE_ID and SUBJECT_ID, got {header}") from None
            subject_of: dict[int, int] = {}
            for line_no, row in enumerate(reader, 2):
                if not row:
                    continue
                try:
                    t, s = int(row[t_col]), int(row[s_col])
                except (ValueError, IndexError):
                    raise DataError(f"{path}: line {line_no}: bad TEMPLATE_ID / SUBJECT_ID in {row!r}") from None
                if subject_of.setdefault(t, s) != s:
                    raise DataError(f"{path}: line {line_no}: template {t} has two subjects ({subject_of[t]}, {s})")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 text file ({error})") from None
    if not subject_of:
        raise DataError(f"{path}: no templates listed")
    templates = np.array(sorted(subject_of), dtype=np.int64)
    return templates, np.array([subject_of[t] for t in templates], dtype=np.int64)


def read_ijb(root: str | os.PathLike) -> IJBMeta:
    """Read an IJB-B / IJB-C protocol folder (see the module docstring); problems raise :class:`DataError`."""
    root = Path(root)
    lmk_path = _find_one(root, "*_name_5pts_score.txt", "landmark (name_5pts_score)")
    tid_path = _find_one(root, "*_face_tid_mid.txt", "template/media (face_tid_mid)")
    pair_path = _find_one(root, "*_template_pair_label.txt", "template pair (template_pair_label)")
    names: list[str] = []
    landmarks: list[list[float]] = []
    faceness: list[float] = []
    for line_no, tokens in _read_text_rows(lmk_path):
        if len(tokens) not in (11, 12):
            raise DataError(f"{lmk_path}: line {line_no}: expected 'image x1 y1 ... x5 y5 faceness' (12 fields), "
                            f"got {len(tokens)}")
        try:
            values = [float(t) for t in tokens[1:]]
        except ValueError:
            raise DataError(f"{lmk_path}: line {line_no}: landmarks and faceness must be numbers") from None
        names.append(tokens[0])
        landmarks.append(values[:10])
        faceness.append(values[10] if len(values) == 11 else 1.0)
    tid_rows = _read_text_rows(tid_path)
    tid_names = [tokens[0] for _, tokens in tid_rows]
    for line_no, tokens in tid_rows:
        if len(tokens) != 3:
            raise DataError(f"{tid_path}: line {line_no}: expected 'image template_id media_id', got {len(tokens)} "
                            "fields")
    try:
        tm = np.array([[int(tokens[1]), int(tokens[2])] for _, tokens in tid_rows], dtype=np.int64).reshape(-1, 2)
    except ValueError:
        raise DataError(f"{tid_path}: template and media ids must be integers") from None
    if tid_names != names:  # not row-aligned: match by image name
        where = {name: i for i, name in enumerate(names)}
        if len(where) != len(names):
            raise DataError(f"{lmk_path}: image names repeat and the two meta files are not row-aligned")
        missing = [n for n in tid_names if n not in where]
        if missing:
            raise DataError(f"{tid_path}: {len(missing)} images have no landmarks in {lmk_path.name} "
                            f"(first: {missing[0]})")
        order = [where[n] for n in tid_names]
        names = tid_names
        landmarks = [landmarks[i] for i in order]
        faceness = [faceness[i] for i in order]
    if not names:
        raise DataError(f"{tid_path}: no images listed")
    pairs = _read_int_table(pair_path, 3, "template pairs")
    if not np.isin(pairs[:, 2], (0, 1)).all():
        raise DataError(f"{pair_path}: labels (third column) must be 0 or 1")
    known = np.unique(tm[:, 0])
    unknown = ~np.isin(pairs[:, :2], known)
    if unknown.any():
        raise DataError(f"{pair_path}: {int(unknown.sum())} pair entries name templates with no image in "
                        f"{tid_path.name} (first: {int(pairs[:, :2][unknown][0])})")
    image_dir = next((d for d in (root / "loose_crop", root / "loose_crops", root / "images") if d.is_dir()), root)
    meta = IJBMeta(root, image_dir, names, np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2),
                   np.asarray(faceness, dtype=np.float64), tm[:, 0].copy(), tm[:, 1].copy(), pairs)
    g1 = _find_one(root, "*1N_gallery_G1.csv", "1:N gallery G1", required=False)
    g2 = _find_one(root, "*1N_gallery_G2.csv", "1:N gallery G2", required=False)
    probe = _find_one(root, "*1N_probe_mixed.csv", "1:N probe", required=False)
    if g1 is not None and probe is not None:
        meta.gallery = {"G1": _read_csv_templates(g1)}
        if g2 is not None:
            meta.gallery["G2"] = _read_csv_templates(g2)
        meta.probe = _read_csv_templates(probe)
        for name, (templates, _) in [*meta.gallery.items(), ("probe", meta.probe)]:
            missing = templates[~np.isin(templates, known)]
            if missing.size:
                raise DataError(f"{root}: 1:N {name} template {int(missing[0])} has no image in {tid_path.name} "
                                f"({missing.size} missing)")
    return meta


def ijb_image_features(meta: IJBMeta, embedder: Any, options: EvalOptions) -> np.ndarray:
    """Per-image IJB features (METHODS §8.3 steps 1-2): loose crop aligned with its 5 landmarks, flip-fused, *not*
    normalised, times the faceness score. float32 ``(n, D)``."""
    from ..data.align import align_face
    from ..data.image import read_image

    size = _input_size(embedder)
    template = template_for(size)

    def load(i: int) -> np.ndarray:
        path = meta.image_dir / meta.names[i]
        aligned = align_face(read_image(path), meta.landmarks[i], template=template)
        if tuple(aligned.shape[:2]) != size:
            raise DataError(f"{path}: aligned crop is {aligned.shape[:2]}, the model takes {size}")
        return aligned

    features = _embed(embedder, load, len(meta.names), options, meta.root.name or "ijb", normalize=False)
    return features * meta.faceness.astype(np.float32)[:, None]


def _run_ijb(spec: DataSpec, embedder: Any, options: EvalOptions) -> ProtocolResult:
    meta = read_ijb(spec.path)
    features = ijb_image_features(meta, embedder, options)
    template_ids, template_feats = M.pool_templates(features, meta.template_ids, meta.media_ids)
    scores = M.verification_scores(template_ids, template_feats, meta.pairs[:, 0], meta.pairs[:, 1])
    issame = meta.pairs[:, 2] == 1
    tar_method = options.tar_method or DEFAULT_TAR_METHOD["ijb"]
    result = pair_metrics(scores, issame, accuracy_method=None, tar_method=tar_method, fars=options.fars)
    result = {"protocol": "ijb", "spec": spec.text, "images": len(meta.names),
              "templates": int(template_ids.size), **result}
    result["definitions"]["features"] = (
        f"aligned loose crop, flip {options.flip}, not normalised, × faceness; media = mean of its images, "
        "template = normalise(sum of media); score = cosine (METHODS §8.3)")
    if meta.gallery is not None and meta.probe is not None:
        row = {int(t): i for i, t in enumerate(template_ids)}

        def feats(templates: np.ndarray) -> np.ndarray:
            return template_feats[[row[int(t)] for t in templates]]

        probe_t, probe_s = meta.probe
        per_gallery = {}
        for name, (g_t, g_s) in meta.gallery.items():
            res, _ = identification_search(feats(g_t), g_s, feats(probe_t), probe_s, ranks=options.ranks,
                                           fpirs=options.fpirs, definitions=("nist",), method=options.search_method)
            per_gallery[name] = _ident_json(res["nist"])
        union_t = np.concatenate([g[0] for g in meta.gallery.values()])
        union_s = np.concatenate([g[1] for g in meta.gallery.values()])
        covered = np.isin(probe_s, union_s)
        toolbox: dict[str, Any] = {}
        if covered.all():
            res, _ = identification_search(feats(union_t), union_s, feats(probe_t), probe_s, ranks=options.ranks,
                                           fpirs=options.fpirs, definitions=("toolbox",),
                                           method=options.search_method)
            toolbox = _ident_json(res["toolbox"])
        result["identification"] = {
            "probes": int(probe_t.size),
            "nist": {**per_gallery, "mean": _mean_ident(list(per_gallery.values()))},
            "toolbox": toolbox or {"note": f"{int((~covered).sum())} probes have no mate in G1 ∪ G2"},
        }
        result["definitions"]["identification"] = IDENT_DEFINITIONS
    return ProtocolResult(spec.name, spec.text, "ijb", result, scores, issame, scores[issame], scores[~issame])


# ----------------------------------------------------------------------------------------------------------------
# 1:N identification


def _ident_json(result: M.IdentificationResult) -> dict[str, Any]:
    return {
        "rank_accuracy": {str(k): v for k, v in result.rank_accuracy.items()},
        "tpir_at_fpir": {far_key(f): v for f, v in result.tpir.items()},
        "thresholds": {far_key(f): v for f, v in result.thresholds.items()},
        "mated_probes": result.n_mated,
        "nonmated_probes": result.n_nonmated,
    }


def _mean_ident(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Average of per-gallery results (IJB 1:N: G1 and G2 searched separately, then averaged)."""
    out: dict[str, Any] = {}
    for key in ("rank_accuracy", "tpir_at_fpir"):
        out[key] = {k: float(np.mean([r[key][k] for r in results])) for k in results[0][key]}
    return out


def identification_search(gallery_feats: np.ndarray, gallery_ids: Any, probe_feats: np.ndarray, probe_ids: Any, *,
                          ranks: Sequence[int] = RANKS, fpirs: Sequence[float] = FPIRS,
                          definitions: Sequence[str] = ("nist", "toolbox"), method: str = "auto",
                          batch_size: int | None = None, index: Any = None
                          ) -> tuple[dict[str, M.IdentificationResult], dict[str, np.ndarray]]:
    """1:N metrics through a top-k search (:mod:`.search`), so large galleries never need the full score matrix.

    Same definitions and answers as :func:`facesphere.metrics.identification_metrics` (exact with ``method="numpy"``
    or ``"flat"``): each probe is searched for its top ``K = max(ranks) + m`` entries (``m`` = the most gallery
    entries one subject has), plus ``ceil(max(fpirs)·Q)`` for the toolbox definition; the mate's rank is exact
    whenever it is <= max(ranks). ``definitions`` that do not apply are skipped (``toolbox`` needs every probe mated).
    ``index``: a prebuilt :class:`~.search.SearchIndex` over ``gallery_feats``.

    Returns ``({definition: IdentificationResult}, summary)`` with per-probe arrays ``mated``, ``mate_score``
    (-inf where unmated), ``rank`` and ``top_nonmate`` (best non-mate score).
    """
    from .search import SearchIndex

    g_ids = np.asarray(gallery_ids)
    p_ids = np.asarray(probe_ids)
    g = np.asarray(gallery_feats, dtype=np.float32)
    p = np.asarray(probe_feats, dtype=np.float32)
    if g.ndim != 2 or p.ndim != 2 or g.shape[1] != p.shape[1]:
        raise InvalidOptionError(f"gallery {g.shape} and probe {p.shape} features must be 2-D of one dimension")
    if g_ids.shape != (g.shape[0],) or p_ids.shape != (p.shape[0],):
        raise InvalidOptionError("one id per gallery row and per probe row is needed")
    _, codes = np.unique(np.concatenate([g_ids, p_ids]), return_inverse=True)
    codes = codes.reshape(-1)
    g_code, p_code = codes[: g.shape[0]], codes[g.shape[0]:]
    n_q = p.shape[0]
    index = index if index is not None else SearchIndex(g, method=method)
    g_n, p_n = index.gallery, _normalised(p)
    # mates of every probe: gallery rows of its subject (padded with -1)
    order = np.argsort(g_code, kind="stable")
    sorted_codes = g_code[order]
    first = np.searchsorted(sorted_codes, p_code, side="left")
    count = np.searchsorted(sorted_codes, p_code, side="right") - first
    mated = count > 0
    m = int(count.max()) if n_q else 0
    fpir_list = [float(f) for f in fpirs]
    want = [d for d in definitions if d != "toolbox" or mated.all()]
    k = max(ranks) + m
    if "toolbox" in want and fpir_list:
        k = max(k, math.ceil(max(fpir_list) * n_q) + m)
    scores, rows = index.search(p_n, k, batch_size=batch_size)
    valid = rows >= 0
    is_mate = valid & (g_code[np.where(valid, rows, 0)] == p_code[:, None])
    # mate score: from the list when the mate is there (same arithmetic as the non-mates), else computed directly
    direct = np.full(n_q, -np.inf, dtype=np.float32)
    for j in range(m):
        has = count > j
        r = order[np.minimum(first + j, order.size - 1)]
        s = np.einsum("ij,ij->i", p_n, g_n[r])
        direct = np.where(has, np.maximum(direct, s), direct)
    listed = np.where(is_mate, scores, -np.inf).max(axis=1)
    mate_score = np.where(is_mate.any(axis=1), listed, direct)
    mate_score = np.where(mated, mate_score, -np.inf)
    nonmate = valid & ~is_mate
    rank = 1 + np.count_nonzero(nonmate & (scores >= mate_score[:, None]), axis=1)
    top1 = scores[:, 0].astype(np.float64)
    nonmate_scores = np.where(nonmate, scores, -np.inf)
    top_nonmate = nonmate_scores.max(axis=1)
    flat = scores[nonmate]
    results: dict[str, M.IdentificationResult] = {}
    for definition in want:
        results[definition] = M.identification_from_summaries(
            mate_score, np.where(mated, rank, 0), top1, mated, flat if definition == "toolbox" else None,
            ranks, fpir_list, definition=definition)
    summary = {"mated": mated, "mate_score": mate_score.astype(np.float64), "rank": rank,
               "top_nonmate": top_nonmate.astype(np.float64)}
    return results, summary


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norms > 0, norms, 1.0).astype(np.float32)[:, None]


def leave_one_in(features: np.ndarray, identity_ids: Any, distractors: np.ndarray, *, ranks: Sequence[int] = RANKS,
                 sizes: Sequence[int] | None = None, method: str = "auto") -> dict[str, Any]:
    """MegaFace-style identification (METHODS §8.5): for every identity with >= 2 images, each image in turn is
    the single gallery mate among the distractors and every *other* image of the identity is a probe.

    ``features`` (n, D) of the identities' images with ``identity_ids`` (n,); ``distractors`` (N, D). A search is
    a hit at rank k iff fewer than k distractors score >= the mate (ties count against). ``sizes``: distractor
    counts to report (nested prefixes of ``distractors``; default 10, 100, … up to N, and N).

    Returns ``{"searches": S, "identities": I, "by_distractors": {str(n): {str(k): rank-k}}, "rank_accuracy":
    {str(k): …} at the largest size}``.
    """
    from .search import SearchIndex

    f = _normalised(features)
    d = np.asarray(distractors, dtype=np.float32)
    ids = np.asarray(identity_ids)
    n_d = d.shape[0]
    if sizes is None:
        sizes = [10 ** e for e in range(1, 7) if 10 ** e < n_d] + [n_d]
    sizes = sorted({int(s) for s in sizes if 1 <= int(s) <= n_d})
    kmax = max(ranks)
    _, codes = np.unique(ids, return_inverse=True)
    codes = codes.reshape(-1)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1], True])
    groups = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= 2]
    searches = sum(len(gr) * (len(gr) - 1) for gr in groups)
    by_size: dict[str, dict[str, float]] = {}
    for size in sizes:
        index = SearchIndex(d[:size], method=method)
        kth, _ = index.search(f, min(kmax, size))  # (n, k) best distractor scores of every image
        hits = {r: 0 for r in ranks}
        for group in groups:
            sims = f[group] @ f[group].T  # [gallery image, probe image]
            off = ~np.eye(len(group), dtype=bool)
            for r in ranks:
                if r > size:
                    hits[r] += int(off.sum())
                    continue
                hits[r] += int(np.count_nonzero(off & (sims > kth[group, r - 1][None, :])))
        by_size[str(size)] = {str(r): (hits[r] / searches if searches else float("nan")) for r in ranks}
    return {"searches": int(searches), "identities": len(groups), "distractors": int(n_d),
            "by_distractors": by_size, "rank_accuracy": by_size[str(sizes[-1])] if sizes else {}}


@dataclass
class IdentSet:
    """An ``ident:DIR`` folder: image paths with identity names (gallery, probe) and distractor paths."""

    root: Path
    gallery: list[tuple[Path, str]]
    probe: list[tuple[Path, str]]
    distractors: list[Path]


def _identity_images(folder: Path) -> list[tuple[Path, str]]:
    from ..data.image import is_image_file

    out = []
    for identity in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out += [(f, identity.name) for f in sorted(identity.iterdir()) if f.is_file() and is_image_file(f)]
    return out


def read_ident(root: str | os.PathLike) -> IdentSet:
    """Read ``root/gallery/<id>/*``, ``root/probe/<id>/*`` and optional ``root/distractors/**``."""
    from ..data.image import is_image_file

    root = Path(root)
    parts = {}
    for part in ("gallery", "probe"):
        folder = root / part
        if not folder.is_dir():
            raise DataError(f"{root}: no {part}/ folder (expected {part}/<identity>/<images>)")
        parts[part] = _identity_images(folder)
        if not parts[part]:
            raise DataError(f"{folder}: no images in <identity>/ sub-folders")
    distractor_dir = root / "distractors"
    distractors = sorted(p for p in distractor_dir.rglob("*") if p.is_file() and is_image_file(p)) \
        if distractor_dir.is_dir() else []
    return IdentSet(root, parts["gallery"], parts["probe"], distractors)


def _run_ident(spec: DataSpec, embedder: Any, options: EvalOptions) -> ProtocolResult:
    from ..data.image import read_image

    data = read_ident(spec.path)
    preparer = CropPreparer(_input_size(embedder), options.detector)
    paths = [p for p, _ in data.gallery] + [p for p, _ in data.probe] + data.distractors

    def load(i: int) -> np.ndarray:
        return preparer(read_image(paths[i]), str(paths[i]))

    features = _embed(embedder, load, len(paths), options, spec.name)
    n_g, n_p = len(data.gallery), len(data.probe)
    g_names = np.array([name for _, name in data.gallery])
    p_names = np.array([name for _, name in data.probe])
    # enrolment: one template per gallery identity = normalise(mean of its normalised image features)
    identities, inverse = np.unique(g_names, return_inverse=True)
    templates = np.zeros((identities.size, features.shape[1]), dtype=np.float64)
    np.add.at(templates, inverse.reshape(-1), features[:n_g].astype(np.float64))
    templates = _normalised(templates)
    distractor_feats = features[n_g + n_p:]
    # integer ids: gallery identity i -> i; an unknown probe identity -> its own id; distractor j -> its own id
    code = {name: i for i, name in enumerate(identities.tolist())}
    for name in p_names.tolist():
        code.setdefault(name, len(code))
    probe_ids = np.array([code[name] for name in p_names.tolist()], dtype=np.int64)
    gallery_ids = np.concatenate([np.arange(identities.size, dtype=np.int64),
                                  len(code) + np.arange(len(data.distractors), dtype=np.int64)])
    gallery_feats = np.concatenate([templates, distractor_feats])
    results, summary = identification_search(gallery_feats, gallery_ids, features[n_g:n_g + n_p], probe_ids,
                                             ranks=options.ranks, fpirs=options.fpirs, method=options.search_method)
    any_result = next(iter(results.values()))
    out: dict[str, Any] = {
        "protocol": "ident",
        "spec": spec.text,
        "gallery_identities": int(identities.size),
        "gallery_images": n_g,
        "probes": n_p,
        "mated_probes": any_result.n_mated,
        "nonmated_probes": any_result.n_nonmated,
        "distractors": len(data.distractors),
        "gallery_pooling": "one template per identity: normalise(mean of its L2-normalised image embeddings)",
        "rank_accuracy": {str(k): v for k, v in any_result.rank_accuracy.items()},
        "tpir_at_fpir": {},
    }
    for definition in ("nist", "toolbox"):
        if definition in results:
            out["tpir_at_fpir"][definition] = {far_key(f): v for f, v in results[definition].tpir.items()}
        else:
            out["tpir_at_fpir"][definition] = None
    if any_result.n_nonmated == 0:
        out["tpir_at_fpir"]["nist"] = None  # undefined without non-mated searches
    definitions = dict(IDENT_DEFINITIONS)
    if data.distractors:
        by_id = [name for _, name in data.gallery] + [name for _, name in data.probe]
        out["megaface"] = leave_one_in(features[: n_g + n_p], np.array(by_id), distractor_feats, ranks=options.ranks,
                                       method=options.search_method)
        definitions["megaface"] = (
            "MegaFace-style leave-one-in over gallery ∪ probe images of each identity: each image in turn is the "
            "only mate among the first n distractors (sorted paths), every other image of that identity a probe")
    if preparer.detected or preparer.no_face:
        out["detection"] = preparer.summary()
    out["definitions"] = definitions
    mated = summary["mated"]
    return ProtocolResult(spec.name, spec.text, "ident", out, None, None, summary["mate_score"][mated],
                          summary["top_nonmate"][np.isfinite(summary["top_nonmate"])])


# ----------------------------------------------------------------------------------------------------------------


def run_protocol(spec: DataSpec | str, embedder: Any, options: EvalOptions | None = None) -> ProtocolResult:
    """Evaluate ``embedder`` (an :class:`~facesphere.infer.models.Embedder`) on one dataset spec."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    options = options or EvalOptions()
    if spec.kind in ("synthetic", "bin", "lfw", "pairs"):
        return _run_pairs(spec, embedder, options)
    if spec.kind == "ijb":
        return _run_ijb(spec, embedder, options)
    return _run_ident(spec, embedder, options)

