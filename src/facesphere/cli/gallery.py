"""``facesphere gallery``: ``add``, ``search``, ``list``, ``info``, ``remove``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import DataError
from ..infer.enrol import enrol, enrolment_identities, identify, open_recognizer_for
from ..infer.gallery import Gallery, model_fingerprint
from .common import (
    add_model_options,
    add_threshold_options,
    check_detector_args,
    detector_options,
    expand_images,
    model_options,
    set_decision_threshold,
)


def _recognizer(args: argparse.Namespace) -> Any:
    check_detector_args(args)
    recognizer, recipe = open_recognizer_for(
        args.gallery, args.model, detector=args.detector, options=model_options(args), flip=args.flip,
        detector_options=detector_options(args), choose=args.choose, no_face=args.no_face)
    recognizer.batch_size = args.batch_size
    if args.model is None:
        print(f"model: {recipe.model} (recorded in the gallery)" + (f", detector {recipe.detector}"
                                                                    if recognizer.detector is not None else ""),
              file=sys.stderr)
    return recognizer, recipe


def _cmd_gallery_add(args: argparse.Namespace) -> int:
    images = enrolment_identities(args.images, args.identity)
    recognizer, recipe = _recognizer(args)
    report = enrol(args.gallery, recognizer, images, recipe=recipe, all_faces=args.all_faces, index=args.index,
                   strict=args.strict, progress=not args.quiet)
    for _, message in report.unreadable:
        print(f"skipped unreadable image: {message}", file=sys.stderr)
    for path in report.no_face:
        print(f"skipped, no face found: {path}", file=sys.stderr)
    for path, identity in report.duplicates:
        print(f"already in the gallery (as {identity}): {path}", file=sys.stderr)
    parts = [f"added {report.added} face(s) from {report.files_added} image(s)"]
    if report.duplicates:
        parts.append(f"{len(report.duplicates)} already in the gallery")
    if report.no_face or report.unreadable:
        parts.append(f"skipped {len(report.no_face)} without a face and {len(report.unreadable)} unreadable")
    print("; ".join(parts) + f"; gallery {args.gallery}: {report.entries} entries, {report.identities} identities")
    return 0


def _search_line(record: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(record)
    where = record["image"] + (f" [face {record['face']}]" if "face" in record else "")
    if "error" in record:
        return f"{where}: {record['error']}"
    matches = ", ".join(f"{m['identity']} {m['score']:.3f}" for m in record["matches"])
    if record["identity"] is not None:
        return f"{where}: {record['identity']} ({record['score']:.3f})   top: {matches}"
    if record["score"] is None:
        return f"{where}: unknown (the gallery is empty)"
    return (f"{where}: unknown (best {record['best']} {record['score']:.3f} < {record['threshold']:.3f})   "
            f"top: {matches}")


def _cmd_gallery_search(args: argparse.Namespace) -> int:
    paths = expand_images(args.images)
    recognizer, recipe = _recognizer(args)
    set_decision_threshold(args, recognizer, recipe.model)
    print(f"deciding at {recognizer.threshold_info.describe()}", file=sys.stderr)
    fingerprint = model_fingerprint(recognizer.embedder, flip=recognizer.flip)
    with Gallery.open(args.gallery, readonly=True) as gallery:
        for item in recognizer.iter_files(paths, all_faces=args.all_faces, progress=not args.quiet, desc="search"):
            if not item.ok:
                error = "no face found" if item.status == "no_face" else item.message
                tqdm.write(_search_line({"image": str(item.path), "error": error}, args.json), file=sys.stdout)
                continue
            features = [face.embedding for face in item.faces]
            decisions = identify(features, gallery, threshold=recognizer.threshold, k=args.k,
                                 per_identity=not args.entries, model=fingerprint)
            for number, (face, decision) in enumerate(zip(item.faces, decisions)):
                record: dict[str, Any] = {"image": str(item.path)}
                if args.all_faces:
                    record["face"] = number
                    record["box"] = face.to_dict()["box"]
                record.update(decision.to_dict())
                tqdm.write(_search_line(record, args.json), file=sys.stdout)
            sys.stdout.flush()
    return 0


def _cmd_gallery_list(args: argparse.Namespace) -> int:
    with Gallery.open(args.gallery, readonly=True) as gallery:
        identities = gallery.identities()
    if args.json:
        print(json.dumps(identities, indent=2))
        return 0
    width = max([len("identity")] + [len(name) for name in identities])
    print(f"{'identity':<{width}}  entries")
    for name, count in identities.items():
        print(f"{name:<{width}}  {count:>7}")
    print(f"{len(identities)} identities, {sum(identities.values())} entries")
    return 0


def _cmd_gallery_info(args: argparse.Namespace) -> int:
    with Gallery.open(args.gallery, readonly=True) as gallery:
        info = gallery.info()
        source = gallery.get_meta("model_source")
    if source:
        info["model_source"] = json.loads(source)
    print(json.dumps(info, indent=2, default=str))
    return 0


def _cmd_gallery_remove(args: argparse.Namespace) -> int:
    with Gallery.open(args.gallery) as gallery:
        removed = gallery.remove(identity=args.identity)
        if removed == 0:
            raise DataError(f"{args.gallery}: no identity {args.identity!r} in this gallery (it holds "
                            f"{len(gallery.identities())}; `facesphere gallery list {args.gallery}` names them); "
                            "nothing removed")
        print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} of {args.identity!r}; {len(gallery)} left")
    return 0


def register(commands: Any) -> None:
    gallery = commands.add_parser("gallery", help="a persistent face gallery on disk: add, search, list, info, remove")
    sub = gallery.add_subparsers(dest="gallery_command", metavar="GALLERY_COMMAND", required=True)
    model_help = ("run directory, checkpoint, backbone.pth or .onnx (default: the model the gallery records; "
                  "required to create one)")
    p = sub.add_parser(
        "add", help="embed images and add them (one sub-folder per person, or --identity NAME)",
        description="Enrol faces: PEOPLE/<name>/* gives each image the identity <name>; --identity NAME enrols every "
        "image given as one person (loose photos without person sub-folders are refused without it). An image "
        "already in the gallery (same path and content) is skipped; unreadable images and images without a face are "
        "skipped, named and counted (--strict: any of them stops the command and nothing is added). The gallery "
        "records the model, its options and the detector, so later add / search calls may leave out --model.")
    p.add_argument("gallery", type=Path, help="gallery directory (created if absent)")
    p.add_argument("images", nargs="+", help="folders (one sub-folder per person) and / or image files")
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--identity", default=None, help="one identity for every image given")
    p.add_argument("--all-faces", action="store_true",
                   help="enrol every face found in a photo (each with its box), not only the chosen one")
    p.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat", help="index kind of a new gallery")
    p.add_argument("--strict", action="store_true", help="fail, adding nothing, if any image cannot be enrolled")
    p.add_argument("--quiet", action="store_true")
    add_model_options(p, flip_default=None)
    p.set_defaults(func=_cmd_gallery_add, choose=None)
    p = sub.add_parser(
        "search", help="who is in each query image (known at the model's threshold, else unknown)",
        description="Search every query face in the gallery and decide at the threshold the model carries (see "
        "`facesphere verify --help`; --threshold / --far override): the best identity when its score reaches the "
        "threshold, else unknown, with the score shown. One line per query (one JSON object per line with --json) "
        "in input order, printed as each batch is searched.")
    p.add_argument("gallery", type=Path)
    p.add_argument("images", nargs="+", help="query images and / or folders")
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("-k", type=int, default=5, help="how many best identities to show (default 5)")
    add_threshold_options(p, "a known identity")
    p.add_argument("--all-faces", action="store_true", help="search every face of each photo (each with its box)")
    p.add_argument("--entries", action="store_true", help="top-k entries instead of the best entry per identity")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p, flip_default=None)
    p.set_defaults(func=_cmd_gallery_search, choose=None)
    p = sub.add_parser("list", help="the identities of a gallery and how many entries each has")
    p.add_argument("gallery", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_gallery_list)
    p = sub.add_parser("info", help="size, identities, index kind and model of a gallery")
    p.add_argument("gallery", type=Path)
    p.set_defaults(func=_cmd_gallery_info)
    p = sub.add_parser("remove", help="remove every entry of an identity (an identity not there is an error)")
    p.add_argument("gallery", type=Path)
    p.add_argument("identity")
    p.set_defaults(func=_cmd_gallery_remove)
