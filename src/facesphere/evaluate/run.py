"""``evaluate_model``: readers -> protocol -> metrics -> report, for any number of ``--data`` specs.

    from facesphere import load_embedder
    from facesphere.evaluate import evaluate_model
    results = evaluate_model(load_embedder("runs/my_run"), ["synthetic", "bin:lfw.bin"], "eval_out")

writes ``eval_out/metrics.json``, ``eval_out/roc.png`` (every pair protocol's ROC on a log-FAR axis) and
``eval_out/scores_<dataset>.png`` (genuine vs impostor histogram) and returns the metrics dict.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.specs import EVAL_KINDS, parse_data_spec
from ..errors import FaceSphereWarning, InvalidOptionError
from ..infer.detectors import build_detector
from ..infer.embedders import load_embedder
from ..infer.thresholds import validation_settings
from .protocols import EvalOptions, ProtocolResult, run_protocol
from .report import (
    detection_note,
    format_table,
    plot_roc,
    plot_score_histogram,
    safe_filename,
    write_metrics_json,
)
from .verification import DEFAULT_TAR_METHOD

__all__ = ["evaluate_model", "format_table", "synthetic_defaults_for"]


def synthetic_defaults_for(source: Any) -> dict[str, Any]:
    """The synthetic validation settings a model carries (a run's ``config.yaml``, or the ``facesphere.validation``
    metadata of a facesphere ONNX export), so ``synthetic`` evaluates the same held-out pairs the run validated on;
    ``{}`` for anything else (other ONNX files, backbone.pth, modules)."""
    settings = validation_settings(source)
    if not settings:
        return {}
    return {key: value for key, value in (settings.get("synthetic") or {}).items()
            if key in ("seed", "difficulty", "identity_spread", "pairs_per_fold")}


def _as_embedder(model: Any) -> Any:
    if callable(getattr(model, "embed_batch", None)) and hasattr(model, "input_size"):
        return model
    return load_embedder(model)


def _as_detector(detector: Any, options: dict[str, Any] | None = None) -> Any:
    if detector is None or not isinstance(detector, (str, os.PathLike)):
        return detector
    return build_detector(detector, **(options or {}))


def evaluate_model(embedder: Any, specs: str | Sequence[str], out_dir: str | Path | None = None, *,
                   flip: str = "sum", batch_size: int = 64, method: str = "exact", tar_method: str | None = None,
                   detector: Any = None, progress: bool = True, plots: bool = True, search_method: str = "auto",
                   synthetic: dict | None = None, save_scores: bool = False, no_face: str | None = None,
                   choose: str = "largest", detector_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a recogniser on every dataset spec and write the report.

    Args:
        embedder: a :class:`~facesphere.infer.embedders.Embedder`, or anything
            :func:`~facesphere.infer.embedders.load_embedder` opens (run directory, checkpoint, ``.onnx``, nn.Module).
        specs: ``--data`` specs (:mod:`facesphere.data.specs`).
        out_dir: where to write ``metrics.json`` and the plots (None: write nothing).
        flip: flip-test fusion ``sum`` / ``concat`` / ``none`` (docs/methods.md §8.1).
        batch_size: images per forward pass.
        method: 10-fold accuracy definition: ``exact`` (default), ``insightface`` or ``sphereface``.
        tar_method: TAR@FAR definition ``interpolate`` / ``nearest``; None: nearest for IJB, interpolated otherwise.
        detector: a face detector (object or ONNX path, built with ``detector_options``) for images that are not
            aligned crops; ``choose`` picks the face of a photo with several.
        no_face: what to do with an image in which no face is found (``crop``, the default with a detector,
            ``resize`` or ``fail``; :mod:`facesphere.infer.crops`); each dataset's count goes into its metrics
            (``"detection"``), the table and a :class:`~facesphere.errors.FaceSphereWarning`.
        progress: tqdm bars while embedding.
        plots: write ``roc.png`` and the histograms (needs matplotlib).
        search_method: 1:N search (``auto``, ``numpy``, ``flat``, ``ivf``, ``hnsw``; :mod:`.search`).
        synthetic: defaults for the ``synthetic`` set (``seed``, ``difficulty``, ``identity_spread``,
            ``pairs_per_fold``).
        save_scores: also write ``scores_<dataset>.npz`` (``scores`` float64 as scored, ``issame`` bool, and
            ``folds`` where the set has them) for every pair-based dataset, to recompute any metric without
            embedding again.

    Returns the metrics dict written to ``metrics.json``: ``{"model", "options", "datasets": {name: metrics},
    "files"}``, each dataset's metrics recording the definitions it used.
    """
    spec_list = [specs] if isinstance(specs, str) else list(specs)
    if not spec_list:
        raise InvalidOptionError("no dataset to evaluate: give at least one --data SPEC")
    parsed = [parse_data_spec(s, EVAL_KINDS) for s in spec_list]  # fail on a bad spec before any embedding
    options = EvalOptions(flip=flip, batch_size=batch_size, accuracy_method=method, tar_method=tar_method,
                          progress=progress, search_method=search_method, synthetic=dict(synthetic or {}),
                          no_face=no_face, choose=choose)
    model = _as_embedder(embedder)
    options.detector = _as_detector(detector, detector_options)
    names: dict[str, int] = {}
    outcomes: list[ProtocolResult] = []
    datasets: dict[str, Any] = {}
    for spec in parsed:
        start = time.perf_counter()
        outcome = run_protocol(spec, model, options)
        seen = names.get(outcome.name, 0)
        names[outcome.name] = seen + 1
        if seen:
            outcome.name = f"{outcome.name}-{seen + 1}"
        outcome.metrics["seconds"] = round(time.perf_counter() - start, 3)
        note = detection_note(outcome.name, outcome.metrics)
        if note:
            warnings.warn(note, FaceSphereWarning, stacklevel=2)
        outcomes.append(outcome)
        datasets[outcome.name] = outcome.metrics
    results: dict[str, Any] = {
        "model": {
            "name": getattr(model, "name", type(model).__name__),
            "input_size": list(getattr(model, "input_size", ())),
            "color": getattr(model, "color", None),
            "mean": getattr(model, "mean", None),
            "std": getattr(model, "std", None),
        },
        "options": {
            "flip": flip,
            "batch_size": int(batch_size),
            "accuracy_method": method,
            "tar_method": tar_method or {"pairs": DEFAULT_TAR_METHOD["pairs"], "ijb": DEFAULT_TAR_METHOD["ijb"]},
            "detector": None if options.detector is None else str(detector),
            "no_face": None if options.detector is None and no_face is None else (no_face or "crop"),
            "search_method": search_method,
        },
        "datasets": datasets,
        "files": {},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            curves = {o.name: (o.scores, o.issame) for o in outcomes if o.scores is not None}
            if curves:
                results["files"]["roc"] = str(plot_roc(curves, out / "roc.png").name)
            histograms = {}
            for o in outcomes:
                if o.genuine is None or o.impostor is None:
                    continue
                threshold = o.metrics.get("threshold") if o.metrics.get("threshold_space") == "score" else None
                labels = ("genuine pairs", "impostor pairs") if o.protocol != "ident" else (
                    "mate score (mated probes)", "best non-mate score")
                path = plot_score_histogram(o.name, o.genuine, o.impostor, out / f"scores_{safe_filename(o.name)}.png",
                                            threshold=threshold, labels=labels)
                histograms[o.name] = path.name
            results["files"]["histograms"] = histograms
        if save_scores:
            saved = {}
            for o in outcomes:
                if o.scores is None:
                    continue
                arrays = {"scores": o.scores.astype(np.float64), "issame": o.issame}
                if o.folds is not None:
                    arrays["folds"] = o.folds
                path = out / f"scores_{safe_filename(o.name)}.npz"
                np.savez_compressed(path, **arrays)
                saved[o.name] = path.name
            results["files"]["scores"] = saved
        results["files"]["metrics"] = "metrics.json"
        write_metrics_json(results, out / "metrics.json")
    return results
