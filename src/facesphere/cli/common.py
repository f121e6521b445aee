"""What several command groups share, declared once: the options that say how to open a recogniser, the face
detector and what to do without a face, the decision threshold, and the list of images a command was given."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..data.image import is_image_file
from ..errors import DataError, InvalidOptionError
from ..evaluate.calibrate import decision_threshold
from ..infer.crops import NO_FACE_HELP, NO_FACE_POLICIES
from ..infer.detectors import CHOOSE_RULES, DEFAULT_MAX_SIDE
from ..infer.embedders import FLIP_MODES
from ..infer.recognizer import FaceRecognizer


def add_model_options(parser: argparse.ArgumentParser, *, detector: bool = True, flip: bool = True,
                      batch_size: int = 32, onnx_backend: bool = False, input_size: bool = False,
                      runtime: bool = True, flip_default: str | None = "sum", face_choice: bool = True) -> None:
    """The options that say how to open a recogniser (and a face detector, :func:`add_detector_options`); read back
    by :func:`model_options` and :func:`detector_options`.

    ``runtime=False`` leaves out what only running a model needs (``--device``, ``--fp16``, ``--batch-size``);
    ``face_choice=False`` leaves out ``--choose`` and ``--no-face`` (commands that take every face).
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
        group.add_argument("--flip", choices=FLIP_MODES, default=flip_default,
                           help="test-time flip fusion: sum (insightface / opensphere, default"
                                + (", or the gallery's" if flip_default is None else "")
                                + "), concat (SphereFace), none")
    if runtime:
        group.add_argument("--batch-size", type=int, default=batch_size)
    if detector:
        add_detector_options(parser, choice=face_choice)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of pixels >= 0, got {text!r}")
    return value


def add_detector_options(parser: argparse.ArgumentParser, *, required: bool = False, align: bool = False,
                         choice: bool = True) -> Any:
    """``--detector`` and how it runs: its score threshold, the face chosen, the input size / largest side, and the
    no-face policy (:mod:`facesphere.infer.crops`). ``align``: ``data align``'s spelling (``--score-threshold`` and
    ``--input-size`` accepted as aliases, no ``--detector`` and no ``--no-face``: align declares its own).
    ``choice=False``: no ``--choose`` / ``--no-face``. Returns the argument group."""
    group = parser.add_argument_group("face detection")
    if not align:
        group.add_argument("--detector", type=Path, default=None, required=required, metavar="WEIGHTS",
                           help="SCRFD or YuNet ONNX weights, or an MTCNN folder (pnet/rnet/onet.onnx): detect and "
                                "align faces in photos that are not aligned crops")
    group.add_argument("--det-threshold", *(("--score-threshold",) if align else ()), dest="det_threshold",
                       type=float, default=None, metavar="T",
                       help="the detector's score threshold (default: SCRFD 0.5, YuNet 0.6, MTCNN O-Net 0.7)")
    group.add_argument("--det-max-side", dest="det_max_side", type=_positive_int, default=None, metavar="PX",
                       help=f"shrink photos whose longer side exceeds PX before detecting (default {DEFAULT_MAX_SIDE}; "
                            "0: detect at full size); boxes are mapped back to the photo")
    group.add_argument("--det-input-size", *(("--input-size",) if align else ()), dest="det_input_size", type=int,
                       default=None, metavar="PX", help="SCRFD's network input, a multiple of 32 (default 640)")
    if choice:
        group.add_argument("--choose", choices=CHOOSE_RULES, default="largest",
                           help="which face of a photo with several: largest (default), central, score")
    if choice and not align:
        group.add_argument("--no-face", dest="no_face", choices=NO_FACE_POLICIES, default=None,
                           help=NO_FACE_HELP + " (default: crop for eval, skip elsewhere; fail without a detector)")
    return group


def detector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`facesphere.infer.detectors.build_detector` the detector options gave."""
    options: dict[str, Any] = {}
    if getattr(args, "det_threshold", None) is not None:
        options["score_threshold"] = args.det_threshold
    if getattr(args, "det_max_side", None) is not None:
        options["max_side"] = args.det_max_side or None
    if getattr(args, "det_input_size", None) is not None:
        options["input_size"] = args.det_input_size
    return options


def add_threshold_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--threshold`` / ``--far``: override the decision threshold the model carries."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, default=None, metavar="T",
                       help=f"{what} at cosine >= T (default: the threshold the model carries, see docs/inference.md)")
    group.add_argument("--far", type=float, default=None, metavar="F",
                       help="use the model's threshold at false accept rate F (e.g. 1e-3): recorded for known "
                            "models, calibrated on a run's validation set")


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


def check_detector_args(args: argparse.Namespace) -> None:
    """Detector options without ``--detector`` are a mistake worth a clear message."""
    if getattr(args, "detector", None) is None and detector_options(args):
        raise InvalidOptionError("--det-threshold / --det-max-side / --det-input-size need --detector WEIGHTS")


def open_recognizer(args: argparse.Namespace, model: Any, *, decide: bool = False) -> FaceRecognizer:
    """A recogniser from the parsed model, detector and (with ``decide``) threshold options."""
    check_detector_args(args)
    recognizer = FaceRecognizer.from_path(model, detector=getattr(args, "detector", None), flip=args.flip,
                                          choose=getattr(args, "choose", "largest"),
                                          no_face=getattr(args, "no_face", None),
                                          detector_options=detector_options(args), **model_options(args))
    recognizer.batch_size = args.batch_size
    if decide:
        set_decision_threshold(args, recognizer, model)
    return recognizer


def set_decision_threshold(args: argparse.Namespace, recognizer: FaceRecognizer, model: Any) -> None:
    """``--threshold`` / ``--far`` (or the model's own threshold) on ``recognizer``; a FAR no record holds is
    calibrated on the model's validation set, said on stderr."""
    far = getattr(args, "far", None)
    if far is not None and not 0.0 < far < 1.0:
        raise InvalidOptionError(f"--far must be in (0, 1), got {far}")
    if far is not None and not recognizer.threshold_info.at_far.get(f"{far:.0e}"):
        print(f"calibrating the threshold at FAR {far:g} on the model's validation set …", file=sys.stderr)
    recognizer.threshold_info = decision_threshold(model, recognizer.embedder, threshold=getattr(args, "threshold",
                                                                                                 None),
                                                   far=far, flip=recognizer.flip, batch_size=recognizer.batch_size)


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
