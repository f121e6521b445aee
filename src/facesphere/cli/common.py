"""What several command groups share: the options that say how to open a recogniser (declared once), and the list
of images a command was given."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data.image import is_image_file
from ..errors import DataError
from ..infer.embedders import FLIP_MODES
from ..infer.recognizer import FaceRecognizer


def add_model_options(parser: argparse.ArgumentParser, *, detector: bool = True, flip: bool = True,
                      batch_size: int = 32, onnx_backend: bool = False, input_size: bool = False,
                      runtime: bool = True) -> None:
    """The options that say how to open a recogniser (and a face detector); read back by :func:`model_options`.

    ``runtime=False`` leaves out what only running a model needs (``--device``, ``--fp16``, ``--batch-size``).
    """
    group = parser.add_argument_group("model")
    group.add_argument("--arch", default=None, help="backbone name for an arcface_torch backbone.pth (e.g. iresnet50)")
    group.add_argument("--input-color", choices=("rgb", "bgr"), default=None,
                       help="colour order the model expects (ONNX models; default: the model's own or rgb)")
    group.add_argument("--input-mean", type=float, default=None, metavar="M", help="pixels are fed as (p - M) / S")
    group.add_argument("--input-std", type=float, default=None, metavar="S")
    if input_size:
        group.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                           help="model input size (default: from the model, else 112 112)")
    if onnx_backend:
        group.add_argument("--backend", choices=("auto", "onnxruntime", "opencv"), default="auto",
                           help="ONNX runtime (default: onnxruntime, then OpenCV DNN)")
    if runtime:
        group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
        group.add_argument("--fp16", action="store_true", help="half-precision autocast (CUDA, PyTorch models)")
    if flip:
        group.add_argument("--flip", choices=FLIP_MODES, default="sum",
                           help="test-time flip fusion: sum (insightface / opensphere, default), concat (SphereFace), "
                                "none")
    if runtime:
        group.add_argument("--batch-size", type=int, default=batch_size)
    if detector:
        group.add_argument("--detector", type=Path, default=None, metavar="WEIGHTS",
                           help="SCRFD or YuNet ONNX weights, or an MTCNN folder (pnet/rnet/onet.onnx): detect and "
                                "align faces in unaligned photos")


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`facesphere.load_embedder` that :func:`add_model_options` declared."""
    options = {"arch": args.arch, "input_color": args.input_color, "input_mean": args.input_mean,
               "input_std": args.input_std}
    if hasattr(args, "device"):
        options.update(device=args.device, fp16=args.fp16)
    if getattr(args, "input_size", None):
        options["input_size"] = tuple(args.input_size)
    if getattr(args, "backend", None):
        options["backend"] = args.backend
    return options


def open_recognizer(args: argparse.Namespace, model: Any, *, threshold: float | None = None) -> FaceRecognizer:
    extra = {} if threshold is None else {"threshold": threshold}
    recognizer = FaceRecognizer.from_path(model, detector=getattr(args, "detector", None), flip=args.flip,
                                          **extra, **model_options(args))
    recognizer.batch_size = args.batch_size
    return recognizer


def expand_images(items: list[str]) -> list[Path]:
    """Image files given directly, and every image under the directories given (sorted)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p.name)))
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"{path}: no such image file or folder")
    if not paths:
        raise DataError(f"no images found in {', '.join(items)}")
    return paths
