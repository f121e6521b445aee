"""Sub-center ArcFace data cleaning (docs/methods.md §6.5): drop the images far from their class's dominant sub-centre.

A model trained with ``subcenter_arcface`` (K ≥ 2 sub-centres per class, weight rows ``j·K + k``) gathers the clean
images of a class around one sub-centre and pushes label noise to the others. Cleaning, run once after training:

1. embed every training image with the frozen backbone (no flip), L2-normalise; L2-normalise every sub-centre and
   view them as ``(C, K, D)``;
2. per class j: assign each of its images to its nearest sub-centre ``argmax_k x̂·Ŵ_{j,k}``; the **dominant**
   sub-centre is the one with the most images (ties → the lowest k);
3. keep an image iff ``x̂·Ŵ_{j,dominant} > cos(threshold)`` (default 75°, ``cos 75° = 0.258819``); classes left
   without images are dropped and the surviving classes re-indexed contiguously (order kept).

:func:`clean_decisions` is the pure rule (numpy in, numpy out); :func:`clean_dataset` runs it on a run directory
and a data set and writes the cleaned set in the input's format, ``report.json`` and ``angles.png``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.datasets import ImageFolderDataset, ListFileDataset, build_dataset
from ..data.recordio import RecordWriter, pack_image_record
from ..data.synthetic import SyntheticConfig, SyntheticFaceDataset, identity_name
from ..errors import DataError, FaceSphereWarning, InvalidOptionError
from ..infer.embedders import embed_images
from ..run.directory import load_run

__all__ = [
    "CleanDecisions",
    "nearest_subcenters",
    "dominant_subcenters",
    "clean_decisions",
    "relabel",
    "subcenter_weights",
    "open_training_data",
    "extract_embeddings",
    "clean_dataset",
    "plot_angles",
    "DEFAULT_THRESHOLD",
]

#: The angle threshold of the sub-center ArcFace paper / ``drop.py`` (degrees).
DEFAULT_THRESHOLD = 75.0
#: dropping more than this fraction of the readable images is reported as a threshold that suits the model badly
#: (label noise in real data sets is a few to ~30 %; a cleaner that removes more is mostly removing hard positives)
SUSPICIOUS_DROP_FRACTION = 0.3


# ----------------------------------------------------------------------------------------------------------------------
# the rule (pure numpy)


@dataclass
class CleanDecisions:
    """What :func:`clean_decisions` decided.

    keep:          (N,) bool, the images that survive.
    nearest:       (N,) int64, each image's nearest sub-centre k within its own class.
    dominant:      (C,) int64, each class's dominant sub-centre (0 for classes without images).
    counts:        (C, K) int64, images of class j whose nearest sub-centre is k.
    cos_dominant:  (N,) float64, cosine between the image and its class's dominant sub-centre.
    angle_deg:     (N,) float64, the same as an angle in degrees.
    threshold_deg: the threshold used; ``threshold_cos = cos(threshold_deg)``.
    """

    keep: np.ndarray
    nearest: np.ndarray
    dominant: np.ndarray
    counts: np.ndarray
    cos_dominant: np.ndarray
    angle_deg: np.ndarray
    threshold_deg: float

    @property
    def threshold_cos(self) -> float:
        return math.cos(math.radians(self.threshold_deg))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check_inputs(embeddings: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    emb = np.asarray(embeddings)
    lab = np.asarray(labels)
    w = np.asarray(weights)
    if w.ndim != 3:
        raise InvalidOptionError(f"subcenter weights must be (C, K, D), got shape {w.shape}")
    if emb.ndim != 2 or emb.shape[1] != w.shape[2]:
        raise InvalidOptionError(f"embeddings must be (N, {w.shape[2]}), got shape {emb.shape}")
    if lab.shape != (emb.shape[0],):
        raise InvalidOptionError(f"labels must be ({emb.shape[0]},), got shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= w.shape[0]):
        raise InvalidOptionError(f"labels must lie in [0, {w.shape[0]}), got [{lab.min()}, {lab.max()}]")
    return emb, lab.astype(np.int64), w


def nearest_subcenters(embeddings: np.ndarray, labels: np.ndarray, subcenter_weights: np.ndarray) -> np.ndarray:
    """Cosines ``(N, K)`` between each unit embedding and the K unit sub-centres of its own class.

    embeddings (N, D), labels (N,) int in [0, C), subcenter_weights (C, K, D); nothing needs to be normalised.
    """
    emb, lab, w = _check_inputs(embeddings, labels, subcenter_weights)
    x = _unit_rows(emb)
    centres = _unit_rows(w)
    return np.einsum("nd,nkd->nk", x, centres[lab]) if len(lab) else np.zeros((0, w.shape[1]))


def dominant_subcenters(nearest: np.ndarray, labels: np.ndarray, num_classes: int,
                        num_subcenters: int) -> tuple[np.ndarray, np.ndarray]:
    """``(dominant (C,) int64, counts (C, K) int64)`` from each image's nearest sub-centre ``nearest`` (N,).

    The dominant sub-centre of a class holds the most images; ties go to the lowest k (so a class without images
    gets 0).
    """
    nearest = np.asarray(nearest, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if nearest.shape != labels.shape:
        raise InvalidOptionError(f"nearest and labels must have the same shape, got {nearest.shape}, {labels.shape}")
    if nearest.size and (nearest.min() < 0 or nearest.max() >= num_subcenters):
        raise InvalidOptionError(f"sub-centre indices must lie in [0, {num_subcenters})")
    counts = np.zeros((num_classes, num_subcenters), dtype=np.int64)
    np.add.at(counts, (labels, nearest), 1)
    return counts.argmax(axis=1).astype(np.int64), counts  # argmax returns the first maximum: ties -> lowest k


def clean_decisions(embeddings: np.ndarray, labels: np.ndarray, subcenter_weights: np.ndarray,
                    threshold_deg: float = DEFAULT_THRESHOLD) -> CleanDecisions:
    """The cleaning rule of docs/methods.md §6.5 on raw embeddings (N, D), labels (N,) and sub-centres (C, K, D).

    Keep image i of class j iff ``cos(x̂_i, Ŵ_{j,dominant_j}) > cos(threshold_deg)``, computed in float64.
    """
    if not 0.0 < float(threshold_deg) < 180.0:
        raise InvalidOptionError(f"threshold must be an angle in degrees in (0, 180), got {threshold_deg!r}")
    emb, lab, w = _check_inputs(embeddings, labels, subcenter_weights)
    num_classes, k = w.shape[0], w.shape[1]
    cos = nearest_subcenters(emb, lab, w)  # (N, K)
    nearest = cos.argmax(axis=1).astype(np.int64) if len(lab) else np.zeros(0, dtype=np.int64)
    dominant, counts = dominant_subcenters(nearest, lab, num_classes, k)
    cos_dom = cos[np.arange(len(lab)), dominant[lab]] if len(lab) else np.zeros(0)
    angle = np.degrees(np.arccos(np.clip(cos_dom, -1.0, 1.0)))
    keep = cos_dom > math.cos(math.radians(float(threshold_deg)))
    return CleanDecisions(keep, nearest, dominant, counts, cos_dom, angle, float(threshold_deg))


def relabel(labels: np.ndarray, keep: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-index the surviving classes contiguously, in their old order.

    Returns ``(new_labels (N_kept,) int64, class_map (C,) int64)`` with ``class_map[old] = new`` or −1 for a class
    without surviving images.
    """
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.asarray(keep, dtype=bool)
    survivors = np.zeros(num_classes, dtype=bool)
    survivors[labels[keep]] = True
    class_map = np.full(num_classes, -1, dtype=np.int64)
    class_map[survivors] = np.arange(int(survivors.sum()), dtype=np.int64)
    return class_map[labels[keep]], class_map


