"""Identities a training set shares with a test set (``facesphere data overlap``).

Results on a test set are only meaningful when its people were not trained on (ArcFace's authors removed the
identities overlapping their test sets from MS1M). Given a training set, a test set and any recogniser facesphere
loads:

1. every image of both sets is embedded (flip-sum, L2-normalised; optionally both sides converted to grayscale, for a
   grey test copy such as the shared LFW);
2. each identity is summarised by its mean embedding, re-normalised;
3. every training identity is paired with its most similar test identity (cosine of the means);
4. training identities whose best cosine exceeds the threshold are listed in ``OUT/overlap.txt`` (one name per line,
   nothing else), which training takes as ``--data.exclude OUT/overlap.txt``.

The default threshold is measured, not guessed (``threshold="auto"``): the statistic thresholded is a *maximum* over
all test identities, so its distribution for a person who is *not* in the test set is estimated on the test set
itself — each test identity's mean against its best *other* test identity (different names, different people). The
threshold is the lowest value on a 0.01 grid that at most ``null_rate`` (default 5 %) of those non-matching maxima
exceed: at most about 5 % of the training identities that are not in the test set are removed by mistake, and as
many true overlaps as possible are caught. How many true overlaps that catches is estimated from the training set's
own people (the mean of all but one image against the held-out image, and the same within the test set) and written
to the report. ``OUT/report.json`` holds the counts, the threshold and its calibration, and every pair removed;
``OUT/matches.tsv`` every training identity's best match; ``OUT/contact_sheet.png`` the closest pairs' images side by
side, for a person to check; ``OUT/scores.png`` the distributions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..data.datasets import ImageFolderDataset, build_dataset
from ..data.image import image_grid
from ..data.pairs import lfw_images_root
from ..data.specs import parse_data_spec
from ..data.transforms import to_grayscale
from ..errors import InvalidOptionError
from ..files import atomic_write_text
from ..infer.crops import CropPreparer
from ..infer.embedders import embed_images

__all__ = ["IdentitySet", "open_identity_set", "identity_means", "calibrate_threshold", "find_overlap",
           "OVERLAP_KINDS"]

#: the kinds of set ``data overlap`` compares: identity folders, list files, RecordIO, LFW-layout folders
OVERLAP_KINDS = ("folder", "list", "rec", "lfw")
THRESHOLD_GRID = np.round(np.arange(0.0, 1.0001, 0.01), 2)


@dataclass
class IdentitySet:
    """Images with identity names: ``load(i) -> uint8 (H, W, 3)``, ``labels`` (N,) int64 into ``names``."""

    spec: str
    names: list[str]
    labels: np.ndarray
    load: Callable[[int], np.ndarray]
    source: Callable[[int], str]

    def __len__(self) -> int:
        return int(self.labels.size)


def open_identity_set(spec: str) -> IdentitySet:
    """A training-style set (``folder:``, ``list:``, ``rec:``, a bare path) or an LFW-layout folder (``lfw:DIR``:
    identities are the folders of ``DIR/images`` or ``DIR``) as an :class:`IdentitySet`."""
    parsed = parse_data_spec(spec, OVERLAP_KINDS)
    if parsed.kind == "lfw":
        dataset = ImageFolderDataset(lfw_images_root(parsed.path))
    else:
        dataset = build_dataset(spec)
    return IdentitySet(str(spec), list(dataset.classes), np.asarray(dataset.labels, dtype=np.int64),
                       lambda i: dataset.load_array(i)[0], dataset.source)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def identity_means(features: np.ndarray, labels: np.ndarray, num: int) -> np.ndarray:
    """L2-normalised mean of each identity's (unit) embeddings: float64 ``(num, D)``."""
    sums = np.zeros((num, features.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, features.astype(np.float64))
    return _unit(sums)


def leave_one_out_scores(features: np.ndarray, labels: np.ndarray, num: int) -> np.ndarray:
    """For every identity with 2+ images: the cosine of the mean of all its images but the first with the first — how
    a person's mean on one side scores against a single photo of them on the other. float64 ``(#identities with 2+,)``."""
    counts = np.bincount(labels, minlength=num)
    sums = np.zeros((num, features.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, features.astype(np.float64))
    first = np.full(num, -1)
    for index in range(len(labels) - 1, -1, -1):
        first[labels[index]] = index
    keep = np.flatnonzero(counts >= 2)
    held = features[first[keep]].astype(np.float64)
    rest = _unit(sums[keep] - held)
    return np.einsum("ij,ij->i", rest, _unit(held))


def calibrate_threshold(test_means: np.ndarray, null_rate: float = 0.05) -> tuple[float, np.ndarray]:
    """The lowest threshold on a 0.01 grid exceeded by at most ``null_rate`` of the test identities' best cosine to
    another test identity (the distribution of the thresholded maximum for a person absent from the test set), and
    those maxima."""
    if len(test_means) < 2:
        raise InvalidOptionError("the test set has fewer than 2 identities: the threshold cannot be measured; give "
                                 "--threshold VALUE")
    sims = test_means @ test_means.T
    np.fill_diagonal(sims, -np.inf)
    null = sims.max(axis=1)
    for value in THRESHOLD_GRID:
        if float(np.mean(null > value)) <= null_rate:
            return float(value), null
    return 1.0, null


def _embed_set(embedder: Any, identities: IdentitySet, preparer: CropPreparer, *, grayscale: bool, flip: str,
               batch_size: int, progress: bool, desc: str) -> np.ndarray:
    def load(i: int) -> np.ndarray:
        crop = preparer(identities.load(i), identities.source(i))
        return to_grayscale(crop) if grayscale else crop

    bar = tqdm(total=len(identities), desc=desc, unit="img", dynamic_ncols=True, disable=not progress)
    try:
        return embed_images(embedder, load, len(identities), batch_size=batch_size, flip=flip, progress=bar)
    finally:
        bar.close()


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"n": 0}
    q = np.quantile(values, [0.01, 0.05, 0.5, 0.95, 0.99])
    return {"n": int(values.size), "p01": float(q[0]), "p05": float(q[1]), "median": float(q[2]),
            "p95": float(q[3]), "p99": float(q[4])}


def _labelled_row(images: list[np.ndarray], text: str, width: int) -> np.ndarray:
    """A row of images under a white band holding ``text``."""
    band = Image.new("RGB", (width, 14), "white")
    ImageDraw.Draw(band).text((2, 1), text, fill=(0, 0, 0))
    row = image_grid([images], gap=2)
    canvas = np.full((14 + row.shape[0], width, 3), 255, np.uint8)
    canvas[:14] = np.asarray(band)
    canvas[14:, :row.shape[1]] = row[:, :width]
    return canvas


def _contact_sheet(pairs: list[dict[str, Any]], train: IdentitySet, test: IdentitySet, path: Path, *,
                   per_side: int, size: int = 80) -> Path:
    """One row per pair: up to ``per_side`` images of the training identity, a gap, as many of the test identity."""
    def thumbs(identities: IdentitySet, name: str) -> list[np.ndarray]:
        label = identities.names.index(name)
        indices = np.flatnonzero(identities.labels == label)[:per_side]
        return [np.asarray(Image.fromarray(np.ascontiguousarray(identities.load(int(i)))).convert("RGB")
                           .resize((size, size), Image.BILINEAR)) for i in indices]

    width = (2 * per_side + 1) * (size + 2) + 2
    rows = []
    for pair in pairs:
        left, right = thumbs(train, pair["train"]), thumbs(test, pair["test"])
        left += [np.full((size, size, 3), 255, np.uint8)] * (per_side - len(left))
        images = left + [np.full((size, size, 3), 255, np.uint8)] + right
        rows.append(_labelled_row(images, f"{pair['train']} ~ {pair['test']}   cosine {pair['cosine']:.3f}", width))
    sheet = np.concatenate(rows, axis=0) if rows else np.full((20, width, 3), 255, np.uint8)
    Image.fromarray(sheet).save(path, format="PNG")
    return path


def _plot_scores(best: np.ndarray, null: np.ndarray, genuine: np.ndarray, threshold: float, path: Path) -> Path:
    from matplotlib.figure import (
        Figure,  # plots are optional: matplotlib is imported only here
    )

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    bins = np.linspace(-0.2, 1.0, 61)
    ax.hist(best, bins=bins, alpha=0.6, density=True, label="training identities: best test match")
    ax.hist(null, bins=bins, alpha=0.5, density=True, label="test identities: best other test identity (null)")
    if genuine.size:
        ax.hist(genuine, bins=bins, histtype="step", density=True, label="same person, mean vs one image")
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set(xlabel="cosine of identity means", ylabel="density", title="identity overlap")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def find_overlap(embedder: Any, train_spec: str, test_spec: str, out_dir: str | os.PathLike[str], *,
                 threshold: float | str = "auto", null_rate: float = 0.05, grayscale: bool = False,
                 detector: Any = None, flip: str = "sum", batch_size: int = 64, sheet_pairs: int = 24,
                 sheet_images: int = 4, plots: bool = True, progress: bool = True,
                 model_name: str | None = None) -> dict[str, Any]:
    """Find the training identities that are also test identities; write ``OUT/overlap.txt`` and the report (see
    the module docstring). ``embedder``: a loaded recogniser (:func:`facesphere.load_embedder`); ``detector``: for
    sets that are not aligned crops of the model's input size. Returns the report dict."""
    if threshold != "auto" and not (isinstance(threshold, (int, float)) and -1.0 <= float(threshold) <= 1.0):
        raise InvalidOptionError(f"threshold must be 'auto' or a cosine in [-1, 1], got {threshold!r}")
    if not 0.0 < null_rate < 1.0:
        raise InvalidOptionError(f"null_rate must be in (0, 1), got {null_rate!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidOptionError(f"{out}: exists and is not a folder; choose another --out")
    train, test = open_identity_set(train_spec), open_identity_set(test_spec)
    preparer = CropPreparer(embedder.input_size, detector)
    common = {"grayscale": grayscale, "flip": flip, "batch_size": batch_size, "progress": progress}
    train_features = _embed_set(embedder, train, preparer, desc="train", **common)
    test_features = _embed_set(embedder, test, preparer, desc="test", **common)
    train_means = identity_means(train_features, train.labels, len(train.names))
    test_means = identity_means(test_features, test.labels, len(test.names))
    sims = train_means @ test_means.T  # (train identities, test identities)
    best = sims.argmax(axis=1)
    best_score = sims[np.arange(len(train.names)), best]
    measured, null = calibrate_threshold(test_means, null_rate)
    tau = measured if threshold == "auto" else float(threshold)
    excluded = np.flatnonzero(best_score > tau)
    order = excluded[np.argsort(-best_score[excluded], kind="stable")]
    train_counts = np.bincount(train.labels, minlength=len(train.names))
    test_counts = np.bincount(test.labels, minlength=len(test.names))
    pairs = [{"train": train.names[i], "train_images": int(train_counts[i]), "test": test.names[best[i]],
              "test_images": int(test_counts[best[i]]), "cosine": round(float(best_score[i]), 4)} for i in order]
    genuine_train = leave_one_out_scores(train_features, train.labels, len(train.names))
    genuine_test = leave_one_out_scores(test_features, test.labels, len(test.names))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "overlap.txt", "".join(train.names[i] + "\n" for i in order), what="overlap list")
    lines = ["train\ttrain_images\ttest\ttest_images\tcosine\texcluded"]
    for i in np.argsort(-best_score, kind="stable"):
        lines.append(f"{train.names[i]}\t{train_counts[i]}\t{test.names[best[i]]}\t{test_counts[best[i]]}\t"
                     f"{best_score[i]:.4f}\t{int(best_score[i] > tau)}")
    atomic_write_text(out / "matches.tsv", "\n".join(lines) + "\n", what="match table")
    report: dict[str, Any] = {
        "train": {"spec": train.spec, "identities": len(train.names), "images": len(train)},
        "test": {"spec": test.spec, "identities": len(test.names), "images": len(test)},
        "model": model_name or getattr(embedder, "name", type(embedder).__name__),
        "grayscale": bool(grayscale), "flip": flip,
        "threshold": tau,
        "threshold_rule": ("auto: the lowest 0.01-grid cosine that at most null_rate of the test identities' best "
                           "cosine to another test identity exceed" if threshold == "auto" else "given"),
        "calibration": {
            "null_rate": null_rate, "measured_threshold": measured,
            "null_best_other_test_identity": _quantiles(null),
            "null_above_threshold": float(np.mean(null > tau)),
            "expected_false_exclusions": float(np.mean(null > tau)) * (len(train.names) - len(excluded)),
            "genuine_train_mean_vs_one_image": _quantiles(genuine_train),
            "genuine_train_recall_at_threshold": float(np.mean(genuine_train > tau)) if genuine_train.size else None,
            "genuine_test_mean_vs_one_image": _quantiles(genuine_test),
            "genuine_test_recall_at_threshold": float(np.mean(genuine_test > tau)) if genuine_test.size else None,
        },
        "excluded_identities": len(excluded),
        "excluded_images": int(train_counts[excluded].sum()),
        "test_identities_matched": len({int(best[i]) for i in excluded}),
        "detection": preparer.summary() if detector is not None else None,
        "pairs": pairs,
        "files": {"overlap": "overlap.txt", "matches": "matches.tsv"},
    }
    if sheet_pairs > 0:
        report["files"]["contact_sheet"] = _contact_sheet(pairs[:sheet_pairs], train, test, out / "contact_sheet.png",
                                                          per_side=sheet_images).name
    if plots:
        report["files"]["scores"] = _plot_scores(best_score, null, genuine_train, tau, out / "scores.png").name
    atomic_write_text(out / "report.json", json.dumps(report, indent=2), what="overlap report")
    return report


def format_summary(report: dict[str, Any], out_dir: str | os.PathLike[str], shown: int = 10) -> str:
    """A few lines a person reads: counts, the threshold and the closest pairs."""
    cal = report["calibration"]
    lines = [
        f"train {report['train']['spec']}: {report['train']['identities']} identities, {report['train']['images']} "
        f"images; test {report['test']['spec']}: {report['test']['identities']} identities, "
        f"{report['test']['images']} images",
        f"threshold {report['threshold']:.2f} ({'measured' if report['threshold_rule'].startswith('auto') else 'given'}"
        f"; {100 * cal['null_above_threshold']:.1f} % of non-matching identities above it, same-person recall "
        f"{_pct(cal['genuine_train_recall_at_threshold'])} in train, {_pct(cal['genuine_test_recall_at_threshold'])} "
        "in test)",
        f"overlapping training identities: {report['excluded_identities']} ({report['excluded_images']} images) "
        f"matching {report['test_identities_matched']} test identities",
    ]
    for pair in report["pairs"][:shown]:
        lines.append(f"  {pair['train']} ({pair['train_images']} img) ~ {pair['test']} ({pair['test_images']} img): "
                     f"{pair['cosine']:.3f}")
    out = Path(out_dir)
    lines.append(f"exclude them with --data.exclude {out / 'overlap.txt'}; report {out / 'report.json'}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"
