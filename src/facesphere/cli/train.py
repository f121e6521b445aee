"""``facesphere list``, ``facesphere train`` and ``facesphere config show``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from ..backbones import list_backbones
from ..data.specs import PAIR_KINDS, parse_data_spec
from ..errors import DataError, FaceSphereError, InvalidOptionError, TrainingInterrupted
from ..heads import HEADS, head_options
from ..run.config import Config, config_to_dict, load_config, save_config
from ..run.directory import CONFIG_NAME
from ..train.loop import train
from ..train.rundir import RESUME_SAFE, resume_config


def _cmd_list(args: argparse.Namespace) -> int:
    print("heads:")
    for name in HEADS.names():
        options = ", ".join(f"{k}={v!r}" for k, v in head_options(name).items())
        print(f"  {name:<18} {HEADS[name].summary}\n  {'':<18} options: {options or '(none)'}")
    print("backbones:")
    print("  " + ", ".join(list_backbones()))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.resume is not None and args.overwrite:
        raise InvalidOptionError("--resume continues a run and --overwrite starts one over: give one of them")
    if args.resume is not None:
        if args.config is not None:
            raise InvalidOptionError(f"--resume {args.resume} uses the run's own {CONFIG_NAME}; --config would be "
                                     f"ignored: give the changes a resumed run allows as overrides "
                                     f"({', '.join('--' + key for key in RESUME_SAFE)})")
        config, changes = resume_config(args.resume, args.overrides)
        if changes:  # applied and recorded in the run's config.yaml, which the resumed run reads
            save_config(config, args.resume / CONFIG_NAME)
            print(f"facesphere: resuming {args.resume} with {'; '.join(changes)} (recorded in {CONFIG_NAME})",
                  file=sys.stderr)
        run_config = None
    else:
        config = run_config = load_config(args.config, args.overrides)
        if args.quiet:
            run_config.train.quiet = True
    _check_val_sets(config, args.config)
    try:
        summary = train(run_config, out=args.out, resume=args.resume, overwrite=args.overwrite,
                        progress=False if args.quiet else None)
    except TrainingInterrupted as stopped:  # a checkpoint was saved: say where, and exit 128 + the signal
        print(f"facesphere: {stopped}", file=sys.stderr)
        return stopped.exit_code
    if "table" in summary:
        print(summary["table"])
        print(f"run directory: {summary['run_dir']}")
        print(_tensorboard_line(Path(summary["run_dir"])))
    return 0


def _tensorboard_line(run_dir: Path) -> str:
    """Where the TensorBoard logs went, or how to get them."""
    logs = run_dir / "tensorboard"
    if logs.is_dir():
        return f"TensorBoard logs: {logs} (view with: tensorboard --logdir {logs})"
    return "TensorBoard logs: none (pip install tensorboard enables them); metrics.jsonl and curves.png hold the curves"


def _check_val_sets(config: Config, source: Path | None) -> None:
    """Every ``data.val`` set must be there before any work: a recipe's validation files may not be on this machine,
    and the error names the key that replaces them."""
    for spec in config.data.val:
        try:
            parse_data_spec(spec, PAIR_KINDS)
        except FaceSphereError as error:
            where = f" (from {source})" if source is not None else ""
            raise DataError(f"data.val{where}: {error}; give your own validation pair sets with --data.val, e.g. "
                            "--data.val '[bin:/path/lfw.bin]' or '[pairs:FILE]', or --data.val '[]' for none") \
                from None


def _cmd_config_show(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
    return 0


def register(commands: Any) -> None:
    p = commands.add_parser("list", help="list the registered heads (with their options) and backbones")
    p.set_defaults(func=_cmd_list)

    p = commands.add_parser(
        "train", help="train a backbone + head (default: SFNet + SphereFace-R on built-in synthetic identities)",
        description="Train. Any config field can be overridden with --SECTION.KEY VALUE, e.g. --head.name arcface "
        "--head.m 0.5 --optim.lr 0.1 --train.steps 2000 (sections: data, model, head, optim, train; head and model "
        "options such as --head.s or --model.batchnorm are validated against the chosen head / backbone). "
        "--out must be a new or empty directory (else --resume it or --overwrite it). Ctrl-C or SIGTERM finish the "
        "current step, save a checkpoint, print the --resume command and exit with 130 / 143 (a second one stops at "
        "once, unsaved).",
    )
    p.add_argument("--config", type=Path, default=None, help="a YAML recipe (overrides of the typed defaults)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: a new folder under runs/)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue a run from its last checkpoint (e.g. one stopped with Ctrl-C or SIGTERM, which "
                        "save a checkpoint and print this command)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out name a directory that is not empty: the run files there (config, checkpoints, "
                        "best.pt, metrics) are deleted when the new run starts; without it such a directory is "
                        "refused")
    p.add_argument("--quiet", action="store_true", help="no progress bar; log lines only")
    p.set_defaults(func=_cmd_train, accepts_overrides=True)

    config = commands.add_parser("config", help="show the resolved training config")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    p = config_commands.add_parser(
        "show", help="print the resolved config a run would use (YAML: every default spelled out)",
        description="Print the config 'facesphere train' would use with the same --config and --SECTION.KEY VALUE "
        "overrides, as the YAML a run writes to its config.yaml.")
    p.add_argument("--config", type=Path, default=None, help="a YAML recipe (overrides of the typed defaults)")
    p.set_defaults(func=_cmd_config_show, accepts_overrides=True)
