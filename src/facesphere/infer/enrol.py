"""Everyday gallery work on top of :class:`~facesphere.infer.gallery.Gallery`: who each photo is (folders), how to
reopen the gallery's recogniser (the recipe recorded in the gallery), enrolling a folder without duplicates, and
deciding known / unknown at a threshold.

    from facesphere.infer.enrol import enrol, identify, open_recognizer_for
    rec = open_recognizer_for("my_gallery", model="runs/my_run", detector="scrfd_2.5g_bnkps.onnx")
    report = enrol("my_gallery", rec, ["people/"])            # people/<name>/*.jpg, one folder per person
    with Gallery.open("my_gallery") as gallery:
        print(identify(rec.embed("query.jpg"), gallery, threshold=rec.threshold))
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.image import is_image_file
from ..errors import DataError, InvalidOptionError
from .faces import Face
from .gallery.store import Gallery, Match, model_fingerprint
from .recognizer import FaceRecognizer

__all__ = ["enrolment_identities", "file_digest", "ModelRecipe", "MODEL_SOURCE_KEY", "open_recognizer_for",
           "EnrolReport", "enrol", "Identification", "identify", "decide"]

#: the gallery meta key holding the :class:`ModelRecipe` (JSON)
MODEL_SOURCE_KEY = "model_source"


# ------------------------------------------------------------------------------------------------------------------
# who is in which photo

def enrolment_identities(items: Sequence[str | os.PathLike[str]], identity: str | None = None
                         ) -> list[tuple[Path, str]]:
    """``(image, identity)`` for every image under ``items`` (folders searched recursively, sorted; files as given).

    With ``identity`` every image is that person. Without it, a folder must hold one sub-folder per person
    (``PEOPLE/<name>/...``: the identity is the first folder under the given one); photos lying loose in a given
    folder, or image files given by themselves, are refused (a :class:`~facesphere.errors.DataError` saying to pass
    ``--identity NAME``) rather than enrolled as one person named after their folder.
    """
    if identity is not None and not str(identity).strip():
        raise InvalidOptionError("--identity must be a non-empty name")
    found: list[tuple[Path, str]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p.name))
            if identity is None:
                loose = [p for p in images if p.parent == path]
                if loose:
                    raise DataError(
                        f"{path}: {len(loose)} photo(s) lie directly in this folder (e.g. {loose[0].name}) with no "
                        "person sub-folders: pass --identity NAME to enrol them as one person, or give a folder "
                        "holding one sub-folder per person (PEOPLE/<name>/...)")
                found += [(p, p.relative_to(path).parts[0]) for p in images]
            else:
                found += [(p, identity) for p in images]
        elif path.is_file():
            if identity is None:
                raise DataError(f"{path}: an image given by itself needs --identity NAME (or give the folder above "
                                "it, holding one sub-folder per person)")
            found.append((path, identity))
        else:
            raise DataError(f"{path}: no such image file or folder")
    if not found:
        raise DataError(f"no images found in {', '.join(os.fspath(i) for i in items)}")
    return found


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex): with the path, what makes an enrolled image the same one."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise DataError(f"{path}: cannot read image file: {error.strerror or error}") from None
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------------------
# the recogniser a gallery was built with

@dataclass
class ModelRecipe:
    """How to reopen a gallery's recogniser: the model path (absolute), its loading options, the flip fusion, and
    the detector with its options, face choice and no-face policy used to enrol."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)
    flip: str = "sum"
    detector: str | None = None
    detector_options: dict[str, Any] = field(default_factory=dict)
    choose: str = "largest"
    no_face: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelRecipe":
        data = json.loads(text)
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def recorded_recipe(path: str | os.PathLike[str]) -> ModelRecipe | None:
    """The recipe recorded in the gallery at ``path`` (None for a gallery without one or no gallery)."""
    try:
        with Gallery.open(path, readonly=True) as gallery:
            text = gallery.get_meta(MODEL_SOURCE_KEY)
    except DataError:
        return None
    try:
        return None if text is None else ModelRecipe.from_json(text)
    except (ValueError, TypeError):
        return None


