"""`facesphere data align`, `embed`, `verify`, `gallery`, `export`: argument parsing only (the work is done by library functions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(commands: Any, data_commands: Any) -> None:
    """Add this area's sub-commands to the top-level ``commands`` and the ``data`` sub-command group."""
    _register_embed_verify_export(commands)


# ------------------------------------------------------------------------------------------------------------------
# shared options


def add_model_options(parser: argparse.ArgumentParser, *, detector: bool = True) -> None:
    """The options that say how to open a recogniser (and a face detector)."""
    group = parser.add_argument_group("model")
    group.add_argument("--arch", default=None, help="backbone name for an arcface_torch backbone.pth (e.g. iresnet50)")
    group.add_argument("--input-color", choices=("rgb", "bgr"), default=None,
                       help="colour order the model expects (ONNX models; default: the model's own or rgb)")
    group.add_argument("--input-mean", type=float, default=None, help="pixels are fed as (p - MEAN) / STD")
    group.add_argument("--input-std", type=float, default=None)
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    group.add_argument("--fp16", action="store_true", help="half-precision autocast (CUDA only)")
    group.add_argument("--flip", choices=("sum", "concat", "none"), default="sum",
                       help="test-time flip fusion (default: sum, as insightface / opensphere)")
    group.add_argument("--batch-size", type=int, default=32)
    if detector:
        group.add_argument("--detector", type=Path, default=None, metavar="WEIGHTS",
                           help="SCRFD or YuNet ONNX weights: detect and align faces in unaligned photos")


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"arch": args.arch, "input_color": args.input_color, "input_mean": args.input_mean,
            "input_std": args.input_std, "device": args.device, "fp16": args.fp16}


def open_recognizer(args: argparse.Namespace, model: Any, *, threshold: float | None = None) -> Any:
    from .infer.recognizer import FaceRecognizer

    extra = {} if threshold is None else {"threshold": threshold}
    recognizer = FaceRecognizer.from_path(model, detector=getattr(args, "detector", None), flip=args.flip,
                                          **extra, **model_options(args))
    recognizer.batch_size = args.batch_size
    return recognizer


def expand_images(items: list[str]) -> list[Path]:
    """Image files given directly, and every image under the directories given (sorted)."""
    from .data.image import is_image_file
    from .errors import DataError

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


# ------------------------------------------------------------------------------------------------------------------
# embed / verify / export


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from .infer.recognizer import NoFaceError

    recognizer = open_recognizer(args, args.model)
    paths = expand_images(args.images)
    rows: list[np.ndarray] = []
    kept: list[str] = []
    missing: list[str] = []
    for path in tqdm(paths, desc="embed", unit="img", disable=args.quiet or len(paths) < 2):
        try:
            rows.append(recognizer.embed(path)[0])
            kept.append(str(path))
        except NoFaceError:
            missing.append(str(path))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    features = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    np.save(out, features)
    index = out.with_suffix(".json")
    index.write_text(json.dumps({"model": str(args.model), "flip": args.flip, "shape": list(features.shape),
                                 "images": kept, "no_face": missing}, indent=2))
    print(f"{len(kept)} embeddings ({features.shape[1] if rows else 0}-d, L2-normalised) -> {out}; "
          f"image list -> {index}" + (f"; {len(missing)} image(s) without a face (listed there)" if missing else ""))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    recognizer = open_recognizer(args, args.model, threshold=args.threshold)
    result = recognizer.verify(args.image1, args.image2)
    verdict = "same person" if result.same else "different people"
    print(json.dumps({"image1": str(args.image1), "image2": str(args.image2), "score": round(result.score, 6),
                      "threshold": result.threshold, "same": result.same}))
    if not args.quiet:
        print(f"cosine {result.score:.4f} {'>=' if result.same else '<'} threshold {result.threshold:g}: {verdict}")
    return 0 if result.same else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from .infer.export import export_onnx

    report = export_onnx(args.model, args.onnx, opset=args.opset, exporter=args.exporter, arch=args.arch,
                         input_color=args.input_color, input_mean=args.input_mean, input_std=args.input_std)
    print(json.dumps(report, indent=2))
    return 0


def _register_embed_verify_export(commands: Any) -> None:
    p = commands.add_parser("embed", help="embed face images (aligned crops, or photos with --detector) into a .npy")
    p.add_argument("model", help="run directory, checkpoint, backbone.pth (with --arch) or .onnx recogniser")
    p.add_argument("images", nargs="+", help="image files and / or folders (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="output .npy (N, D); the image list goes beside it")
    p.add_argument("--quiet", action="store_true")
    add_model_options(p)
    p.set_defaults(func=_cmd_embed)

    p = commands.add_parser("verify", help="are two face images the same person? (exit 0: same, 1: different)")
    p.add_argument("image1", type=Path)
    p.add_argument("image2", type=Path)
    p.add_argument("--model", required=True, help="run directory, checkpoint, backbone.pth or .onnx")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine decision threshold (default 0.3; use the one `facesphere eval` reports)")
    p.add_argument("--quiet", action="store_true")
    add_model_options(p)
    p.set_defaults(func=_cmd_verify)

    p = commands.add_parser("export", help="export a model to ONNX (dynamic batch) and check it in onnxruntime")
    p.add_argument("model", help="run directory, checkpoint, or backbone.pth (with --arch)")
    p.add_argument("--onnx", type=Path, required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    p.add_argument("--arch", default=None)
    p.add_argument("--input-color", choices=("rgb", "bgr"), default=None)
    p.add_argument("--input-mean", type=float, default=None)
    p.add_argument("--input-std", type=float, default=None)
    p.set_defaults(func=_cmd_export)