# ----------------------------------------------------------------------------------------------------------------------
# runs and data


def subcenter_weights(head: Any) -> np.ndarray:
    """The head's unit sub-centres as a float64 ``(C, K, D)`` array (rows ``j·K + k`` of its weight)."""
    w = head.weight.detach().double().cpu().numpy()
    k = int(getattr(head, "subcenters", 1))
    return _unit_rows(w.reshape(-1, k, w.shape[1]))


@dataclass
class TrainingData:
    """A training set opened for cleaning: ``load(i) -> uint8 (H, W, 3) RGB``, labels, class names, format."""

    spec: str
    format: str  # folder / list / rec / synthetic
    dataset: Any
    labels: np.ndarray
    classes: list[str]
    load: Callable[[int], np.ndarray]
    source: Callable[[int], str]
    true_labels: np.ndarray | None = None  # known for synthetic data


def open_training_data(spec: str, config: Any) -> TrainingData:
    """Open ``spec`` (``folder:DIR``, ``list:FILE``, ``rec:PREFIX``, a bare path, or ``synthetic`` = the run's own
    synthetic identities) the way training reads it: images must have the run's ``data.image_size``."""
    size = tuple(int(v) for v in config.data.image_size)
    if spec == "synthetic":
        data = config.data
        dataset = SyntheticFaceDataset(SyntheticConfig(
            seed=config.train.seed, num_identities=data.synthetic_identities,
            images_per_identity=data.synthetic_images_per_identity, difficulty=data.synthetic_difficulty,
            identity_spread=data.synthetic_identity_spread, label_noise=data.synthetic_label_noise,
            image_size=size[0],
        ))
        classes = [identity_name(c, dataset.num_classes) for c in range(dataset.num_classes)]
        per = dataset.images_per_identity
        return TrainingData(spec, "synthetic", dataset, np.asarray(dataset.labels, dtype=np.int64), classes,
                            dataset.image, lambda i: f"synthetic identity {i // per} image {i % per}",
                            np.asarray(dataset.true_labels, dtype=np.int64))
    dataset = build_dataset(spec, expected_size=size)
    fmt = "folder" if isinstance(dataset, ImageFolderDataset) else "list" if isinstance(dataset, ListFileDataset) \
        else "rec"
    return TrainingData(spec, fmt, dataset, np.asarray(dataset.labels, dtype=np.int64), list(dataset.classes),
                        lambda i: dataset.load_array(i)[0], dataset.source)