def open_recognizer_for(gallery: str | os.PathLike[str], model: Any = None, *, detector: Any = None,
                        options: dict[str, Any] | None = None, flip: str | None = None,
                        detector_options: dict[str, Any] | None = None, choose: str | None = None,
                        no_face: str | None = None, threshold: float | None = None,
                        far: float | None = None) -> tuple[FaceRecognizer, ModelRecipe]:
    """The recogniser to add to or search ``gallery`` with, and its recipe.

    ``model`` given: that model (with ``options`` …); the gallery still refuses it later when its fingerprint
    differs. ``model`` None: the model the gallery records (its path and options; a detector, face choice and no-face
    policy recorded at enrolment are reused unless given here); a gallery recording none is an error asking for
    ``--model``.
    """
    if model is None:
        recipe = recorded_recipe(gallery)
        if recipe is None:
            if not (Path(gallery) / "gallery.sqlite").exists():
                raise DataError(f"{gallery}: no gallery here yet: pass --model to create one")
            raise DataError(f"{gallery}: this gallery records no model to open (made by an older facesphere or the "
                            "Python API): pass --model")
        if not Path(recipe.model).exists():
            raise DataError(f"{gallery}: the gallery's model {recipe.model} is gone: pass --model (the same model, "
                            "moved)")
        if options:
            recipe.options.update({k: v for k, v in options.items() if v is not None})
    else:
        recipe = ModelRecipe(model=os.fspath(Path(model).resolve()) if isinstance(model, (str, os.PathLike))
                             else str(model), options={k: v for k, v in (options or {}).items() if v is not None})
        recipe.flip = flip or "sum"
    if model is not None or detector is not None:
        recipe.detector = None if detector is None else os.fspath(Path(detector).resolve())
        recipe.detector_options = dict(detector_options or {})
    elif detector_options:
        recipe.detector_options.update(detector_options)
    if flip is not None:
        recipe.flip = flip
    if choose is not None:
        recipe.choose = choose
    if no_face is not None:
        recipe.no_face = no_face
    source = model if model is not None and not isinstance(model, (str, os.PathLike)) else recipe.model
    recognizer = FaceRecognizer.from_path(source, detector=recipe.detector, threshold=threshold, far=far,
                                          flip=recipe.flip, choose=recipe.choose,
                                          detector_options=recipe.detector_options, no_face=recipe.no_face,
                                          **recipe.options)
    return recognizer, recipe


# ------------------------------------------------------------------------------------------------------------------
# enrolling

@dataclass
class EnrolReport:
    """What :func:`enrol` did: entries ``added`` from ``files_added`` files, files skipped as ``duplicates``
    (already enrolled: same path and content), ``no_face`` and ``unreadable`` (path, message) files, and the
    gallery's size after."""

    added: int = 0
    files_added: int = 0
    duplicates: list[tuple[Path, str]] = field(default_factory=list)
    no_face: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    entries: int = 0
    identities: int = 0
    several_faces: list[Path] = field(default_factory=list)


def _entry_key(path: str, extra: Any) -> tuple[str, str | None]:
    digest = extra.get("sha256") if isinstance(extra, dict) else None
    return path, digest


