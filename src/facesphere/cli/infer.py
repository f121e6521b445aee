"""``facesphere embed``, ``verify`` and ``export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..data.image import read_image
from ..errors import DataError, InvalidOptionError
from ..infer.export import export_onnx
from .common import add_model_options, add_threshold_options, expand_images, model_options, open_recognizer


def _cmd_embed(args: argparse.Namespace) -> int:
    recognizer = open_recognizer(args, args.model)
    result = recognizer.embed_files(expand_images(args.images), progress=not args.quiet, all_faces=args.all_faces)
    report_skipped(result.unreadable, result.no_face, strict=args.strict)
    if not result.paths:
        raise DataError(f"nothing embedded: {len(result.no_face)} image(s) without a face, {len(result.unreadable)} "
                        "unreadable; nothing written")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result.features)
    index = out.with_suffix(".json")
    index.write_text(json.dumps({"model": str(args.model), "flip": args.flip, "shape": list(result.features.shape),
                                 "all_faces": args.all_faces,
                                 "images": [str(p) for p in result.paths],
                                 "faces": [{"image": str(p), **face.to_dict()}
                                           for p, face in zip(result.paths, result.faces)],
                                 "no_face": [str(p) for p in result.no_face],
                                 "unreadable": [str(p) for p, _ in result.unreadable]}, indent=2))
    skipped = len(result.no_face) + len(result.unreadable)
    print(f"{len(result.paths)} embeddings ({result.features.shape[1]}-d, L2-normalised) of "
          f"{result.files_added} image(s) -> {out}; image list -> {index}"
          + (f"; {skipped} image(s) skipped ({len(result.no_face)} without a face, {len(result.unreadable)} "
             "unreadable; listed there)" if skipped else ""))
    return 0


def report_skipped(unreadable: list[tuple[Path, str]], no_face: list[Path], *, strict: bool) -> None:
    """Name every skipped file on stderr; with ``strict`` any of them is an error (nothing is written)."""
    for _, message in unreadable:
        print(f"skipped unreadable image: {message}", file=sys.stderr)
    for path in no_face:
        print(f"skipped, no face found: {path}", file=sys.stderr)
    if strict and (unreadable or no_face):
        raise DataError(f"--strict: {len(unreadable)} unreadable image(s) and {len(no_face)} without a face "
                        "(named above); nothing written")


def _cmd_verify(args: argparse.Namespace) -> int:
    recognizer = open_recognizer(args, args.model, decide=True)
    result = recognizer.verify(args.image1, args.image2)
    info = result.info
    verdict = "same person" if result.same else "different people"
    print(json.dumps({"image1": str(args.image1), "image2": str(args.image2), "score": round(result.score, 6),
                      "threshold": round(result.threshold, 6), "same": result.same,
                      "far": None if info is None else info.far,
                      "threshold_rule": None if info is None else info.rule,
                      "threshold_source": None if info is None else info.source}))
    if info is not None and info.rule == "default":
        print(f"facesphere: warning: {info.describe()}", file=sys.stderr)
    if not args.quiet:
        decided = info.describe() if info else f"threshold {result.threshold:g}"
        print(f"cosine {result.score:.4f} {'>=' if result.same else '<'} {decided}: {verdict}")
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
    p.add_argument("--all-faces", action="store_true",
                   help="one row per face found (with --detector), each with its box in the .json")
    p.add_argument("--strict", action="store_true",
                   help="stop (writing nothing) if any image is unreadable or has no face; by default they are "
                        "skipped, named and counted")
    p.add_argument("--quiet", action="store_true")
    add_model_options(p)
    p.set_defaults(func=_cmd_embed)

    p = commands.add_parser("verify", help="are two face images the same person? (exit 0: same, 1: different)",
                            description="Cosine similarity of the faces in two images, decided at the threshold the "
                            "model carries (a run's validation threshold, an export's metadata, a known public "
                            "model's LFW measurement; else an uncalibrated 0.3, said so); the threshold used and its "
                            "FAR are printed. Needs onnxruntime / OpenCV for ONNX models and detectors: "
                            'pip install "facesphere[onnx]".')
    p.add_argument("image1", type=Path)
    p.add_argument("image2", type=Path)
    p.add_argument("--model", required=True, help="run directory, checkpoint, backbone.pth or .onnx")
    add_threshold_options(p, "same person")
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


