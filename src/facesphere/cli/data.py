"""``facesphere data``: ``synth``, ``pack``, ``unpack``, ``verify``, ``align``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..data.recordio import pack_folder, unpack
from ..data.split import make_heldout_split
from ..data.synthetic import write_synthetic_folder
from ..data.verify import verify_dataset
from ..infer.align_folder import ALIGN_NO_FACE, JPEG_QUALITY, align_folder
from ..infer.detectors import build_detector
from ..infer.embedders import load_embedder
from ..workflows.overlap import find_overlap, format_summary
from .common import add_detector_options, add_model_options, check_detector_args, detector_options, model_options


def _cmd_data_synth(args: argparse.Namespace) -> int:
    summary = write_synthetic_folder(
        args.out, args.identities, args.images_per_identity, seed=args.seed, difficulty=args.difficulty,
        label_noise=args.label_noise, progress=not args.quiet,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_data_pack(args: argparse.Namespace) -> int:
    summary = pack_folder(args.src, args.out_prefix, progress=not args.quiet)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_data_unpack(args: argparse.Namespace) -> int:
    summary = unpack(args.prefix, args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_data_verify(args: argparse.Namespace) -> int:
    size = tuple(args.expected_size) if args.expected_size else None
    report = verify_dataset(args.path, expected_size=size, progress=not args.quiet)
    print(report.format_table())
    return 0 if report.ok else 1


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
    report = align_folder(args.src, args.dst, args.detector, landmarks=args.landmarks, template=args.template,
                          choose=args.choose, min_score=args.min_score, image_format=args.format,
                          progress=not args.quiet, detector_options=detector_options(args), no_face=args.no_face)
    print(report.format_table())
    return 0


def _cmd_data_overlap(args: argparse.Namespace) -> int:
    check_detector_args(args)
    embedder = load_embedder(args.model, **model_options(args))
    detector = build_detector(args.detector, **detector_options(args)) if args.detector else None
    threshold = args.threshold if args.threshold == "auto" else float(args.threshold)
    report = find_overlap(embedder, args.train, args.against, args.out, threshold=threshold, null_rate=args.null_rate,
                          grayscale=args.grayscale, detector=detector, flip=args.flip, batch_size=args.batch_size,
                          sheet_pairs=args.sheet, progress=not args.quiet, model_name=str(args.model))
    print(format_summary(report, args.out))
    return 0


def _threshold(text: str) -> str:
    if text == "auto":
        return text
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a cosine, got {text!r}") from None
    return text


def _cmd_data_split(args: argparse.Namespace) -> int:
    summary = make_heldout_split(args.train, args.out, exclude=args.exclude or [], fraction=args.fraction,
                                 group=args.group, folds=args.folds, pairs_per_fold=args.pairs_per_fold,
                                 same_group=args.same_group, seed=args.seed)
    print(json.dumps({key: summary[key] for key in ("identities", "heldout_groups", "heldout_identities",
                                                      "heldout_images", "training_identities", "training_images")},
                     indent=2))
    print(f"pairs: {args.out / 'heldout_pairs.txt'} (use --data.val pairs:...); held-out identities: "
          f"{args.out / 'heldout_identities.txt'} (use --data.exclude ...)")
    return 0


def register(commands: Any) -> None:
    data = commands.add_parser("data", help="datasets: synth, pack, unpack, verify, align")
    data_commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_commands.add_parser("synth", help="write synthetic identities as an image folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--identities", type=int, default=100)
    p.add_argument("--images-per-identity", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=float, default=1.0)
    p.add_argument("--label-noise", type=float, default=0.0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_data_synth)
    p = data_commands.add_parser("pack", help="pack an image folder into InsightFace RecordIO (.rec/.idx/property)")
    p.add_argument("src", type=Path)
    p.add_argument("out_prefix", type=Path)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_data_pack)
    p = data_commands.add_parser("unpack", help="unpack RecordIO into one folder per class id")
    p.add_argument("prefix", type=Path, metavar="PREFIX_OR_REC")
    p.add_argument("out", type=Path, metavar="OUT_FOLDER")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_data_unpack)
    p = data_commands.add_parser("verify", help="scan a dataset and report every bad item")
    p.add_argument("path", help="folder, list file, .rec / prefix, .bin, or LFW folder with pairs.txt")
    p.add_argument("--expected-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_data_verify)
    _register_align(data_commands)

    p = data_commands.add_parser(
        "overlap", help="find training identities that are also in a test set (to exclude them from training)",
        description="Embed both sets with MODEL, compare identity mean embeddings, and list every training identity "
        "whose best cosine to a test identity passes the threshold (default: measured on the test set, see "
        "docs/data.md). Writes OUT/overlap.txt (names; train with --data.exclude OUT/overlap.txt), report.json, "
        "matches.tsv, contact_sheet.png and scores.png.")
    p.add_argument("train", metavar="TRAIN", help="folder:DIR, list:FILE, rec:PREFIX or a bare path")
    p.add_argument("--against", required=True, metavar="TEST", help="the test set: the same kinds, or lfw:DIR")
    p.add_argument("--model", required=True, help="run directory, checkpoint, backbone.pth (with --arch) or .onnx")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--threshold", type=_threshold, default="auto",
                   help="cosine above which two identity means are one person (default auto: measured)")
    p.add_argument("--null-rate", type=float, default=0.05,
                   help="auto threshold: the share of non-matching identities allowed above it (default 0.05)")
    p.add_argument("--grayscale", action="store_true", help="compare grayscale versions of both sets (grey test sets)")
    p.add_argument("--sheet", type=int, default=24, help="closest pairs shown in contact_sheet.png (0: none)")
    p.add_argument("--quiet", action="store_true")
    add_model_options(p, batch_size=64, face_choice=False)
    p.set_defaults(func=_cmd_data_overlap)

    p = data_commands.add_parser(
        "split", help="hold out whole identities (or groups, e.g. families) and make verification pairs from them",
        description="Write OUT/heldout_pairs.txt (10 folds that no identity or group crosses; validate with "
        "--data.val pairs:OUT/heldout_pairs.txt) and OUT/heldout_identities.txt (train with --data.exclude on it).")
    p.add_argument("train", metavar="TRAIN", help="folder:DIR or list:FILE (pairs name image files)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--exclude", action="append", default=None, metavar="FILE",
                   help="identity names to leave out entirely, e.g. data overlap's overlap.txt (repeatable)")
    p.add_argument("--fraction", type=float, default=0.1, help="share of identities with 2+ images held out")
    p.add_argument("--group", default=None, metavar="REGEX",
                   help=r"hold out whole groups: a regex whose first group names an identity's group, e.g. '^(F\d+)_'")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--pairs-per-fold", type=int, default=300, help="pairs per fold, half genuine (default 300)")
    p.add_argument("--same-group", type=float, default=0.5,
                   help="with --group: share of impostor pairs between members of one group (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_data_split)


def _register_align(data_commands: Any) -> None:
    p = data_commands.add_parser(
        "align", help="detect and align every face photo in a folder to a 5-point template",
        description="Align every image under SRC into DST (same relative paths): the largest (or most central) "
        "face of each photo, found by an SCRFD / YuNet / MTCNN ONNX detector or read from a landmarks file, warped to "
        "the ArcFace 112x112 or SphereFace 112x96 template. Images without a face are listed in DST/align_report.json "
        "and DST/align_dropped.txt (which eval points to when a pair's image is missing); an LFW-style pairs.txt (in "
        "SRC, or beside SRC when it is an images/ folder) is copied beside the result, so eval --data lfw: runs on it "
        f"directly. JPEG inputs are written as JPEG at quality {JPEG_QUALITY} (--format png: lossless). Existing "
        "outputs are skipped, so an interrupted run resumes.",
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
    p.add_argument("--min-score", type=float, default=None, help="ignore faces scored below this")
    add_detector_options(p, align=True)
    p.add_argument("--no-face", dest="no_face", choices=ALIGN_NO_FACE, default="skip",
                   help="a photo without a face: skip (default: left out, listed in DST/align_dropped.txt), or write "
                        "its central crop / the whole image resized (for faces that are already cropped)")
    p.add_argument("--format", choices=("same", "jpg", "png"), default="same",
                   help=f"output format: same (JPEG stays JPEG at quality {JPEG_QUALITY}, others PNG), jpg, or png "
                        "(lossless: the JPEG round trip moves scores by ~0.003 against detecting inside eval)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_align)