def enrol(gallery_path: str | os.PathLike[str], recognizer: FaceRecognizer, images: Sequence[tuple[Path, str]], *,
          recipe: ModelRecipe | None = None, all_faces: bool = False, index: str = "flat", strict: bool = False,
          progress: bool = False) -> EnrolReport:
    """Embed ``images`` (``(path, identity)``, e.g. from :func:`enrolment_identities`) and add them to the gallery
    at ``gallery_path`` (created if absent, recording ``recipe``).

    An image already enrolled (same resolved path and SHA-256) is skipped, whatever its identity then. Unreadable
    files and files without a face are skipped and reported; with ``strict`` any of them stops the enrolment before
    anything is added (a :class:`~facesphere.errors.DataError` naming them). ``all_faces``: every face of a photo
    becomes an entry of its identity (each with its box in the entry's ``extra``). When nothing could be added
    (and nothing was a duplicate) it is a :class:`~facesphere.errors.DataError`.
    """
    report = EnrolReport()
    resolved = [(path.resolve(), name) for path, name in images]
    digests: dict[Path, str] = {}
    known: dict[tuple[str, str | None], str] = {}
    fingerprint = model_fingerprint(recognizer.embedder, flip=recognizer.flip)
    if (Path(gallery_path) / "gallery.sqlite").exists():
        with Gallery.open(gallery_path, readonly=True) as existing:
            if existing.model is not None and existing.model != fingerprint:
                raise DataError(f"{gallery_path}: the gallery holds embeddings of model {existing.model!r}; refusing "
                                f"to add embeddings of model {fingerprint!r} (they are not comparable). Use the same "
                                "recogniser and input options (leave out --model to use the gallery's), or another "
                                "gallery directory")
            for entry in existing.entries(paths=[os.fspath(p) for p, _ in resolved]):
                known[_entry_key(entry.path or "", entry.extra)] = entry.identity
    todo: list[tuple[Path, str]] = []
    for path, name in resolved:
        try:
            digests[path] = file_digest(path)
        except DataError as error:
            report.unreadable.append((path, str(error)))
            continue
        already = known.get((os.fspath(path), digests[path]))
        if already is not None:
            report.duplicates.append((path, already))
        else:
            todo.append((path, name))
    names = dict(todo)
    rows: list[np.ndarray] = []
    identities: list[str] = []
    paths: list[str] = []
    extras: list[dict[str, Any]] = []
    for item in recognizer.iter_files([p for p, _ in todo], all_faces=all_faces, progress=progress, desc="enrol"):
        if item.status == "unreadable":
            report.unreadable.append((item.path, item.message or "unreadable"))
            continue
        if item.status == "no_face":
            report.no_face.append(item.path)
            continue
        if len(item.faces) > 1:
            report.several_faces.append(item.path)
        for number, face in enumerate(item.faces):
            rows.append(np.asarray(face.embedding, dtype=np.float32))
            identities.append(names[item.path])
            paths.append(os.fspath(item.path))
            extras.append(_face_extra(face, digests[item.path], number if all_faces else None))
    if strict and (report.unreadable or report.no_face):
        bad = [os.fspath(p) for p, _ in report.unreadable] + [os.fspath(p) for p in report.no_face]
        raise DataError(f"--strict: {len(bad)} image(s) could not be enrolled ({', '.join(bad[:5])}"
                        f"{', …' if len(bad) > 5 else ''}); nothing was added")
    if not rows:
        if report.duplicates and not (report.unreadable or report.no_face):
            return _finish(report, gallery_path)
        raise DataError(f"{gallery_path}: nothing added: no face found in any of the images "
                        f"({len(report.no_face)} without a face, {len(report.unreadable)} unreadable, "
                        f"{len(report.duplicates)} already in the gallery)")
    features = np.stack(rows)
    with Gallery.open_or_create(gallery_path, dim=features.shape[1], index=index, model=fingerprint) as gallery:
        gallery.add(features, identities, paths=paths, extra=extras, model=fingerprint)
        if recipe is not None and gallery.get_meta(MODEL_SOURCE_KEY) is None:
            gallery.set_meta(MODEL_SOURCE_KEY, recipe.to_json())
    report.added = len(rows)
    report.files_added = len(set(paths))
    return _finish(report, gallery_path)


def _face_extra(face: Face, digest: str, number: int | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"sha256": digest}
    if number is not None:
        extra["face"] = number
    if face.box is not None:
        extra["box"] = [round(float(v), 2) for v in face.box]
    return extra


def _finish(report: EnrolReport, gallery_path: str | os.PathLike[str]) -> EnrolReport:
    if (Path(gallery_path) / "gallery.sqlite").exists():
        with Gallery.open(gallery_path, readonly=True) as gallery:
            report.entries = len(gallery)
            report.identities = len(gallery.identities())
    return report


# ------------------------------------------------------------------------------------------------------------------
# known or unknown

@dataclass
class Identification:
    """A search decided at a threshold: ``identity`` (None: unknown), the best ``score`` and ``best`` identity
    (even when unknown), the ``threshold`` and the top ``matches``."""

    identity: str | None
    score: float | None
    best: str | None
    threshold: float
    matches: list[Match]

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "score": None if self.score is None else round(float(self.score), 6),
                "best": self.best, "threshold": round(float(self.threshold), 6),
                "matches": [{"identity": m.identity, "score": round(float(m.score), 6), "path": m.path,
                             "id": int(m.id)} for m in self.matches]}


def decide(matches: list[Match], threshold: float) -> Identification:
    """Known (the best match scores at least ``threshold``) or unknown."""
    if not matches:
        return Identification(None, None, None, float(threshold), [])
    best = matches[0]
    known = float(best.score) >= float(threshold)
    return Identification(best.identity if known else None, float(best.score), best.identity, float(threshold),
                          list(matches))


def identify(features: np.ndarray, gallery: Gallery, *, threshold: float, k: int = 5, per_identity: bool = True,
             model: str | None = None) -> list[Identification]:
    """Search each embedding ``(N, D)`` and decide it at ``threshold`` (see :func:`decide`)."""
    if len(features) == 0:
        return []
    hits = gallery.search(features, k=k, per_identity=per_identity, model=model)
    return [decide(matches, threshold) for matches in hits]
