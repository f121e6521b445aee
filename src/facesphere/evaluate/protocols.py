"""Evaluation protocols: a ``--data`` spec -> its reader (:mod:`facesphere.data`) -> embeddings -> metrics
(:mod:`facesphere.evaluate.metrics`).

Specs (one per ``--data``; the grammar is :mod:`facesphere.data.specs`):

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

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..data.align import align_face
from ..data.ident import read_ident
from ..data.ijb import IJBMeta, read_ijb
from ..data.image import read_image
from ..data.pairs import open_pair_set
from ..data.specs import EVAL_KINDS, PAIR_KINDS, DataSpec, parse_data_spec
from ..errors import DataError, InvalidOptionError, UnknownNameError
from ..infer.crops import CropPreparer
from ..infer.embedders import FLIP_MODES, embed_images
from ..infer.search import normalize_rows
from . import metrics as M
from .identification import (
    FPIRS,
    IDENT_DEFINITIONS,
    RANKS,
    ident_json,
    identification_search,
    leave_one_in,
    mean_ident,
)
from .verification import (
    DEFAULT_TAR_METHOD,
    FARS,
    TAR_METHODS,
    far_key,
    pair_metrics,
    verify_pairs,
)

__all__ = ["EvalOptions", "ProtocolResult", "run_protocol", "ijb_image_features"]


# ----------------------------------------------------------------------------------------------------------------
# options and results


@dataclass
class EvalOptions:
    """How to evaluate: flip fusion, batch size, metric definitions, detector, search, progress bars.

    ``tar_method`` None uses :data:`DEFAULT_TAR_METHOD` per protocol; ``synthetic`` holds defaults for the synthetic
    set (keys of :data:`SYNTHETIC_OPTIONS`), overridden by the spec's own options. ``no_face`` / ``choose`` /
    ``min_score``: the no-face policy (:mod:`facesphere.infer.crops`; ``crop`` by default with a detector, ``skip``
    refused) and the face choice for images that are detected.
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
    no_face: str | None = None
    choose: str = "largest"
    min_score: float | None = None

    def __post_init__(self) -> None:
        if self.no_face == "skip":
            raise InvalidOptionError("evaluation cannot skip images (a pair needs both of its images): use --no-face "
                                     "crop, resize or fail")
        if self.flip not in FLIP_MODES:
            raise UnknownNameError(f"unknown flip mode {self.flip!r}; valid: {', '.join(FLIP_MODES)}")
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
# embedding with a progress bar


def _bar(total: int, desc: str, show: bool) -> Any:
    if not show:
        return None
    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False)


def _embed(embedder: Any, load: Callable[[int], np.ndarray], n: int, options: EvalOptions, desc: str, *,
           normalize: bool = True, bar: Any = None) -> np.ndarray:
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
        raise InvalidOptionError("the model has no input_size: load it with facesphere.load_embedder")
    return int(size[0]), int(size[1])


# ----------------------------------------------------------------------------------------------------------------
# pair protocols


def _preparer(embedder: Any, options: EvalOptions) -> CropPreparer:
    return CropPreparer(_input_size(embedder), options.detector, no_face=options.no_face, choose=options.choose,
                        min_score=options.min_score, purpose="eval")


def _detection(preparer: CropPreparer) -> dict[str, Any]:
    return {**preparer.summary(), "no_face_policy": preparer.no_face_policy}


def _run_pairs(spec: DataSpec, embedder: Any, options: EvalOptions) -> ProtocolResult:
    size = _input_size(embedder)
    preparer = _preparer(embedder, options)
    synthetic = {**options.synthetic, **spec.options}
    pairs = open_pair_set(spec, image_size=size, prepare=preparer, **options.synthetic)
    bar = _bar(pairs.num_images, spec.name, options.progress)
    try:
        result, scores = verify_pairs(embedder, pairs, accuracy_method=options.accuracy_method,
                                      tar_method=options.tar_method or DEFAULT_TAR_METHOD["pairs"], fars=options.fars,
                                      batch_size=int(options.batch_size), flip=options.flip, progress=bar)
    except InvalidOptionError as error:  # too few pairs, one class only, ...: a problem of the file, named
        if spec.path is None:
            raise
        raise DataError(f"{spec.path}: cannot evaluate these {len(pairs.issame)} pairs: {error}") from None
    finally:
        if bar is not None:
            bar.close()
    result = {"protocol": "pairs", "spec": spec.text, **result}
    if spec.kind == "synthetic":
        result["synthetic"] = synthetic
    if preparer.detected or preparer.no_face:
        result["detection"] = _detection(preparer)
    return ProtocolResult(spec.name, spec.text, "pairs", result, scores, np.asarray(pairs.issame, dtype=bool),
                          scores[pairs.issame], scores[~pairs.issame],
                          None if pairs.folds is None else np.asarray(pairs.folds))


# ----------------------------------------------------------------------------------------------------------------
# IJB-B / IJB-C


