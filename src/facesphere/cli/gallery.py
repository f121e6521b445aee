"""``facesphere gallery``: ``add``, ``search``, ``info``, ``remove``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..infer.gallery import Gallery, model_fingerprint
from .common import add_model_options, expand_images, open_recognizer


def _cmd_gallery_add(args: argparse.Namespace) -> int:
    recognizer = open_recognizer(args, args.model)
    result = recognizer.embed_files(expand_images(args.images), progress=not args.quiet)
    for path in result.no_face:
        print(f"no face found: {path}")
    for path, message in result.unreadable:
        print(f"skipped unreadable image: {message}")
    if not result.paths:
        raise DataError("no face found in any of the images: nothing added")
    features, kept = result.features, result.paths
    names = [args.identity] * len(kept) if args.identity else [p.parent.name for p in kept]
    fingerprint = model_fingerprint(recognizer.embedder, flip=recognizer.flip)
    with Gallery.open_or_create(args.gallery, dim=features.shape[1], index=args.index, model=fingerprint) as gallery:
        gallery.add(features, names, paths=[str(p.resolve()) for p in kept], model=fingerprint)
        identities = gallery.identities()
        print(f"added {len(kept)} face(s); gallery {args.gallery}: {len(gallery)} entries, "
              f"{len(identities)} identities")
    return 0


def _cmd_gallery_search(args: argparse.Namespace) -> int:
    recognizer = open_recognizer(args, args.model)
    found = recognizer.embed_files(expand_images(args.images))
    features, kept = found.features, found.paths
    results = [{"image": str(p), "matches": [], "error": "no face found"} for p in found.no_face]
    results += [{"image": str(p), "matches": [], "error": message} for p, message in found.unreadable]
    if kept:
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
    with Gallery.open(args.gallery, readonly=True) as gallery:
        print(json.dumps(gallery.info(), indent=2, default=str))
    return 0


def _cmd_gallery_remove(args: argparse.Namespace) -> int:
    with Gallery.open(args.gallery) as gallery:
        removed = gallery.remove(identity=args.identity)
        print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} of {args.identity!r}; {len(gallery)} left")
    return 0


def register(commands: Any) -> None:
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
