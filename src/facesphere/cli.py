"""``facesphere <command>``: argument parsing only; every command calls library functions.

User errors (:class:`facesphere.FaceSphereError`) are printed without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import FaceSphereError


def _cmd_list(args: argparse.Namespace) -> int:
    from .backbones import list_backbones
    from .heads import HEADS, head_options

    print("heads:")
    for name in HEADS.names():
        options = ", ".join(f"{k}={v!r}" for k, v in head_options(name).items())
        print(f"  {name:<18} {HEADS[name].summary}\n  {'':<18} options: {options or '(none)'}")
    print("backbones:")
    print("  " + ", ".join(list_backbones()))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train.config import load_config
    from .train.loop import train

    config = load_config(args.config, args.overrides)
    if args.quiet:
        config.train.quiet = True
    summary = train(config if args.resume is None or args.overrides else None, out=args.out, resume=args.resume)
    if "table" in summary:
        print(summary["table"])
        print(f"run directory: {summary['run_dir']}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import write_synthetic_folder

    summary = write_synthetic_folder(
        args.out, args.identities, args.images_per_identity, seed=args.seed, difficulty=args.difficulty,
        label_noise=args.label_noise, progress=not args.quiet,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_data_pack(args: argparse.Namespace) -> int:
    from .data.recordio import pack_folder

    summary = pack_folder(args.src, args.out_prefix, progress=not args.quiet)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_data_unpack(args: argparse.Namespace) -> int:
    from .data.recordio import unpack

    summary = unpack(args.prefix, args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_data_verify(args: argparse.Namespace) -> int:
    from .data.verify import verify_dataset

    size = tuple(args.expected_size) if args.expected_size else None
    report = verify_dataset(args.path, expected_size=size, progress=not args.quiet)
    print(report.format_table())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facesphere", description="Hyperspherical face recognition toolkit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("list", help="list the registered heads (with their options) and backbones")
    p.set_defaults(func=_cmd_list)

    p = commands.add_parser(
        "train", help="train a backbone + head (default: SFNet + SphereFace-R on built-in synthetic identities)",
        description="Train. Any config field can be overridden with --SECTION.KEY VALUE, e.g. --head.name arcface "
        "--head.m 0.5 --optim.lr 0.1 --train.steps 2000 (sections: data, model, head, optim, train; head and model "
        "options such as --head.s or --model.batchnorm are validated against the chosen head / backbone).",
    )
    p.add_argument("--config", type=Path, default=None, help="a YAML recipe (overrides of the typed defaults)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: a new folder under runs/)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar; log lines only")
    p.set_defaults(func=_cmd_train)

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

    # the evaluation, inference and ArcFace-extras commands live beside this file, one module per area
    from . import cli_eval, cli_infer, cli_tools

    for area in (cli_eval, cli_infer, cli_tools):
        area.register(commands, data_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "func", None) is _cmd_train:
        args.overrides = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except FaceSphereError as error:
        print(f"facesphere: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facesphere: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
