"""Export a recogniser to ONNX (dynamic batch) and check it against PyTorch in onnxruntime.

The input convention travels inside the file as ONNX metadata (``facesphere.input_color``, ``.input_mean``,
``.input_std``, ``.input_size``), so ``load_embedder("model.onnx")`` feeds an exported model exactly as the run's
config says, with no options. So do the run's decision threshold (``facesphere.threshold``: what ``verify`` and
``gallery search`` decide at, :mod:`.thresholds`) and its validation settings (``facesphere.validation``: the
validation sets and the synthetic set's seed, difficulty, spread and size, so ``eval model.onnx --data synthetic``
scores the same pairs as the run). Input ``input`` float32 ``(batch, 3, H, W)`` normalised pixels, output
``embedding`` float32 ``(batch, D)`` (raw, not L2-normalised, like the PyTorch backbone).

The exporters' expected chatter (the dynamo exporter moving to opset 18 and converting back, torchvision not being
installed) is silenced; any other warning is shown.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import FaceSphereError, InvalidOptionError, UnknownNameError
from ..files import atomic_path
from .embedders import TorchEmbedder, load_embedder
from .thresholds import THRESHOLD_KEY, VALIDATION_KEY, model_threshold, validation_settings

EXPORTERS = ("dynamo", "torchscript")
METADATA_PREFIX = "facesphere."

#: messages the exporters print on every ordinary export (logging records and Python warnings): not the user's problem
EXPECTED_EXPORT_MESSAGES = (
    r"Setting ONNX exporter to use operator set version",
    r"torchvision is not installed",
    r"version conversion is not supported by the onnxscript version converter",
    r"Converting a tensor to a Python",
    r"You are using the legacy TorchScript-based ONNX export",
    r"dynamic_axes is not recommended when dynamo=True",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The feature will be removed\. Please remove usage of this function",
)
_EXPECTED = re.compile("|".join(EXPECTED_EXPORT_MESSAGES))
_EXPORT_LOGGERS = ("torch.onnx", "torch.onnx._internal.exporter._compat",
                   "torch.onnx._internal.exporter._registration", "onnxscript", "onnxscript.version_converter")


class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _EXPECTED.search(record.getMessage())


@contextmanager
def quiet_expected_export_messages() -> Iterator[None]:
    """Drop the exporters' expected log records and warnings (:data:`EXPECTED_EXPORT_MESSAGES`); others pass."""
    drop = _DropExpected()
    loggers = [logging.getLogger(name) for name in _EXPORT_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for pattern in EXPECTED_EXPORT_MESSAGES:
                warnings.filterwarnings("ignore", message=f".*{pattern}")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, exporter: str) -> None:
    with quiet_expected_export_messages():
        if exporter == "dynamo":
            torch.onnx.export(
                module, (example,), str(path), opset_version=opset, input_names=["input"],
                output_names=["embedding"], dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), dynamo=True,
                verbose=False,
            )
        else:
            torch.onnx.export(
                module, (example,), str(path), opset_version=opset, input_names=["input"],
                output_names=["embedding"], dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                dynamo=False,
            )


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    existing = {entry.key: entry for entry in model.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    # one self-contained file (small models are exported with external data by some exporters)
    onnx.save_model(model, str(path), save_as_external_data=False)


def export_onnx(source: Any, out: str | os.PathLike, *, opset: int = 17, exporter: str = "dynamo",
                check: bool = True, check_images: np.ndarray | None = None, batch_sizes: tuple[int, ...] = (1, 4),
                tolerance: float = 1e-4, **load_options: Any) -> dict[str, Any]:
    """Export ``source`` (run directory, checkpoint, ``backbone.pth`` with ``arch=``, or a :class:`TorchEmbedder`)
    to ``out`` and return a report.

    With ``check`` (default) the file is reloaded in onnxruntime and its embeddings are compared with PyTorch's on
    random crops (and on ``check_images``, uint8 RGB ``(N, H, W, 3)``, if given) at every batch size in
    ``batch_sizes``; the largest absolute difference, relative to the largest feature magnitude, must stay within
    ``tolerance`` or :class:`FaceSphereError` is raised (and no file is left behind). The file is written
    atomically: a failed export never replaces an existing model.
    """
    if exporter not in EXPORTERS:
        raise UnknownNameError(f"unknown exporter {exporter!r}; valid: {', '.join(EXPORTERS)}")
    if opset < 17:
        raise InvalidOptionError(f"opset must be >= 17, got {opset}")
    embedder = source if isinstance(source, TorchEmbedder) else load_embedder(source, **load_options)
    if not isinstance(embedder, TorchEmbedder):
        raise FaceSphereError(f"{source}: only PyTorch models can be exported (this one is {embedder!r})")
    if embedder.fp16:
        raise InvalidOptionError("export in fp32 (drop fp16); onnxruntime can convert the exported model later")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = embedder.module.float().cpu().eval()
    height, width = embedder.input_size
    example = torch.randn(2, 3, height, width)
    with atomic_path(out, what="ONNX model", suffix=".onnx") as temp:
        try:
            _export(module, example, temp, opset, exporter)
        except Exception as error:  # noqa: BLE001 - exporters raise many types
            raise FaceSphereError(
                f"ONNX export of {embedder.name} failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                f"try --exporter {'torchscript' if exporter == 'dynamo' else 'dynamo'}"
            ) from None
        try:
            metadata = {
                METADATA_PREFIX + "input_color": embedder.color,
                METADATA_PREFIX + "input_mean": repr(embedder.mean),
                METADATA_PREFIX + "input_std": repr(embedder.std),
                METADATA_PREFIX + "input_size": f"{height},{width}",
                METADATA_PREFIX + "source": embedder.name,
            }
            metadata.update(run_metadata(source))
            _add_metadata(temp, metadata)
            report: dict[str, Any] = {"path": str(out), "opset": opset, "exporter": exporter,
                                      "input_size": [height, width], "color": embedder.color, "mean": embedder.mean,
                                      "std": embedder.std}
            if THRESHOLD_KEY in metadata:
                report["threshold"] = json.loads(metadata[THRESHOLD_KEY])["value"]
            if VALIDATION_KEY in metadata:
                report["validation"] = json.loads(metadata[VALIDATION_KEY])
            if check:
                report.update(check_onnx(embedder, temp, images=check_images, batch_sizes=batch_sizes,
                                         tolerance=tolerance))
        finally:
            for leftover in out.parent.glob(temp.name + "?*"):  # external-data side files of the temp model
                leftover.unlink()
    report["bytes"] = out.stat().st_size
    return report


def run_metadata(source: Any) -> dict[str, str]:
    """What a run hands its export besides the input convention: its decision threshold and validation settings
    (:mod:`.thresholds`), as ONNX metadata entries; ``{}`` for a source that is not a run."""
    if not isinstance(source, (str, os.PathLike)):
        return {}
    metadata = {}
    carried = model_threshold(source)
    if carried.calibrated:
        name = Path(source).name if Path(source).is_dir() else Path(source).parent.name
        record = carried.to_dict()
        if record.get("measured_on"):
            record["measured_on"] = str(record["measured_on"]).replace("of the run", f"of run {name}")
        metadata[THRESHOLD_KEY] = json.dumps(record)
    settings = validation_settings(source)
    if settings:
        metadata[VALIDATION_KEY] = json.dumps(settings)
    return metadata


def check_onnx(embedder: TorchEmbedder, onnx_path: str | os.PathLike, *, images: np.ndarray | None = None,
               batch_sizes: tuple[int, ...] = (1, 4), tolerance: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Compare an exported model in onnxruntime with the PyTorch embedder: ``{"max_abs_diff", "max_rel_diff",
    "min_cosine"}`` over random uint8 crops at each batch size (plus ``images`` if given)."""
    onnx_embedder = load_embedder(onnx_path, backend="onnxruntime")
    rng = np.random.default_rng(seed)
    height, width = embedder.input_size
    batches = [rng.integers(0, 256, size=(b, height, width, 3), dtype=np.uint8) for b in batch_sizes]
    if images is not None and len(images):
        batches.append(np.asarray(images, dtype=np.uint8))
    worst_abs, worst_rel, min_cos = 0.0, 0.0, 1.0
    for batch in batches:
        expected = embedder.embed_batch(batch)
        got = onnx_embedder.embed_batch(batch)
        if got.shape != expected.shape:
            raise FaceSphereError(f"{onnx_path}: ONNX output {got.shape} differs from PyTorch {expected.shape}")
        diff = float(np.abs(got - expected).max())
        scale = float(np.abs(expected).max()) or 1.0
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, diff / scale)
        cos = np.sum(got * expected, axis=1) / np.maximum(
            np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1), 1e-12)
        min_cos = min(min_cos, float(cos.min()))
    if worst_rel > tolerance:
        raise FaceSphereError(
            f"{onnx_path}: onnxruntime differs from PyTorch by {worst_abs:.3g} ({worst_rel:.3g} of the feature "
            f"scale; tolerance {tolerance:g})"
        )
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel, "min_cosine": min_cos,
            "checked_batches": [len(b) for b in batches]}


__all__ = ["export_onnx", "check_onnx", "EXPORTERS", "run_metadata", "quiet_expected_export_messages",
           "EXPECTED_EXPORT_MESSAGES"]
