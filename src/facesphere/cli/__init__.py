"""``facesphere <command>``: argument parsing only; every command calls library functions.

One module per command group: :mod:`.train` (``list``, ``train``, ``config show``), :mod:`.data` (``data synth / pack
/ unpack / verify / align``), :mod:`.evaluate` (``eval``), :mod:`.infer` (``embed``, ``verify``, ``export``),
:mod:`.detect` (``detect``), :mod:`.gallery` (``gallery add / search / list / info / remove``) and :mod:`.tools`
(``clean``, ``invert``); the options that say how to open a recogniser, run a face detector and decide at a threshold
are declared once, in :mod:`.common`. User errors (:class:`facesphere.FaceSphereError`) are printed without a
traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, Callable, Sequence

from ..errors import FaceSphereError, FaceSphereWarning
from ..version import __version__
from . import data, detect, evaluate, gallery, infer, tools, train

#: the command groups, in the order ``facesphere --help`` lists them
GROUPS = (train, data, evaluate, infer, detect, gallery, tools)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facesphere", description="Hyperspherical face recognition toolkit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser


def _format_warning(message: Any, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    if issubclass(category, FaceSphereWarning):
        return f"facesphere: warning: {message}\n"
    return _default_format(message, category, filename, lineno, line)


_default_format = warnings.formatwarning


def main(argv: Sequence[str] | None = None) -> int:
    previous = warnings.formatwarning
    warnings.formatwarning = _format_warning  # facesphere's own warnings read "facesphere: warning: ..."
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = previous


def _main(argv: Sequence[str] | None) -> int:
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
