"""The decision threshold a model carries: which cosine means "same person", where it was measured and at what FAR.

One rule everywhere (``verify``, ``gallery search``, ``detect --gallery``, :class:`~facesphere.FaceRecognizer`):
the default threshold is the **accuracy-optimal threshold of the model's own calibration pairs** (the mean of the
10 per-fold thresholds of the exact 10-fold accuracy, docs/methods.md), and the false accept rate (FAR) it operates at
on those pairs is reported when it is known. ``--threshold T`` replaces it; ``--far F`` asks for the threshold at
which a fraction ``F`` of the calibration impostor pairs is accepted.

Where the threshold comes from, in order (:func:`model_threshold`):

1. a **facesphere run** (directory or checkpoint): the validation record of the checkpoint's step in
   ``metrics.jsonl`` (``best.pt``: the best step of ``metrics.json``; else the latest validation), first validation
   set of the config. The training loop records the 10-fold threshold and accuracy but not the per-pair scores, so
   the FAR is not known from the record; :func:`facesphere.evaluate.calibrate.calibrate_threshold` re-scores the
   run's validation set when a FAR is asked for.
2. a model **exported by facesphere**: the ONNX metadata ``facesphere.threshold`` (the run's threshold, written by
   :func:`facesphere.infer.export.export_onnx`) and ``facesphere.validation`` (the run's validation settings).
3. a **known public model** (:data:`KNOWN_THRESHOLDS`, by file-name prefix as :data:`KNOWN_ONNX_MODELS`): measured
   on the shared LFW copy by ``benchmarks/thresholds.py`` (docs/results.md): accuracy-optimal threshold with its
   FAR, and the thresholds at FAR 1e-1, 1e-2, 1e-3.
4. anything else: :data:`DEFAULT_THRESHOLD` (0.3), **uncalibrated**, and said so.

FAR at a threshold ``τ``: the fraction of impostor pairs scoring ``>= τ`` (the decision is ``same iff score >= τ``);
the threshold at FAR ``f`` (:func:`threshold_at_far`) is the smallest ``τ`` at which at most ``⌊f·N⌋`` of the ``N``
impostor pairs are accepted.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import FaceSphereError, InvalidOptionError
from ..run.directory import checkpoint_path, config_of
from .embedders import read_onnx_metadata

__all__ = ["ModelThreshold", "DEFAULT_THRESHOLD", "KNOWN_THRESHOLDS", "model_threshold", "choose_threshold",
           "threshold_at_far", "rates_at", "validation_settings", "far_key", "THRESHOLD_KEY", "VALIDATION_KEY"]

#: the threshold of a model nothing is known about (stated as uncalibrated wherever it is used)
DEFAULT_THRESHOLD = 0.3
#: ONNX metadata keys written by :func:`facesphere.infer.export.export_onnx`
THRESHOLD_KEY = "facesphere.threshold"
VALIDATION_KEY = "facesphere.validation"


def far_key(rate: float) -> str:
    """``1e-03``: how a FAR is written as a key (as in ``metrics.json``)."""
    return f"{float(rate):.0e}"


@dataclass(frozen=True)
class ModelThreshold:
    """A decision threshold on the cosine score and what is known about it.

    ``value``: same person iff ``score >= value``. ``rule``: ``accuracy`` (accuracy-optimal on the calibration
    pairs), ``far`` (the threshold at a target FAR), ``given`` (chosen by the user) or ``default`` (uncalibrated).
    ``source``: where it was read. ``measured_on``: the calibration pairs. ``far`` / ``tar``: the false / true
    accept rates at ``value`` on those pairs (None: not recorded). ``accuracy``: the 10-fold accuracy there.
    ``at_far``: thresholds at other FARs on the same pairs (``{"1e-03": 0.41}``).
    """

    value: float
    rule: str
    source: str
    measured_on: str | None = None
    far: float | None = None
    tar: float | None = None
    accuracy: float | None = None
    at_far: Mapping[str, float] = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return self.rule in ("accuracy", "far")

    def describe(self) -> str:
        """One line: the value, the rule, the FAR and where it comes from."""
        if self.rule == "given":
            what = "given"
        elif self.rule == "default":
            what = "facesphere's default, uncalibrated for this model"
        elif self.rule == "far":
            what = "at the target FAR"
        else:
            what = "accuracy-optimal"
        parts = [f"threshold {self.value:.4f} ({what}"]
        if self.measured_on:
            parts.append(f" on {self.measured_on}")
        if self.far is not None:
            parts.append(f", FAR {'<= ' if self.rule == 'far' else ''}{_rate(self.far)}")
            if self.tar is not None:
                parts.append(f", TAR {_rate(self.tar)}")
        elif self.rule == "accuracy":
            parts.append(", FAR not recorded: --far F calibrates")
        if self.accuracy is not None and self.rule == "accuracy":
            parts.append(f", accuracy {100 * self.accuracy:.2f} %")
        parts.append(f"; {self.source})")
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"value": float(self.value), "rule": self.rule, "source": self.source, "measured_on": self.measured_on,
                "far": self.far, "tar": self.tar, "accuracy": self.accuracy, "at_far": dict(self.at_far)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> "ModelThreshold":
        return cls(value=float(data["value"]), rule=str(data.get("rule", "accuracy")), source=source,
                   measured_on=data.get("measured_on"), far=_float(data.get("far")), tar=_float(data.get("tar")),
                   accuracy=_float(data.get("accuracy")),
                   at_far={str(k): float(v) for k, v in (data.get("at_far") or {}).items()})


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _rate(value: float) -> str:
    percent = 100 * value
    return f"{percent:.2f} %" if percent >= 0.1 or percent == 0 else f"{percent:.3f} %"


# ------------------------------------------------------------------------------------------------------------------
# measuring

def threshold_at_far(impostor_scores: Any, far: float) -> float:
    """The smallest threshold ``τ`` with ``#{impostor >= τ} <= ⌊far·N⌋`` (``same iff score >= τ``)."""
    scores = np.sort(np.asarray(impostor_scores, dtype=np.float64).reshape(-1))[::-1]
    if scores.size == 0:
        raise InvalidOptionError("threshold_at_far needs impostor scores")
    if not 0.0 <= float(far) < 1.0:
        raise InvalidOptionError(f"a FAR must be in [0, 1), got {far}")
    allowed = int(math.floor(float(far) * scores.size + 1e-9))
    if allowed >= scores.size:
        return float(scores[-1])
    return float(np.nextafter(scores[allowed], np.inf))


