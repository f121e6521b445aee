"""``facesphere detect``: every face in each photo, optionally named by a gallery and drawn."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError
from ..infer.annotate import FACES_JSON, annotate_photos
from ..infer.detectors import build_detector
from ..infer.enrol import open_recognizer_for
from ..infer.gallery import Gallery
from .common import (
    add_model_options,
    add_threshold_options,
    check_detector_args,
    detector_options,
    expand_images,
    model_options,
    set_decision_threshold,
)


def _line(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"{record['image']}: {record['error']}"
    faces = record["faces"]
    described = []
    for face in faces:
        box = ",".join(f"{v:.0f}" for v in face["box"])
        if "match_score" in face:
            name = face["identity"] or f"unknown (best {face.get('best_match')})"
            described.append(f"{name} {face['match_score']:.3f} [{box}]")
        else:
            described.append(f"{face['score']:.2f} [{box}]")
    return f"{record['image']}: {len(faces)} face(s)" + (": " + "; ".join(described) if described else "")


def _cmd_detect(args: argparse.Namespace) -> int:
    check_detector_args(args)
    paths = expand_images(args.photos)
    gallery = None
    if args.gallery is not None:
        recognizer, recipe = open_recognizer_for(
            args.gallery, args.model, detector=args.detector, options=model_options(args), flip=args.flip,
            detector_options=detector_options(args))
        if recognizer.detector is None:
            raise InvalidOptionError("detect needs --detector WEIGHTS (the gallery records none)")
        recognizer.batch_size = args.batch_size
        recognizer.min_score = args.min_score
        set_decision_threshold(args, recognizer, recipe.model)
        print(f"naming faces at {recognizer.threshold_info.describe()}", file=sys.stderr)
        finder: Any = recognizer
        gallery = Gallery.open(args.gallery, readonly=True)
    else:
        if args.detector is None:
            raise InvalidOptionError("detect needs --detector WEIGHTS (an SCRFD or YuNet .onnx, or an MTCNN folder)")
        if args.model is not None:
            raise InvalidOptionError("--model names faces together with --gallery; without a gallery detect needs "
                                     "only --detector")
        finder = build_detector(args.detector, **detector_options(args))
    try:
        for record in annotate_photos(finder, paths, args.draw, gallery=gallery, min_score=args.min_score,
                                      progress=not args.quiet and not args.json):
            print(json.dumps(record) if args.json else _line(record), flush=True)
    finally:
        if gallery is not None:
            gallery.close()
    if args.draw is not None and not args.json:
        print(f"drawn photos and {FACES_JSON} -> {args.draw}")
    return 0


def register(commands: Any) -> None:
    p = commands.add_parser(
        "detect", help="every face in each photo: boxes, scores, landmarks (names with --gallery); --draw pictures",
        description="Detect every face of each photo (image files and / or folders). Prints one line per photo (one "
        "JSON object with --json: image, faces: box x1 y1 x2 y2, detector score, 5 landmarks). --draw OUT writes each "
        "photo with its faces boxed, the landmarks dotted and a label, and OUT/faces.json. --gallery G names every "
        "face (known at the model's threshold, else unknown; the model recorded in the gallery unless --model).")
    p.add_argument("photos", nargs="+", metavar="PHOTOS", help="image files and / or folders")
    p.add_argument("--draw", type=Path, default=None, metavar="OUT", help="write drawn photos and OUT/faces.json")
    p.add_argument("--gallery", type=Path, default=None, help="name the faces with this gallery")
    p.add_argument("--model", default=None, help="the recogniser for --gallery (default: the one it records)")
    p.add_argument("--min-score", type=float, default=None, help="leave out faces scored below this")
    add_threshold_options(p, "a known identity")
    p.add_argument("--json", action="store_true", help="one JSON object per photo")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p, flip_default=None, face_choice=False)
    p.set_defaults(func=_cmd_detect)
