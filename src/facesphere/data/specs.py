"""One way to name a dataset: ``kind:path`` specs, used by training, validation, evaluation and ``data verify``.

=============  ==========================================================================  ========================
kind           what                                                                         used by
=============  ==========================================================================  ========================
``folder``     ``DIR/<identity>/<image>``                                                   train, verify, clean
``list``       a list file, ``path label`` per line (see :mod:`.listfile`)                  train, verify, clean
``rec``        InsightFace RecordIO ``PREFIX.rec/.idx`` (+ ``property``)                    train, verify, clean
``synthetic``  built-in synthetic identities; options ``synthetic:key=value,...``           train, validation, eval
``bin``        an InsightFace verification ``.bin`` (LFW, CFP-FP, AgeDB-30, ...)            validation, eval, verify
``lfw``        ``DIR/pairs.txt`` + images (``DIR/images/<name>/`` or ``DIR/<name>/``), or  validation, eval, verify
               ``lfw:FILE`` (a pairs file; LFW names or ``label path0 path1`` lines)
``pairs``      an OpenSphere pair list, ``label path0 path1`` per line                      validation, eval, verify
``ijb``        IJB-B / IJB-C meta files + loose crops                                       eval
``ident``      1:N folders ``DIR/gallery``, ``DIR/probe``, optional ``DIR/distractors``     eval
=============  ==========================================================================  ========================

A bare path is recognised by :func:`detect_format`. Each command accepts the kinds that make sense for it
(:data:`TRAIN_KINDS`, :data:`PAIR_KINDS`, :data:`EVAL_KINDS`, :data:`VERIFY_KINDS`); a kind it does not accept is an
error listing the ones it does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError, InvalidOptionError, UnknownNameError

TRAIN_KINDS = ("folder", "list", "rec")
PAIR_KINDS = ("synthetic", "bin", "lfw", "pairs")
EVAL_KINDS = PAIR_KINDS + ("ijb", "ident")
VERIFY_KINDS = ("folder", "list", "rec", "bin", "lfw", "pairs")
ALL_KINDS = ("folder", "list", "rec", "synthetic", "bin", "lfw", "pairs", "ijb", "ident")
#: kinds whose path is a directory (``rec`` may be either: a prefix, a ``.rec`` or a folder holding ``train.rec``)
DIRECTORY_KINDS = ("folder", "lfw", "ijb", "ident")
FILE_KINDS = ("list", "bin", "pairs")
#: options of ``synthetic:key=value,...`` and their types
SYNTHETIC_OPTIONS = {"pairs_per_fold": int, "seed": int, "difficulty": float, "identity_spread": float}

_FORMS = {
    "folder": "folder:DIR", "list": "list:FILE", "rec": "rec:PREFIX", "synthetic": "synthetic",
    "bin": "bin:FILE.bin", "lfw": "lfw:DIR", "pairs": "pairs:FILE", "ijb": "ijb:DIR", "ident": "ident:DIR",
}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]+):(.*)$", re.DOTALL)


@dataclass(frozen=True)
class DataSpec:
    """A parsed dataset spec: ``kind``, ``path`` (None for synthetic), ``options`` (synthetic only), the ``text``
    the user wrote, and ``name``, the dataset's display name (the folder's or file's name)."""

    text: str
    kind: str
    path: Path | None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.path is None:
            return self.kind
        if self.kind == "lfw" and self.path.is_file():
            return self.path.resolve().parent.name or self.kind
        if self.kind in DIRECTORY_KINDS:
            return self.path.resolve().name or self.kind
        return self.path.stem or self.kind

    def __str__(self) -> str:
        if self.path is None:
            options = ",".join(f"{key}={value}" for key, value in self.options.items())
            return f"{self.kind}:{options}" if options else self.kind
        return f"{self.kind}:{self.path}"


def forms(kinds: Sequence[str]) -> str:
    """``folder:DIR, list:FILE, ...`` for an error message."""
    return ", ".join(_FORMS[k] for k in kinds)


def split_scheme(spec: str) -> tuple[str | None, str]:
    """``("kind", "rest")`` of ``kind:rest``; ``(None, spec)`` for a bare path (also one holding a colon)."""
    match = _SCHEME_RE.match(spec)
    if match is None or os.path.exists(spec):
        return None, spec
    return match.group(1).lower(), match.group(2)


def _dir_rec_prefix(path: str) -> str | None:
    if os.path.isfile(os.path.join(path, "train.rec")):
        return os.path.join(path, "train")
    try:
        names = os.listdir(path)
    except OSError:
        return None
    recs = [n for n in names if n.endswith(".rec") and os.path.isfile(os.path.join(path, n))]
    has_subdirs = any(os.path.isdir(os.path.join(path, n)) and not n.startswith(".") for n in names)
    if len(recs) == 1 and not has_subdirs:
        return os.path.join(path, recs[0][:-4])
    return None


