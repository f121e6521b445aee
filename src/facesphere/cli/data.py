"""``facesphere data``: ``synth``, ``pack``, ``unpack``, ``verify``, ``align``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..data.recordio import pack_folder, unpack
from ..data.synthetic import write_synthetic_folder
from ..data.verify import verify_dataset
from ..infer.align_folder import ALIGN_NO_FACE, JPEG_QUALITY, align_folder
from .common import add_detector_options, detector_options


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
