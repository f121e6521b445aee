"""Evaluation reports: a plain-text results table, ``metrics.json``, ``roc.png`` and one score histogram per dataset.

Plots use matplotlib's Agg canvas directly (``matplotlib.figure.Figure``), imported only when a plot is drawn; no
global pyplot state is touched.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import FaceSphereError
from ..files import atomic_write_text
from . import metrics as M
from .verification import FARS

__all__ = ["format_table", "write_metrics_json", "plot_roc", "plot_score_histogram", "safe_filename",
           "detection_note"]

#: ROC curves are drawn from at most this many points (the curve is thinned evenly in log FAR).
_MAX_ROC_POINTS = 4000


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * float(value):.2f}"


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):.4f}"


def _far_label(key: str) -> str:
    """A FAR / FPIR key ``1e-03`` as a percentage label ``0.1%`` (the tables' one unit)."""
    return f"{100 * float(key):g}%"


def format_table(results: dict[str, Any]) -> str:
    """The results of :func:`facesphere.evaluate.run.evaluate_model` as plain-text tables, one unit per table: every
    rate (accuracy, AUC, EER, TAR, TPIR, rank-k, and the FAR / FPIR in the column names) in percent, said in each
    table's first line; the threshold is a cosine.

    One table for pair protocols (accuracy ± std, threshold, AUC, EER, TAR@FAR 10 % … 0.0001 %), one for 1:N
    (rank-1/5, TPIR@FPIR), then the definitions in use, and a line per dataset where the detector found no face in
    some images (and what was done with them) or where probe images were missing (counted as misses).
    """
    datasets = results.get("datasets", {})
    lines: list[str] = []
    pairs = {n: m for n, m in datasets.items() if m.get("protocol") in ("pairs", "ijb")}
    if pairs:
        fars = sorted({k for m in pairs.values() for k in m.get("tar_at_far", {})}, key=lambda k: -float(k))
        lines.append("verification (all rates in %; thresh is a cosine)")
        header = ["dataset", "pairs", "acc", "± std", "thresh", "AUC", "EER"] + [f"TAR@FAR={_far_label(k)}"
                                                                                for k in fars]
        rows = []
        for name, m in pairs.items():
            row = [name, f"{m['pairs']:,}", _pct(m.get("accuracy")), _pct(m.get("accuracy_std")),
                   _num(m.get("threshold")), _pct(m.get("auc")), _pct(m.get("eer"))]
            row += [_pct(m.get("tar_at_far", {}).get(k)) for k in fars]
            rows.append(row)
        lines += _grid(header, rows)
        methods = sorted({m.get("tar_method") for m in pairs.values()})
        acc = sorted({m.get("accuracy_method") for m in pairs.values() if m.get("accuracy_method")})
        notes = []
        if acc:
            notes.append(f"accuracy: 10-fold, {'/'.join(acc)} thresholds")
        notes.append(f"TAR@FAR: {' / '.join(methods)} (see metrics.json 'definitions')")
        lines.append("  " + "; ".join(notes))
    idents = {n: m for n, m in datasets.items() if m.get("protocol") == "ident"}
    ijb_1n = {n: m["identification"] for n, m in datasets.items() if m.get("identification")}
    if idents or ijb_1n:
        if lines:
            lines.append("")
        lines.append("identification (all rates in %)")
        header = ["dataset (1:N)", "probes", "gallery", "rank-1", "rank-5", "definition", "TPIR@FPIR=1%",
                  "TPIR@FPIR=10%"]
        rows = []
        for name, m in idents.items():
            ranks = m.get("rank_accuracy", {})
            probes = f"{m['probes']:,}" + (f" (+{m['missing_probes']:,} missing)" if m.get("missing_probes") else "")
            for definition, tp in (m.get("tpir_at_fpir") or {}).items():
                if tp is None:
                    continue
                rows.append([name, probes, f"{m['gallery_identities'] + m['distractors']:,}",
                             _pct(ranks.get("1")), _pct(ranks.get("5")), definition, _pct(tp.get("1e-02")),
                             _pct(tp.get("1e-01"))])
            if not any(tp for tp in (m.get("tpir_at_fpir") or {}).values()):
                rows.append([name, probes, f"{m['gallery_identities'] + m['distractors']:,}",
                             _pct(ranks.get("1")), _pct(ranks.get("5")), "—", "—", "—"])
            if m.get("megaface"):
                mf = m["megaface"]
                rows.append([f"{name} (leave-one-in)", f"{mf['searches']:,}", f"1+{mf['distractors']:,}",
                             _pct(mf["rank_accuracy"].get("1")), _pct(mf["rank_accuracy"].get("5")), "megaface",
                             "—", "—"])
        for name, ident in ijb_1n.items():
            for definition in ("nist", "toolbox"):
                block = ident.get(definition, {})
                block = block.get("mean", block) if definition == "nist" else block
                if not block or "rank_accuracy" not in block:
                    continue
                label = "nist (G1/G2 mean)" if definition == "nist" else "toolbox (G1∪G2)"
                rows.append([name, f"{ident['probes']:,}", "templates", _pct(block["rank_accuracy"].get("1")),
                             _pct(block["rank_accuracy"].get("5")), label,
                             _pct(block["tpir_at_fpir"].get("1e-02")), _pct(block["tpir_at_fpir"].get("1e-01"))])
        lines += _grid(header, rows)
    for name, m in datasets.items():
        note = detection_note(name, m)
        if note:
            lines.append("  " + note)
        if m.get("missing_probes"):
            lines.append(f"  {name}: {m['missing_probes']:,} probe(s) whose images are missing (dropped by data align,"
                         " listed in its align_dropped.txt) are counted as misses in rank-k and TPIR")
    if not lines:
        lines.append("(no datasets evaluated)")
    return "\n".join(lines)


def detection_note(name: str, metrics: dict[str, Any]) -> str | None:
    """``lfw: no face found in 12 of 7,701 images: central crop used (--no-face crop)``, or None."""
    detection = metrics.get("detection") or {}
    missing = int(detection.get("no_face", 0))
    if not missing:
        return None
    total = sum(int(detection.get(k, 0)) for k in ("aligned_as_given", "detected", "no_face"))
    policy = detection.get("no_face_policy", "crop")
    done = {"crop": "central crop used", "resize": "whole image resized", "skip": "left out",
            "fail": "stopped"}.get(policy, policy)
    return f"{name}: no face found in {missing:,} of {total:,} images: {done} (--no-face {policy})"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    fmt = lambda cells: "  ".join(  # noqa: E731
        (str(c).ljust(w) if i == 0 else str(c).rjust(w)) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [fmt(header), "  ".join("-" * w for w in widths)]
    out += [fmt(r) for r in rows]
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None  # JSON has no NaN / inf
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics_json(results: dict[str, Any], path: str | Path) -> Path:
    """Write ``results`` as JSON (numpy values converted; NaN / inf written as null). Returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(_jsonable(results), indent=2, ensure_ascii=False) + "\n", what="metrics file")
    return path


def safe_filename(name: str) -> str:
    """A dataset name as a file-name stem (letters, digits, ``-_.`` kept)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise FaceSphereError('plots need matplotlib: pip install matplotlib (or pass plots=False / --no-plots)') \
            from None
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _thin(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if fpr.size <= _MAX_ROC_POINTS:
        return fpr, tpr
    positive = fpr > 0
    lo = np.log10(fpr[positive].min())
    grid = np.logspace(lo, 0, _MAX_ROC_POINTS)
    idx = np.unique(np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, fpr.size - 1))
    return fpr[idx], tpr[idx]


def _save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out ``fig`` and write it to ``path`` (parent folders created)."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
             fars: Sequence[float] = FARS) -> Path:
    """All datasets' ROC curves in one PNG: TAR (TPR) against FAR (FPR) on a log axis.

    ``curves``: ``{dataset name: (scores, issame)}``. The FAR axis starts at the smallest non-zero FAR any curve
    reaches (one impostor pair), so curves of small sets end where their data ends.
    """
    fig = _figure(6.4, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    smallest = 1.0
    for name, (scores, issame) in curves.items():
        curve = M.roc(scores, issame, drop_intermediate=True)
        fpr, tpr = _thin(curve.fpr, curve.tpr)
        keep = fpr > 0
        if not keep.any():
            continue
        smallest = min(smallest, float(fpr[keep].min()))
        ax.step(fpr[keep], tpr[keep], where="post", label=f"{name} (AUC {100 * M.auc(curve.fpr, curve.tpr):.2f}%)")
    ax.set_xscale("log")
    ax.set_xlim(max(min(fars), 10 ** math.floor(math.log10(smallest))), 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("TAR (true accept rate)")
    ax.set_title("ROC")
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(loc="lower right", fontsize="small")
    return _save_figure(fig, path)


def plot_score_histogram(name: str, genuine: np.ndarray, impostor: np.ndarray, path: str | Path, *,
                         threshold: float | None = None, labels: tuple[str, str] = ("genuine", "impostor"),
                         bins: int | None = None) -> Path:
    """Genuine vs impostor score distributions of one dataset (densities on shared bins); an optional vertical
    line marks the decision threshold. ``bins`` defaults to ``sqrt(#scores)`` clipped to [10, 100]."""
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    values = np.concatenate([genuine, impostor])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (-1.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    if bins is None:
        bins = int(np.clip(np.sqrt(values.size), 10, 100))
    edges = np.linspace(lo, hi, bins + 1)
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for data, label, colour in ((genuine, labels[0], "tab:green"), (impostor, labels[1], "tab:red")):
        data = data[np.isfinite(data)]
        if data.size:
            counts, _ = np.histogram(data, bins=edges, density=True)
            ax.stairs(counts, edges, fill=True, alpha=0.45, color=colour, label=f"{label} ({data.size:,})")
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(f"{name}: score distributions")
    ax.legend(loc="upper left", fontsize="small")
    return _save_figure(fig, path)