def detect_format(path: str | os.PathLike[str], *, evaluation: bool = False) -> tuple[str, str]:
    """``(kind, path)`` for a bare path: ``rec`` / ``folder`` / ``list`` (and with ``evaluation``: ``bin`` / ``lfw``).

    * ``X.rec``, ``X.idx``, or a prefix ``X`` with ``X.rec`` beside it -> ``rec``; a folder holding ``train.rec`` (the
      InsightFace layout), or exactly one ``.rec`` and no sub-folders -> ``rec``;
    * ``X.bin`` -> ``bin``; a folder holding ``pairs.txt`` -> ``lfw`` (evaluation only);
    * any other folder -> ``folder``; a ``.txt`` / ``.lst`` / ``.list`` file -> ``list``.
    """
    p = os.fspath(path)
    low = p.lower()
    if low.endswith((".rec", ".idx")) or (not os.path.exists(p) and os.path.isfile(p + ".rec")):
        return "rec", p
    if not os.path.exists(p):
        raise DataError(f"{p}: no such file or folder")
    if os.path.isdir(p):
        prefix = _dir_rec_prefix(p)
        if prefix is not None:
            return "rec", prefix
        if evaluation and os.path.isfile(os.path.join(p, "pairs.txt")):
            return "lfw", p
        return "folder", p
    if evaluation and low.endswith(".bin"):
        return "bin", p
    if low.endswith((".txt", ".lst", ".list")):
        return "list", p
    valid = forms(TRAIN_KINDS) + (", " + forms(("bin", "lfw")) if evaluation else "")
    raise DataError(f"{p}: cannot tell the dataset format from the name; prefix it with one of {valid}")


def _synthetic_options(text: str, rest: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in SYNTHETIC_OPTIONS:
            raise InvalidOptionError(
                f"{text}: bad synthetic option {item!r}; use key=value with keys {', '.join(SYNTHETIC_OPTIONS)}"
            )
        try:
            options[key] = SYNTHETIC_OPTIONS[key](value.strip())
        except ValueError:
            raise InvalidOptionError(f"{text}: {key} must be a number, got {value!r}") from None
    return options


def parse_data_spec(spec: str | os.PathLike[str], kinds: Sequence[str] = ALL_KINDS, *,
                    check_exists: bool = True) -> DataSpec:
    """Parse one spec accepted where ``kinds`` are valid; a bare path is recognised by :func:`detect_format`.

    With ``check_exists`` a missing path (a folder where the kind wants a folder, a file where it wants a file) is a
    :class:`DataError` naming it; an unknown or unaccepted kind is an :class:`UnknownNameError` listing the valid
    forms.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidOptionError(f"a dataset spec must be a non-empty string, got {spec!r}")
    text = spec.strip()
    kind, rest = split_scheme(text)
    if kind is None and text == "synthetic":
        kind, rest = "synthetic", ""
    if kind is None:
        evaluation = any(k in kinds for k in ("bin", "lfw"))
        kind, rest = detect_format(rest, evaluation=evaluation)
    if kind == "pairs" and "pairs" in kinds and os.path.isdir(rest) and "lfw" in kinds:
        kind = "lfw"  # 'pairs:DIR' (an LFW folder) was data verify's spelling of lfw:DIR
    if kind not in kinds:
        what = f"a {kind!r} dataset cannot be used here" if kind in ALL_KINDS else f"unknown dataset kind {kind!r}"
        raise UnknownNameError(f"{text}: {what}; valid: {forms(kinds)}")
    if kind == "synthetic":
        return DataSpec(text, kind, None, _synthetic_options(text, rest))
    if not rest:
        raise DataError(f"{text}: the dataset spec names no path after '{kind}:'")
    path = Path(rest).expanduser()
    if check_exists:
        if kind == "lfw" and path.is_file():
            return DataSpec(text, kind, path)  # lfw:FILE, a pairs file itself
        if kind in DIRECTORY_KINDS and not path.is_dir():
            raise DataError(f"{text}: {path} is not a directory")
        if kind in FILE_KINDS and not path.is_file():
            raise DataError(f"{text}: {path} is not a file")
    return DataSpec(text, kind, path)


__all__ = ["DataSpec", "parse_data_spec", "detect_format", "split_scheme", "forms", "TRAIN_KINDS", "PAIR_KINDS",
           "EVAL_KINDS", "VERIFY_KINDS", "ALL_KINDS", "SYNTHETIC_OPTIONS"]
