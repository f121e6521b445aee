"""``facesphere embed``, ``verify`` and ``export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.image import read_image
from ..errors import DataError, InvalidOptionError
from ..infer.export import export_onnx
from .common import add_model_options, expand_images, model_options, open_recognizer


def _cmd_embed(args: argparse.Namespace) -> int:
    recognizer = open_recognizer(args, args.model)
    result = recognizer.embed_files(expand_images(args.images), progress=not args.quiet)
    for path, message in result.unreadable:
        print(f"skipped unreadable image: {message}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result.features)
    index = out.with_suffix(".json")
    index.write_text(json.dumps({"model": str(args.model), "flip": args.flip, "shape": list(result.features.shape),
                                 "images": [str(p) for p in result.paths],
                                 "no_face": [str(p) for p in result.no_face],
                                 "unreadable": [str(p) for p, _ in result.unreadable]}, indent=2))
    print(f"{len(result.paths)} embeddings ({result.features.shape[1]}-d, L2-normalised) -> {out}; image list -> "
          f"{index}" + (f"; {len(result.no_face)} image(s) without a face (listed there)" if result.no_face else ""))
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


def load_check_images(paths: list[Path]) -> Any:
    """Aligned crops for the export check, as one uint8 RGB ``(N, H, W, 3)`` array; every crop must share a size."""
    images = [read_image(path) for path in paths]
    sizes = {image.shape[:2] for image in images}
    if len(sizes) > 1:
        raise DataError(f"--check-images: aligned crops of one size expected, found sizes {sorted(sizes)} "
                        f"(e.g. {paths[0]} is {images[0].shape[1]}x{images[0].shape[0]})")
    return np.stack(images)


def _cmd_export(args: argparse.Namespace) -> int:
    check_images = None
    if args.check_count < 1:
        raise InvalidOptionError(f"--check-count must be at least 1, got {args.check_count}")
    if args.check_images:
        check_images = load_check_images(expand_images(args.check_images)[:args.check_count])
    report = export_onnx(args.model, args.onnx, opset=args.opset, exporter=args.exporter, check_images=check_images,
                         **model_options(args))
    print(json.dumps(report, indent=2))
    return 0


def register(commands: Any) -> None:
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
    add_model_options(p, detector=False, flip=False, runtime=False)
    p.add_argument("--check-images", nargs="+", default=None, metavar="PATH",
                   help="also compare PyTorch and onnxruntime on these aligned crops (files and / or folders)")
    p.add_argument("--check-count", type=int, default=32, help="at most this many --check-images (default 32)")
    p.set_defaults(func=_cmd_export)


