"""Align a whole folder of face photos (``facesphere data align``): detect (or read given landmarks), align, write.

    from facesphere.infer.align_folder import align_folder
    report = align_folder("lfw/images", "lfw_aligned", "scrfd_2.5g_bnkps.onnx")      # a detector
    report = align_folder("ijbc/loose", "ijbc_aligned", landmarks="ijbc_5pts.txt")    # given landmarks
    print(report.format_table())

The output tree mirrors the input's relative paths (``dst/<Name>/<Name>_0001.jpg``), so the aligned folder is ready for
:mod:`facesphere.data.datasets` (training) or an LFW-style pairs evaluation: an LFW-style ``pairs.txt`` (in ``src``, or
beside ``src`` when it is an ``images`` folder) is copied to the same place beside ``dst``, so ``eval --data lfw:``
runs on the result directly. JPEG inputs are written as JPEG at quality 95, everything else as PNG
(``image_format="png"`` writes PNG for all: lossless; the JPEG round trip moves cosine scores by about 0.003 against
detecting inside ``eval``); grey photos stay grey. Each output is written to a hidden temporary file and renamed, so
an interrupted run leaves no half-written image, and a second run skips every output that exists (resume). Images
without a face and unreadable images are listed, not fatal (or, with ``no_face="crop"`` / ``"resize"``, replaced by
the central crop / the whole image resized); ``dst/align_report.json`` holds the counts and lists, and
``dst/align_dropped.txt`` lists the photos left out so that a later evaluation can say why they are missing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.align import TemplateLike, align_face, get_template
from ..data.dropped import DROPPED_NAME, dropped_text
from ..data.image import is_image_file, read_image
from ..errors import DataError, FaceSphereError, InvalidOptionError, OutputError
from ..files import atomic_path, atomic_write_bytes, atomic_write_text
from .crops import central_crop, resize_whole
from .detectors import CHOOSE_RULES, build_detector, choose_face

__all__ = ["AlignReport", "align_folder", "read_landmarks_file", "REPORT_NAME", "DROPPED_NAME", "JPEG_QUALITY",
           "ALIGN_NO_FACE"]

REPORT_NAME = "align_report.json"
IMAGE_FORMATS = ("same", "jpg", "png")
#: the quality of the JPEG files align writes
JPEG_QUALITY = 95
#: what align does with a photo without a face: leave it out (listed), or write the central crop / the whole image
ALIGN_NO_FACE = ("skip", "crop", "resize")


@dataclass
class AlignReport:
    """What :func:`align_folder` did. Paths in the lists are relative to ``src``."""

    src: str
    dst: str
    template: str
    size: tuple[int, int]
    source: str  # "detector <file>" or "landmarks <file>"
    choose: str
    total: int = 0
    aligned: int = 0
    already_aligned: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    several_faces: list[str] = field(default_factory=list)
    not_listed: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    pairs_copied: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        data["counts"] = {"images": self.total, "aligned": self.aligned, "already_aligned": self.already_aligned,
                          "no_face": len(self.no_face), "unreadable": len(self.unreadable),
                          "several_faces": len(self.several_faces), "not_listed": len(self.not_listed),
                          "no_face_replaced": len(self.replaced)}
        return data

    def dropped(self) -> list[tuple[str, str]]:
        """``(relative path, reason)`` of every photo left out."""
        replaced = set(self.replaced)
        out = [(path, "no face found") for path in self.no_face if path not in replaced]
        return out + [(item["path"], "unreadable: " + item["error"]) for item in self.unreadable]

    def format_table(self) -> str:
        rows = [
            ("images", self.total),
            ("aligned now", self.aligned),
            ("already aligned (skipped)", self.already_aligned),
            ("no face", len(self.no_face)),
            ("unreadable", len(self.unreadable)),
            ("several faces (one chosen)", len(self.several_faces)),
        ]
        if self.replaced:
            rows.append(("  of which written as the no-face crop", len(self.replaced)))
        if self.not_listed:
            rows.append(("in SRC but not in the landmarks file", len(self.not_listed)))
        width = max(len(name) for name, _ in rows)
        lines = [f"align {self.src} -> {self.dst}",
                 f"  template {self.template} {self.size[0]}x{self.size[1]}, {self.source}, choose {self.choose}"]
        lines += [f"  {name:<{width}}  {value:>7}" for name, value in rows]
        speed = self.aligned / self.seconds if self.seconds > 0 and self.aligned else 0.0
        lines.append(f"  {'time':<{width}}  {self.seconds:>6.1f}s" + (f" ({speed:.1f} img/s)" if speed else ""))
        for label, items in (("no face", self.no_face),
                             ("unreadable", [f"{u['path']}: {u['error']}" for u in self.unreadable])):
            if items:
                shown = ", ".join(items[:5]) + (f", … ({len(items) - 5} more)" if len(items) > 5 else "")
                lines.append(f"  {label}: {shown}")
        lines.append(f"  report: {Path(self.dst) / REPORT_NAME}")
        if self.dropped():
            lines.append(f"  dropped photos listed in {Path(self.dst) / DROPPED_NAME}")
        if self.pairs_copied:
            lines.append(f"  pairs.txt copied to {self.pairs_copied}")
        return "\n".join(lines)


def read_landmarks_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A landmarks file -> ``{relative image path: float64 (5, 2)}``.

    One face per line: ``relative/path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5`` (left eye, right eye, nose, left and right
    mouth corner, as seen in the image), optionally followed by one more number (a score, as in IJB-C's
    ``*_5pts_score.txt``), which is ignored. Whitespace-separated; the path may contain spaces; blank lines and
    lines starting with ``#`` are skipped. A duplicated path, a short line or a non-finite number is a
    :class:`DataError` naming the line.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{file}: no such landmarks file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{file}: cannot read the landmarks file: {error}") from None
    result: dict[str, np.ndarray] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = stripped.split()
        if _trailing_numbers(tokens, 11):  # path, 10 coordinates, score
            name, numbers = " ".join(tokens[:-11]), [float(t) for t in tokens[-11:-1]]
        elif _trailing_numbers(tokens, 10):
            name, numbers = " ".join(tokens[:-10]), [float(t) for t in tokens[-10:]]
        else:
            raise DataError(f"{file}:{number}: expected 'path x1 y1 ... x5 y5', got {stripped[:120]!r}")
        points = np.asarray(numbers, dtype=np.float64).reshape(5, 2)
        if not np.isfinite(points).all():
            raise DataError(f"{file}:{number}: {name}: landmarks contain NaN or infinite values")
        key = Path(name).as_posix()
        if key in result:
            raise DataError(f"{file}:{number}: {name} is listed twice (one face per image)")
        result[key] = points
    if not result:
        raise DataError(f"{file}: the landmarks file lists no image")
    return result


def _trailing_numbers(tokens: list[str], count: int) -> bool:
    """Whether the last ``count`` tokens are numbers and at least one token (the path) precedes them."""
    if len(tokens) < count + 1:
        return False
    try:
        for token in tokens[-count:]:
            float(token)
    except ValueError:
        return False
    return True


def _output_path(dst: Path, relative: str, image_format: str) -> tuple[Path, str]:
    """Output file and Pillow format for an input image's relative path: JPEG stays JPEG under ``"same"``,
    anything else becomes PNG (suffix replaced)."""
    suffix = Path(relative).suffix.lower()
    is_jpeg = suffix in (".jpg", ".jpeg")
    if image_format == "jpg" or (image_format == "same" and is_jpeg):
        return dst / (relative if is_jpeg else Path(relative).with_suffix(".jpg").as_posix()), "JPEG"
    return dst / (relative if suffix == ".png" else Path(relative).with_suffix(".png").as_posix()), "PNG"


def _write_atomically(path: Path, image: np.ndarray, fmt: str) -> None:
    grey = image[:, :, 0] if (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 0] == image[:, :, 2]).all() \
        else image
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    try:
        with atomic_path(path, what="aligned image") as temporary:
            Image.fromarray(np.ascontiguousarray(grey)).save(temporary, format=fmt, **options)
    except OutputError as error:
        raise DataError(str(error)) from None


def _scan(src: Path) -> list[str]:
    return sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and is_image_file(p.name))


def align_folder(src: str | os.PathLike[str], dst: str | os.PathLike[str], detector: Any = None, *,
                 landmarks: str | os.PathLike[str] | dict[str, np.ndarray] | None = None,
                 template: TemplateLike = "arcface", choose: str = "largest", min_score: float | None = None,
                 image_format: str = "same", progress: bool = True,
                 detector_options: dict[str, Any] | None = None, no_face: str = "skip",
                 copy_pairs: bool = True) -> AlignReport:
    """Align every image under ``src`` into ``dst`` (same relative paths) and write ``dst/align_report.json``.

    Args:
        src: folder of photos (searched recursively for image files).
        dst: output folder (created; must not lie inside ``src``). Existing outputs are kept and skipped (resume).
        detector: a detector object or detector weights (SCRFD / YuNet ONNX, see
            :func:`~facesphere.infer.detectors.build_detector` with ``detector_options``). Exclusive with ``landmarks``.
        landmarks: a landmarks file (see :func:`read_landmarks_file`) or a ready ``{relative path: (5, 2)}`` dict;
            only the listed images are aligned.
        template: ``"arcface"`` (112x112), ``"sphereface"`` (112x96) or a size (docs/methods.md §9).
        choose: ``"largest"``, ``"central"`` or ``"score"``: which face when a photo shows several.
        min_score: ignore detections under this score (default: the detector's threshold only).
        image_format: ``"same"`` (JPEG at quality 95 for JPEG inputs, PNG otherwise), ``"jpg"`` or ``"png"``
            (lossless).
        progress: show a progress bar.
        no_face: a photo without a face is left out and listed (``"skip"``), or written as its central crop
            (``"crop"``) or whole, resized (``"resize"``), and counted.
        copy_pairs: copy an LFW-style ``pairs.txt`` found in ``src`` (or beside ``src`` when it is named ``images``)
            to the matching place of ``dst`` when none is there.

    Returns:
        An :class:`AlignReport` (also written as JSON to ``dst/align_report.json``).
    """
    source_dir, out_dir = Path(src), Path(dst)
    if not source_dir.is_dir():
        raise DataError(f"{source_dir}: no such folder")
    if (detector is None) == (landmarks is None):
        raise InvalidOptionError("align_folder needs exactly one of a detector and a landmarks file")
    if image_format not in IMAGE_FORMATS:
        raise InvalidOptionError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    resolved_src, resolved_dst = source_dir.resolve(), out_dir.resolve()
    if resolved_dst == resolved_src or resolved_src in resolved_dst.parents:
        raise InvalidOptionError(f"{out_dir}: the output folder must not be {source_dir} or lie inside it")
    spec = get_template(template)
    if no_face not in ALIGN_NO_FACE:
        raise InvalidOptionError(f"no_face must be one of {', '.join(ALIGN_NO_FACE)}, got {no_face!r}")
    if choose not in CHOOSE_RULES:
        raise InvalidOptionError(f"unknown face choice {choose!r}; valid: {', '.join(CHOOSE_RULES)}")

    given: dict[str, np.ndarray] | None = None
    if landmarks is not None:
        if isinstance(landmarks, dict):
            given = {Path(k).as_posix(): np.asarray(v, dtype=np.float64) for k, v in landmarks.items()}
            source = "given landmarks"
        else:
            given = read_landmarks_file(landmarks)
            source = f"landmarks {landmarks}"
        for name in given:
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise DataError(f"{landmarks if not isinstance(landmarks, dict) else 'landmarks'}: {name}: image "
                                f"paths must be relative to {source_dir} and stay inside it")
        found = _scan(source_dir)
        work = list(given)
        listed = set(work)
        not_listed = [name for name in found if name not in listed]
    else:
        detector = build_detector(detector, **(detector_options or {}))
        source = f"detector {Path(getattr(detector, 'path', type(detector).__name__)).name}"
        work = _scan(source_dir)
        not_listed = []
    report = AlignReport(src=str(source_dir), dst=str(out_dir), template=spec.name, size=spec.size, source=source,
                         choose=choose, total=len(work), not_listed=not_listed)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    targets: dict[Path, str] = {}
    for relative in tqdm(work, desc="align", unit="img", disable=not progress or len(work) < 2):
        target, fmt = _output_path(out_dir, relative, image_format)
        if target in targets:
            report.unreadable.append({"path": relative, "error": f"its output {target.name} is also the output of "
                                                                 f"{targets[target]}"})
            continue
        targets[target] = relative
        if target.exists():
            report.already_aligned += 1
            continue
        try:
            image = read_image(source_dir / relative)
        except DataError as error:
            report.unreadable.append({"path": relative, "error": _strip_source(str(error), source_dir / relative)})
            continue
        if given is not None:
            points = given[relative]
        else:
            detections = detector.detect(image)
            face = choose_face(detections, image.shape, choose, min_score)
            if face is None:
                report.no_face.append(relative)
                if no_face != "skip":
                    size = (spec.size[0], spec.size[1])
                    fallback = central_crop(image, size) if no_face == "crop" else resize_whole(image, size)
                    _write_atomically(target, fallback, fmt)
                    report.replaced.append(relative)
                continue
            if sum(1 for d in detections if min_score is None or d.score >= min_score) > 1:
                report.several_faces.append(relative)
            points = face.landmarks
        try:
            crop = align_face(image, points, spec)
        except FaceSphereError as error:
            report.unreadable.append({"path": relative, "error": str(error)})
            continue
        _write_atomically(target, crop, fmt)
        report.aligned += 1
    report.seconds = time.perf_counter() - start
    if copy_pairs:
        report.pairs_copied = _copy_pairs(source_dir, out_dir)
    atomic_write_text(out_dir / REPORT_NAME, json.dumps(report.to_dict(), indent=2), what="alignment report")
    dropped = out_dir / DROPPED_NAME
    if report.dropped():
        atomic_write_text(dropped, dropped_text(report.dropped()), what="list of dropped photos")
    else:  # a resumed run retries every photo dropped before: its list is complete
        dropped.unlink(missing_ok=True)
    return report


def _copy_pairs(src: Path, dst: Path) -> str | None:
    """Copy an LFW-style ``pairs.txt``: ``src/pairs.txt`` -> ``dst/pairs.txt``; ``SRC_PARENT/pairs.txt`` (``src``
    named ``images``) -> beside ``dst`` (``dst``'s parent when ``dst`` is named ``images`` too, else ``dst``).
    Returns the copy's path, or None (no pairs file, or one already there, left as it is)."""
    if (src / "pairs.txt").is_file():
        source, target = src / "pairs.txt", dst / "pairs.txt"
    elif src.name == "images" and (src.parent / "pairs.txt").is_file():
        source = src.parent / "pairs.txt"
        target = (dst.parent if dst.name == "images" else dst) / "pairs.txt"
    else:
        return None
    if target.exists():
        return None
    atomic_write_bytes(target, source.read_bytes(), what="pairs.txt copy")
    return str(target)


def _strip_source(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
