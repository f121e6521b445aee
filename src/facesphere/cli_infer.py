"""`facesphere data align`, `embed`, `verify`, `gallery`, `export`: argument parsing only (the work is done by
library functions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(commands: Any, data_commands: Any) -> None:
    """Add this area's sub-commands to the top-level ``commands`` and the ``data`` sub-command group."""
    _register_embed_verify_export(commands)
    _register_gallery(commands)
    _register_data_align(data_commands)


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
                           help="SCRFD or YuNet ONNX weights, or an MTCNN folder (pnet/rnet/onet.onnx): detect and "
                                "align faces in unaligned photos")


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


def load_check_images(paths: list[Path]) -> Any:
    """Aligned crops for the export check, as one uint8 RGB ``(N, H, W, 3)`` array; every crop must share a size."""
    import numpy as np

    from .data.image import read_image
    from .errors import DataError

    images = [read_image(path) for path in paths]
    sizes = {image.shape[:2] for image in images}
    if len(sizes) > 1:
        raise DataError(f"--check-images: aligned crops of one size expected, found sizes {sorted(sizes)} "
                        f"(e.g. {paths[0]} is {images[0].shape[1]}x{images[0].shape[0]})")
    return np.stack(images)


def _cmd_export(args: argparse.Namespace) -> int:
    from .infer.export import export_onnx

    check_images = None
    if args.check_count < 1:
        from .errors import InvalidOptionError

        raise InvalidOptionError(f"--check-count must be at least 1, got {args.check_count}")
    if args.check_images:
        check_images = load_check_images(expand_images(args.check_images)[:args.check_count])
    report = export_onnx(args.model, args.onnx, opset=args.opset, exporter=args.exporter, arch=args.arch,
                         input_color=args.input_color, input_mean=args.input_mean, input_std=args.input_std,
                         check_images=check_images)
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
    p.add_argument("--check-images", nargs="+", default=None, metavar="PATH",
                   help="also compare PyTorch and onnxruntime on these aligned crops (files and / or folders)")
    p.add_argument("--check-count", type=int, default=32, help="at most this many --check-images (default 32)")
    p.set_defaults(func=_cmd_export)


# ------------------------------------------------------------------------------------------------------------------
# data align


def _parse_template(text: str) -> Any:
    """``arcface`` / ``sphereface`` / ``S`` / ``HxW`` -> a template for :func:`facesphere.data.align.get_template`."""
    value = text.strip().lower()
    if value in ("arcface", "sphereface"):
        return value
    try:
        if "x" in value:
            height, width = (int(v) for v in value.split("x"))
            return (height, width)
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected arcface, sphereface, a size S or HxW, got {text!r}") from None


def _cmd_data_align(args: argparse.Namespace) -> int:
    from .infer.align_folder import align_folder

    options: dict[str, Any] = {}
    if args.input_size is not None:
        options["input_size"] = args.input_size
    if args.score_threshold is not None:
        options["score_threshold"] = args.score_threshold
    report = align_folder(args.src, args.dst, args.detector, landmarks=args.landmarks, template=args.template,
                          choose=args.choose, min_score=args.min_score, image_format=args.format,
                          progress=not args.quiet, detector_options=options)
    print(report.format_table())
    return 0