def rates_at(scores: Any, issame: Any, threshold: float) -> tuple[float, float]:
    """``(FAR, TAR)`` of the decision ``score >= threshold`` over scored pairs."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    issame = np.asarray(issame, dtype=bool).reshape(-1)
    accepted = scores >= threshold
    impostors, genuine = ~issame, issame
    far = float(accepted[impostors].mean()) if impostors.any() else float("nan")
    tar = float(accepted[genuine].mean()) if genuine.any() else float("nan")
    return far, tar


# ------------------------------------------------------------------------------------------------------------------
# known public models: measured on the shared LFW copy by benchmarks/thresholds.py (see docs/results.md)

_LFW = "LFW View 2 (grayscale copy, 6,000 pairs, SCRFD-2.5G aligned)"
_TABLE = "facesphere's table of known models (benchmarks/thresholds.py, docs/results.md)"
KNOWN_THRESHOLDS: dict[str, ModelThreshold] = {
    # SFace (OpenCV Zoo, int8bq): 10-fold accuracy 99.52 % ± 0.35
    "face_recognition_sface": ModelThreshold(
        value=0.3529, rule="accuracy", source=_TABLE, measured_on=_LFW, far=1 / 3000, tar=0.9910, accuracy=0.9952,
        at_far={"1e-01": 0.2089, "1e-02": 0.2967, "1e-03": 0.3496}),
    # MobileFaceNet-128: 10-fold accuracy 99.23 % ± 0.42
    "mobilefacenet_128d": ModelThreshold(
        value=0.2798, rule="accuracy", source=_TABLE, measured_on=_LFW, far=14 / 3000, tar=0.9897, accuracy=0.9923,
        at_far={"1e-01": 0.1586, "1e-02": 0.2595, "1e-03": 0.3514}),
}


# ------------------------------------------------------------------------------------------------------------------
# reading what a model carries

def _is_run_source(path: Path) -> bool:
    return path.suffix.lower() not in (".onnx", ".pth") and config_of(path) is not None


def _run_dir(path: Path) -> Path:
    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder.parent):
        if (candidate / "config.yaml").is_file():
            return candidate
    return folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _validation_records(run_dir: Path) -> list[dict[str, Any]]:
    records = []
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("val"), dict) and record["val"]:
            records.append(record)
    return records


def _checkpoint_step(path: Path, run_dir: Path) -> int | None:
    try:
        checkpoint = checkpoint_path(path)
    except FaceSphereError:
        return None
    match = re.fullmatch(r"step_(\d+)\.pt", checkpoint.name)
    if match:
        return int(match.group(1))
    summary = _read_json(run_dir / "metrics.json")
    if isinstance(summary, dict) and isinstance(summary.get("best"), dict) and summary["best"].get("step"):
        return int(summary["best"]["step"])
    return None


def run_threshold(source: str | os.PathLike[str]) -> ModelThreshold | None:
    """The threshold a facesphere run recorded for the checkpoint ``source`` stands for (see the module docstring),
    or None when the run has no validation record."""
    path = Path(source)
    run_dir = _run_dir(path)
    step = _checkpoint_step(path, run_dir)
    records = _validation_records(run_dir)
    record = None
    if records:
        at_or_before = [r for r in records if step is None or int(r.get("step", 0)) <= step]
        record = (at_or_before or records)[-1]
    else:
        summary = _read_json(run_dir / "metrics.json")
        if isinstance(summary, dict) and isinstance(summary.get("val"), dict) and summary["val"]:
            record = {"step": summary.get("steps"), "val": summary["val"]}
    if record is None:
        return None
    name, metrics = next(iter(record["val"].items()))
    if not isinstance(metrics, dict) or metrics.get("threshold") is None:
        return None
    value = float(metrics["threshold"])
    if metrics.get("threshold_space") == "distance":  # insightface's 2 - 2cos
        value = 1.0 - value / 2.0
    pairs = metrics.get("pairs")
    where = f"validation set {name!r} of the run" + (f" ({int(pairs):,} pairs" if pairs else " (")
    where += f", step {record.get('step')})" if record.get("step") is not None else ")"
    return ModelThreshold(value=value, rule="accuracy", source=f"run {run_dir} (metrics.jsonl)", measured_on=where,
                          accuracy=_float(metrics.get("accuracy")))


def onnx_threshold(path: str | os.PathLike[str]) -> ModelThreshold | None:
    """The threshold a facesphere export keeps in its metadata, else a known model's, else None."""
    file = Path(path)
    stored = read_onnx_metadata(file).get(THRESHOLD_KEY)
    if stored:
        try:
            return ModelThreshold.from_dict(json.loads(stored), source=f"{file.name} metadata ({THRESHOLD_KEY})")
        except (ValueError, KeyError, TypeError):
            pass
    for prefix, known in KNOWN_THRESHOLDS.items():
        if file.name.startswith(prefix):
            return known
    return None


