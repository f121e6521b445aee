"""``facesphere <command>``: argument parsing only; every command calls library functions.

One module per command group: :mod:`.train` (``list``, ``train``), :mod:`.data` (``data synth / pack / unpack /
verify / align``), :mod:`.evaluate` (``eval``), :mod:`.infer` (``embed``, ``verify``, ``export``), :mod:`.gallery`
(``gallery add / search / info / remove``) and :mod:`.tools` (``clean``, ``invert``); the options that say how to
open a recogniser are declared once, in :mod:`.common`. User errors (:class:`facesphere.FaceSphereError`) are printed
without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ..errors import FaceSphereError
from ..version import __version__
from . import data, evaluate, gallery, infer, tools, train

#: the command groups, in the order ``facesphere --help`` lists them
GROUPS = (train, data, evaluate, infer, gallery, tools)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facesphere", description="Hyperspherical face recognition toolkit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "accepts_overrides", False):
        args.overrides = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.version:
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


__all__ = ["main", "build_parser"]