def extract_embeddings(backbone: Any, data: TrainingData, config: Any, *, batch_size: int = 128,
                       device: str = "cpu", progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings ``(N, D)`` float32 of every image (no flip; the run's colour order and pixel mean / std),
    and an ``(N,)`` bool mask of the images that could not be read (their rows are zero)."""
    n = len(data.labels)
    size = tuple(int(v) for v in config.data.image_size)
    unreadable = np.zeros(n, dtype=bool)
    blank = np.zeros((*size, 3), dtype=np.uint8)

    def load(i: int) -> np.ndarray:
        try:
            return data.load(i)
        except DataError:
            unreadable[i] = True
            return blank

    bar = None
    if progress:
        bar = tqdm(total=n, unit="img", desc="embedding", dynamic_ncols=True)
    try:
        features = embed_images(backbone, load, n, batch_size=batch_size, device=device, flip="none",
                                mean=config.data.pixel_mean, std=config.data.pixel_std, color=config.data.color,
                                progress=bar, normalize=True)
    finally:
        if bar is not None:
            bar.close()
    features[unreadable] = 0.0
    return features, unreadable


# ----------------------------------------------------------------------------------------------------------------------
# writing the cleaned set


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidOptionError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise InvalidOptionError(f"{out}: folder is not empty; choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)


def _write_folder(data: TrainingData, kept: np.ndarray, new_labels: np.ndarray, new_classes: list[str],
                  out: Path) -> dict[str, Any]:
    """Copy the kept images to ``OUT/<class name>/<file name>`` (class folders sort in the new id order)."""
    for name in new_classes:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, label in zip(kept.tolist(), new_labels.tolist()):
        src = Path(data.dataset.paths[i])
        shutil.copyfile(src, out / new_classes[label] / src.name)
    return {"path": str(out), "spec": f"folder:{out}"}


def _write_synthetic_folder(data: TrainingData, kept: np.ndarray, new_labels: np.ndarray,
                            new_classes: list[str], out: Path) -> dict[str, Any]:
    """Render the kept synthetic images into ``OUT/<identity>/<NNNN>.png`` (lossless)."""
    per_class: dict[int, int] = {}
    for name in new_classes:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, label in zip(kept.tolist(), new_labels.tolist()):
        k = per_class.get(label, 0)
        per_class[label] = k + 1
        Image.fromarray(data.load(i)).save(out / new_classes[label] / f"{k:04d}.png")
    return {"path": str(out), "spec": f"folder:{out}"}


def _write_list(data: TrainingData, kept: np.ndarray, new_labels: np.ndarray, new_classes: list[str],
                out: Path) -> dict[str, Any]:
    """A list file of the same layout (plain ``path label`` or MXNet ``.lst``) naming the original image files by
    absolute path; integer labels become the new ids, name labels stay names."""
    ds = data.dataset
    name = Path(ds.list_file).name
    path = out / name
    numeric = all(c == str(i) for i, c in enumerate(ds.classes))
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for n, (i, label) in enumerate(zip(kept.tolist(), new_labels.tolist())):
            image = os.path.abspath(ds.paths[i])
            token = str(label) if numeric else new_classes[label]
            if ds.format == "mxnet-lst":
                fh.write(f"{n}\t{label}\t{image}\n")
            else:
                fh.write(f"{image} {token}\n")
    return {"path": str(path), "spec": f"list:{path}"}


def _write_recordio(data: TrainingData, kept: np.ndarray, new_labels: np.ndarray, new_classes: list[str],
                    out: Path, image_size: tuple[int, int]) -> dict[str, Any]:
    """InsightFace RecordIO (``train.rec/.idx``, ``property``, ``train.classes.txt``) with the kept records' bytes
    verbatim, grouped by new class id (header, images ``1..N``, identity records ``[start, end)``)."""
    faceset = data.dataset.faceset
    order = np.argsort(new_labels, kind="stable")
    n, c = len(order), len(new_classes)
    a, b = n + 1, n + 1 + c
    rec, idx = out / "train.rec", out / "train.idx"
    ranges = np.zeros((c, 2), dtype=np.int64)
    with RecordWriter(rec, idx) as writer:
        writer.write(0, pack_image_record([float(a), float(b)], b""))
        for key, j in enumerate(order.tolist(), 1):
            label = int(new_labels[j])
            _, image = faceset.read(int(kept[j]))
            writer.write(key, pack_image_record(float(label), image, id=key))
            if ranges[label, 0] == 0:
                ranges[label, 0] = key
            ranges[label, 1] = key + 1
        for label in range(c):
            writer.write(a + label, pack_image_record([float(ranges[label, 0]), float(ranges[label, 1])], b""))
    (out / "train.classes.txt").write_text("".join(f"{i}\t{name}\n" for i, name in enumerate(new_classes)))
    (out / "property").write_text(f"{c},{image_size[0]},{image_size[1]}\n")
    return {"path": str(rec), "spec": f"rec:{out / 'train'}"}


# ----------------------------------------------------------------------------------------------------------------------
# report and plot


def plot_angles(angle_deg: np.ndarray, keep: np.ndarray, threshold_deg: float, path: str | os.PathLike[str],
                *, title: str = "") -> Path:
    """Histogram (PNG) of the angles to the dominant sub-centre, kept vs dropped, with the threshold line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    bins = np.linspace(0.0, 180.0, 73)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        ax.hist(angle_deg[keep], bins=bins, color="#2a7ab0", alpha=0.85, label=f"kept ({int(keep.sum())})")
        ax.hist(angle_deg[~keep], bins=bins, color="#d0513a", alpha=0.85, label=f"dropped ({int((~keep).sum())})")
        ax.axvline(threshold_deg, color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold_deg:g}°")
        ax.set_xlabel("angle to the class's dominant sub-centre (degrees)")
        ax.set_ylabel("images")
        ax.set_xlim(0, 180)
        if title:
            ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def _noise_scores(dropped: np.ndarray, noisy: np.ndarray) -> dict[str, Any]:
    """Precision / recall of the dropped set against the truly mislabelled images (both (N,) bool)."""
    tp = int((dropped & noisy).sum())
    n_drop, n_noisy = int(dropped.sum()), int(noisy.sum())
    return {
        "noisy": n_noisy, "dropped": n_drop, "dropped_noisy": tp,
        "precision": tp / n_drop if n_drop else None,  # undefined without dropped / noisy images
        "recall": tp / n_noisy if n_noisy else None,
    }


def clean_dataset(run_dir: str | os.PathLike[str], data_spec: str | None, out_dir: str | os.PathLike[str], *,
                  threshold: float = DEFAULT_THRESHOLD, batch_size: int = 128, device: str = "cpu",
                  progress: bool = True) -> dict[str, Any]:
    """Clean a training set with a sub-center ArcFace run; returns the report (also written to ``report.json``).

    ``data_spec``: the training set (``folder:DIR``, ``list:FILE``, ``rec:PREFIX``, a bare path, ``synthetic``);
    ``None`` = the run's own ``data.train``. The cleaned set goes to ``out_dir`` in the input's format: an image folder
    (``OUT/<class>/<image>``; synthetic data is rendered as PNG), a list file ``OUT/<list name>`` (absolute image
    paths), or RecordIO ``OUT/train.{rec,idx}`` + ``property``. ``report.json`` and ``angles.png`` go beside it.
    """
    if not 0.0 < float(threshold) < 180.0:
        raise InvalidOptionError(f"--threshold must be an angle in degrees in (0, 180), got {threshold!r}")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise InvalidOptionError(f"--batch-size must be >= 1, got {batch_size!r}")
    config, backbone, head, _ = load_run(run_dir, device=device)
    k = int(getattr(head, "subcenters", 1))
    if k < 2:
        raise InvalidOptionError(
            f"{run_dir}: the run's head is {config.head.name!r} with K = {k} sub-centre per class; cleaning needs a "
            "run trained with subcenter_arcface and K >= 2 (e.g. --head.name subcenter_arcface --head.subcenters 3)"
        )
    spec = config.data.train if data_spec is None else str(data_spec)
    data = open_training_data(spec, config)
    num_classes = int(head.num_classes)
    if len(data.classes) != num_classes:
        raise DataError(
            f"{spec}: the data set has {len(data.classes)} classes but the run's head has {num_classes}; clean the "
            "data set the run was trained on"
        )
    out = Path(out_dir)
    _prepare_out(out)

    embeddings, unreadable = extract_embeddings(backbone, data, config, batch_size=int(batch_size), device=device,
                                                progress=progress)
    weights = subcenter_weights(head)
    readable = ~unreadable
    decisions = clean_decisions(embeddings[readable], data.labels[readable], weights, threshold)
    n = len(data.labels)
    keep = np.zeros(n, dtype=bool)
    keep[readable] = decisions.keep
    angle = np.full(n, np.nan)
    angle[readable] = decisions.angle_deg
    nearest = np.full(n, -1, dtype=np.int64)
    nearest[readable] = decisions.nearest
    new_labels, class_map = relabel(data.labels, keep, num_classes)
    new_classes = [data.classes[j] for j in np.flatnonzero(class_map >= 0).tolist()]
    kept = np.flatnonzero(keep)

    image_size = tuple(int(v) for v in config.data.image_size)
    writer = {"folder": _write_folder, "synthetic": _write_synthetic_folder, "list": _write_list}.get(data.format)
    if writer is not None:
        written = writer(data, kept, new_labels, new_classes, out)
    else:
        written = _write_recordio(data, kept, new_labels, new_classes, out, image_size)

    labels = data.labels
    per_class = []
    for j in range(num_classes):
        members = labels == j
        per_class.append({
            "id": j, "name": data.classes[j], "new_id": int(class_map[j]) if class_map[j] >= 0 else None,
            "images": int(members.sum()), "kept": int((members & keep).sum()),
            "dropped": int((members & ~keep).sum()), "dominant_subcenter": int(decisions.dominant[j]),
            "subcenter_counts": decisions.counts[j].tolist(),
        })
    dropped_rows = []
    for i in np.flatnonzero(~keep).tolist():
        dropped_rows.append({
            "index": i, "source": data.source(i), "label": int(labels[i]), "class": data.classes[int(labels[i])],
            "angle_deg": None if unreadable[i] else round(float(angle[i]), 4),
            "nearest_subcenter": None if unreadable[i] else int(nearest[i]),
            "reason": "unreadable" if unreadable[i] else "far from the dominant sub-centre",
        })
    report: dict[str, Any] = {
        "run": str(run_dir),
        "data": spec,
        "format": data.format,
        "output": written,
        "head": config.head.name,
        "subcenters": k,
        "threshold_deg": float(threshold),
        "threshold_cos": math.cos(math.radians(float(threshold))),
        "num_images": n,
        "num_kept": int(keep.sum()),
        "num_dropped": int((~keep).sum()),
        "num_unreadable": int(unreadable.sum()),
        "num_classes": num_classes,
        "num_classes_kept": len(new_classes),
        "num_classes_dropped": num_classes - len(new_classes),
        "dropped_classes": [data.classes[j] for j in np.flatnonzero(class_map < 0).tolist()],
        "dominant_fraction": float(decisions.counts.max(axis=1).sum() / max(int(readable.sum()), 1)),
        "classes": per_class,
        "dropped": dropped_rows,
    }
    if data.true_labels is not None:
        report["label_noise"] = _noise_scores(~keep, data.true_labels != labels)
    far_dropped = int((~keep & readable).sum())
    if readable.any() and far_dropped > SUSPICIOUS_DROP_FRACTION * int(readable.sum()):
        share = far_dropped / int(readable.sum())
        angles = angle[readable]
        report["warning"] = (
            f"the threshold dropped {100 * share:.0f} % of the readable images ({far_dropped} of "
            f"{int(readable.sum())}), more than label noise explains: {float(threshold):g}° suits this model badly "
            f"(its median angle to the dominant sub-centre is {float(np.median(angles)):.1f}°); look at angles.png "
            "and choose --threshold from the gap between the two groups, or train the model longer")
        warnings.warn(report["warning"], FaceSphereWarning, stacklevel=2)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot_angles(angle[readable], keep[readable], float(threshold), out / "angles.png",
                title=f"{report['num_dropped']} of {n} images dropped ({config.head.name}, K = {k})")
    return report