def model_threshold(source: Any) -> ModelThreshold:
    """The threshold ``source`` (a run directory or checkpoint, an ONNX file, a ``backbone.pth``, an embedder with a
    ``path`` or a module) carries, or the uncalibrated :data:`DEFAULT_THRESHOLD` (see the module docstring)."""
    found = None
    if not isinstance(source, (str, os.PathLike)):
        source = getattr(source, "path", None)
    if source is not None:
        path = Path(source)
        if path.suffix.lower() == ".onnx":
            found = onnx_threshold(path)
        elif path.exists() and _is_run_source(path):
            found = run_threshold(path)
    return found or ModelThreshold(value=DEFAULT_THRESHOLD, rule="default",
                                   source="no threshold recorded for this model: pass --threshold, or measure one "
                                          "with facesphere eval on your own pairs")


def choose_threshold(carried: ModelThreshold, *, threshold: float | None = None,
                     far: float | None = None) -> ModelThreshold:
    """The threshold to decide with: ``threshold`` when given, else the one at ``far`` among ``carried.at_far``
    (an :class:`~facesphere.errors.InvalidOptionError` lists the FARs known when it is not there), else
    ``carried``."""
    if threshold is not None and far is not None:
        raise InvalidOptionError("give either a threshold or a FAR, not both")
    if threshold is not None:
        value = float(threshold)
        if not math.isfinite(value):
            raise InvalidOptionError(f"threshold must be a finite number, got {threshold!r}")
        return ModelThreshold(value=value, rule="given", source="--threshold")
    if far is None:
        return carried
    key = far_key(far)
    if key not in carried.at_far:
        known = ", ".join(sorted(carried.at_far, key=float)) or "none"
        raise InvalidOptionError(f"no threshold at FAR {key} is recorded for this model (recorded FARs: {known}); "
                                 "pick one of those, or pass --threshold")
    return replace(carried, value=float(carried.at_far[key]), rule="far", far=float(far), tar=None, accuracy=None)


def validation_settings(source: Any) -> dict[str, Any] | None:
    """The validation settings a model carries: ``{"val": [specs], "synthetic": {seed, difficulty,
    identity_spread, pairs_per_fold}, "image_size": [H, W]}`` from a run's config or an export's metadata
    (``facesphere.validation``); None for anything else."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source)
    if path.suffix.lower() == ".onnx":
        stored = read_onnx_metadata(path).get(VALIDATION_KEY)
        try:
            settings = json.loads(stored) if stored else None
        except ValueError:
            return None
        return settings if isinstance(settings, dict) else None
    if path.suffix.lower() == ".pth" or not path.exists():
        return None
    try:
        config = config_of(path)
    except FaceSphereError:
        return None
    if config is None:
        return None
    data = config.data
    return {"val": list(data.val), "image_size": [int(v) for v in data.image_size],
            "synthetic": {"seed": config.train.seed, "difficulty": data.synthetic_difficulty,
                          "identity_spread": data.synthetic_identity_spread,
                          "pairs_per_fold": data.synthetic_val_pairs_per_fold}}