def ijb_image_features(meta: IJBMeta, embedder: Any, options: EvalOptions) -> np.ndarray:
    """Per-image IJB features (docs/methods.md §8.3 steps 1-2): loose crop aligned with its 5 landmarks, flip-fused, *not*
    normalised, times the faceness score. float32 ``(n, D)``."""
    size = _input_size(embedder)
    template = size

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
        "template = normalise(sum of media); score = cosine (docs/methods.md §8.3)")
    if meta.gallery is not None and meta.probe is not None:
        row = {int(t): i for i, t in enumerate(template_ids)}

        def feats(templates: np.ndarray) -> np.ndarray:
            return template_feats[[row[int(t)] for t in templates]]

        probe_t, probe_s = meta.probe
        per_gallery = {}
        for name, (g_t, g_s) in meta.gallery.items():
            res, _ = identification_search(feats(g_t), g_s, feats(probe_t), probe_s, ranks=options.ranks,
                                           fpirs=options.fpirs, definitions=("nist",), method=options.search_method)
            per_gallery[name] = ident_json(res["nist"])
        union_t = np.concatenate([g[0] for g in meta.gallery.values()])
        union_s = np.concatenate([g[1] for g in meta.gallery.values()])
        covered = np.isin(probe_s, union_s)
        toolbox: dict[str, Any] = {}
        if covered.all():
            res, _ = identification_search(feats(union_t), union_s, feats(probe_t), probe_s, ranks=options.ranks,
                                           fpirs=options.fpirs, definitions=("toolbox",),
                                           method=options.search_method)
            toolbox = ident_json(res["toolbox"])
        result["identification"] = {
            "probes": int(probe_t.size),
            "nist": {**per_gallery, "mean": mean_ident(list(per_gallery.values()))},
            "toolbox": toolbox or {"note": f"{int((~covered).sum())} probes have no mate in G1 ∪ G2"},
        }
        result["definitions"]["identification"] = IDENT_DEFINITIONS
    return ProtocolResult(spec.name, spec.text, "ijb", result, scores, issame, scores[issame], scores[~issame])


# ----------------------------------------------------------------------------------------------------------------
# 1:N identification


def _run_ident(spec: DataSpec, embedder: Any, options: EvalOptions) -> ProtocolResult:
    data = read_ident(spec.path)
    preparer = _preparer(embedder, options)
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
    templates = normalize_rows(templates)
    distractor_feats = features[n_g + n_p:]
    # integer ids: gallery identity i -> i; an unknown probe identity -> its own id; distractor j -> its own id
    code = {name: i for i, name in enumerate(identities.tolist())}
    for name in p_names.tolist():
        code.setdefault(name, len(code))
    probe_ids = np.array([code[name] for name in p_names.tolist()], dtype=np.int64)
    missing_ids = np.array([code.setdefault(name, len(code)) for _, name in data.missing_probes], dtype=np.int64)
    gallery_ids = np.concatenate([np.arange(identities.size, dtype=np.int64),
                                  len(code) + np.arange(len(data.distractors), dtype=np.int64)])
    gallery_feats = np.concatenate([templates, distractor_feats])
    results, summary = identification_search(gallery_feats, gallery_ids, features[n_g:n_g + n_p], probe_ids,
                                             ranks=options.ranks, fpirs=options.fpirs, method=options.search_method,
                                             missing_probe_ids=missing_ids)
    any_result = next(iter(results.values()))
    out: dict[str, Any] = {
        "protocol": "ident",
        "spec": spec.text,
        "gallery_identities": int(identities.size),
        "gallery_images": n_g,
        "probes": n_p,
        "missing_probes": len(data.missing_probes),
        "missing_gallery_images": len(data.missing_gallery),
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
        out["detection"] = _detection(preparer)
    if data.missing_probes:
        definitions["missing_probes"] = (
            "probes listed in align_dropped.txt (photos data align dropped) count as searches that found nothing: a "
            "miss at every rank and threshold (mated), never a false alarm (non-mated); mated_probes includes them")
    out["definitions"] = definitions
    mated = summary["mated"]
    return ProtocolResult(spec.name, spec.text, "ident", out, None, None, summary["mate_score"][mated],
                          summary["top_nonmate"][np.isfinite(summary["top_nonmate"])])


# ----------------------------------------------------------------------------------------------------------------


def run_protocol(spec: DataSpec | str, embedder: Any, options: EvalOptions | None = None) -> ProtocolResult:
    """Evaluate ``embedder`` (an :class:`~facesphere.infer.embedders.Embedder`) on one dataset spec."""
    spec = parse_data_spec(spec, EVAL_KINDS) if isinstance(spec, str) else spec
    options = options or EvalOptions()
    if spec.kind in PAIR_KINDS:
        return _run_pairs(spec, embedder, options)
    if spec.kind == "ijb":
        return _run_ijb(spec, embedder, options)
    return _run_ident(spec, embedder, options)