def _register_data_align(data_commands: Any) -> None:
    p = data_commands.add_parser(
        "align", help="detect and align every face photo in a folder to a 5-point template (METHODS §9)",
        description="Align every image under SRC into DST (same relative paths): the largest (or most central) "
        "face of each photo, found by an SCRFD / YuNet / MTCNN ONNX detector or read from a landmarks file, warped to "
        "the ArcFace 112x112 or SphereFace 112x96 template. Images without a face are listed in DST/align_report.json; "
        "existing outputs are skipped, so an interrupted run resumes.",
    )
    p.add_argument("src", type=Path, help="folder of photos (searched recursively)")
    p.add_argument("dst", type=Path, help="output folder (same relative paths)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--detector", type=Path, metavar="WEIGHTS",
                        help="SCRFD (5 keypoints) or YuNet ONNX weights, or an MTCNN folder holding pnet.onnx, "
                        "rnet.onnx, onet.onnx")
    source.add_argument("--landmarks", type=Path, metavar="FILE",
                        help="text file, one line per image: relative/path x1 y1 ... x5 y5 [score]")
    p.add_argument("--template", type=_parse_template, default="arcface",
                   help="arcface (112x112, default), sphereface (112x96), or a size S / HxW")
    p.add_argument("--choose", choices=("largest", "central", "score"), default="largest",
                   help="which face of a photo with several (default: largest)")
    p.add_argument("--min-score", type=float, default=None, help="ignore faces scored below this")
    p.add_argument("--score-threshold", type=float, default=None, help="the detector's own score threshold")
    p.add_argument("--input-size", type=int, default=None,
                   help="SCRFD network input (multiple of 32; default 640)")
    p.add_argument("--format", choices=("same", "jpg", "png"), default="same",
                   help="output format: same (JPEG stays JPEG, others PNG), jpg or png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_align)


# ------------------------------------------------------------------------------------------------------------------
# gallery


def _embed_paths(recognizer: Any, paths: list[Path], quiet: bool) -> tuple[Any, list[Path], list[Path]]:
    import numpy as np
    from tqdm import tqdm

    from .infer.recognizer import NoFaceError

    rows, kept, missing = [], [], []
    for path in tqdm(paths, desc="embed", unit="img", disable=quiet or len(paths) < 2):
        try:
            rows.append(recognizer.embed(path)[0])
            kept.append(path)
        except NoFaceError:
            missing.append(path)
    return (np.stack(rows) if rows else None), kept, missing


def _cmd_gallery_add(args: argparse.Namespace) -> int:
    from .errors import DataError
    from .infer.gallery import Gallery, model_fingerprint

    recognizer = open_recognizer(args, args.model)
    paths = expand_images(args.images)
    features, kept, missing = _embed_paths(recognizer, paths, args.quiet)
    for path in missing:
        print(f"no face found: {path}")
    if features is None:
        raise DataError("no face found in any of the images: nothing added")
    names = [args.identity] * len(kept) if args.identity else [p.parent.name for p in kept]
    fingerprint = model_fingerprint(recognizer.embedder, flip=recognizer.flip)
    with Gallery.open_or_create(args.gallery, dim=features.shape[1], index=args.index, model=fingerprint) as gallery:
        gallery.add(features, names, paths=[str(p.resolve()) for p in kept], model=fingerprint)
        identities = gallery.identities()
        print(f"added {len(kept)} face(s); gallery {args.gallery}: {len(gallery)} entries, "
              f"{len(identities)} identities")
    return 0


def _cmd_gallery_search(args: argparse.Namespace) -> int:
    from .infer.gallery import Gallery, model_fingerprint

    recognizer = open_recognizer(args, args.model)
    paths = expand_images(args.images)
    features, kept, missing = _embed_paths(recognizer, paths, True)
    results = [{"image": str(p), "matches": [], "error": "no face found"} for p in missing]
    if features is not None:
        fingerprint = model_fingerprint(recognizer.embedder, flip=recognizer.flip)
        with Gallery.open(args.gallery, readonly=True) as gallery:
            hits = gallery.search(features, k=args.k, per_identity=not args.entries, threshold=args.threshold,
                                  model=fingerprint)
        for path, matches in zip(kept, hits):
            results.append({"image": str(path), "matches": [
                {"identity": m.identity, "score": round(float(m.score), 6), "path": m.path, "id": int(m.id)}
                for m in matches]})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            found = ", ".join(f"{m['identity']} ({m['score']:.3f})" for m in result["matches"])
            print(f"{result['image']}: {found or result.get('error', 'no match')}")
    return 0


def _cmd_gallery_info(args: argparse.Namespace) -> int:
    from .infer.gallery import Gallery

    with Gallery.open(args.gallery, readonly=True) as gallery:
        print(json.dumps(gallery.info(), indent=2, default=str))
    return 0


def _cmd_gallery_remove(args: argparse.Namespace) -> int:
    from .infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        removed = gallery.remove(identity=args.identity)
        print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} of {args.identity!r}; {len(gallery)} left")
    return 0


def _register_gallery(commands: Any) -> None:
    gallery = commands.add_parser("gallery", help="a persistent face gallery on disk: add, search, info, remove")
    sub = gallery.add_subparsers(dest="gallery_command", metavar="GALLERY_COMMAND", required=True)
    p = sub.add_parser("add", help="embed images and add them (identity: --identity, else each image's folder name)")
    p.add_argument("gallery", type=Path, help="gallery directory (created if absent)")
    p.add_argument("images", nargs="+", help="image files and / or folders")
    p.add_argument("--model", required=True)
    p.add_argument("--identity", default=None, help="one identity for every image (default: the parent folder name)")
    p.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat", help="index kind of a new gallery")
    p.add_argument("--quiet", action="store_true")
    add_model_options(p)
    p.set_defaults(func=_cmd_gallery_add)
    p = sub.add_parser("search", help="the k best gallery identities for each query image")
    p.add_argument("gallery", type=Path)
    p.add_argument("images", nargs="+")
    p.add_argument("--model", required=True)
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--threshold", type=float, default=None, help="only matches with cosine >= THRESHOLD")
    p.add_argument("--entries", action="store_true", help="top-k entries instead of the best entry per identity")
    p.add_argument("--json", action="store_true")
    add_model_options(p)
    p.set_defaults(func=_cmd_gallery_search)
    p = sub.add_parser("info", help="size, identities, index kind and model of a gallery")
    p.add_argument("gallery", type=Path)
    p.set_defaults(func=_cmd_gallery_info)
    p = sub.add_parser("remove", help="remove every entry of an identity")
    p.add_argument("gallery", type=Path)
    p.add_argument("identity")
    p.set_defaults(func=_cmd_gallery_remove)
