"""Every face of every photo (``facesphere detect``): boxes, scores and landmarks as JSON, optionally named by a
gallery and drawn on the photo.

    from facesphere.infer.annotate import annotate_photos
    for record in annotate_photos(recognizer, ["group.jpg"], out_dir="drawn", gallery=my_gallery):
        print(record["image"], [face["identity"] for face in record["faces"]])

``out_dir`` receives one drawn copy of each photo (:func:`facesphere.infer.draw.draw_faces`) and ``faces.json``: for
each input image its path, the drawn file and the list of faces (box ``x1 y1 x2 y2``, detector score, 5 landmarks,
and with a gallery ``identity`` (null: unknown), ``match_score``, ``best_match``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ..data.image import read_image
from ..errors import DataError
from ..files import atomic_path, atomic_write_text
from .draw import draw_faces
from .faces import Face
from .enrol import identify
from .gallery.store import Gallery, model_fingerprint
from .recognizer import FaceRecognizer

__all__ = ["annotate_photos", "FACES_JSON"]

FACES_JSON = "faces.json"


def _drawn_name(path: Path, taken: set[str]) -> str:
    suffix = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
    name, number = f"{path.stem}{suffix}", 1
    while name in taken or name == FACES_JSON:
        number += 1
        name = f"{path.stem}_{number}{suffix}"
    taken.add(name)
    return name


def annotate_photos(finder: FaceRecognizer | Any, paths: Sequence[str | os.PathLike[str]],
                    out_dir: str | os.PathLike[str] | None = None, *, gallery: Gallery | None = None,
                    threshold: float | None = None, min_score: float | None = None,
                    progress: bool = False) -> Iterator[dict[str, Any]]:
    """Detect every face of each photo (input order) and yield one JSON-ready record per photo:
    ``{"image", "faces": [...], "drawn"?}`` or ``{"image", "error"}`` for an unreadable file.

    ``finder``: a :class:`~facesphere.infer.recognizer.FaceRecognizer` with a detector, or a bare face detector
    (no gallery then; faces under ``min_score`` are left out). With ``gallery`` every face is embedded and searched,
    and named when its best score reaches ``threshold`` (default: the recogniser's). With ``out_dir`` each photo is
    drawn there and ``out_dir/faces.json`` is written at the end (the same records).
    """
    recognizer = finder if isinstance(finder, FaceRecognizer) else None
    if recognizer is None and gallery is not None:
        raise DataError("naming faces with a gallery needs a recogniser (a model), not only a detector")
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
    tau = float(threshold) if threshold is not None else (recognizer.threshold if recognizer is not None else 0.0)
    fingerprint = None if recognizer is None else model_fingerprint(recognizer.embedder, flip=recognizer.flip)
    records: list[dict[str, Any]] = []
    taken: set[str] = set()
    try:
        for path in tqdm([Path(p) for p in paths], desc="detect", unit="img", leave=False,
                         disable=not progress or len(paths) < 2):
            try:
                image = read_image(path)
            except DataError as error:
                record: dict[str, Any] = {"image": str(path), "error": str(error)}
                records.append(record)
                yield record
                continue
            if recognizer is not None:
                faces = recognizer.faces(image, embed=gallery is not None)
            else:
                faces = [Face(box=d.box, score=float(d.score), landmarks=d.landmarks) for d in finder.detect(image)
                         if min_score is None or d.score >= min_score]
            if gallery is not None and faces:
                _name_faces(faces, gallery, tau, fingerprint)
            record = {"image": str(path), "faces": [face.to_dict() for face in faces]}
            if out is not None:
                name = _drawn_name(path, taken)
                picture = draw_faces(image, faces)
                fmt, options = ("JPEG", {"quality": 95}) if name.endswith(".jpg") else ("PNG", {})
                with atomic_path(out / name, what="drawn photo") as temporary:
                    picture.save(temporary, format=fmt, **options)
                record["drawn"] = str(out / name)
            records.append(record)
            yield record
    finally:
        if out is not None:
            atomic_write_text(out / FACES_JSON, json.dumps(records, indent=1), what="faces list")


def _name_faces(faces: list[Face], gallery: Gallery, threshold: float, fingerprint: str | None) -> None:
    features = np.stack([face.embedding for face in faces])
    for face, decision in zip(faces, identify(features, gallery, threshold=threshold, k=1, model=fingerprint)):
        face.identity = decision.identity
        face.match_score = decision.score if decision.score is not None else float("nan")
        face.best_match = decision.best
