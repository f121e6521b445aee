"""Folder of class folders <-> InsightFace RecordIO (``.rec`` / ``.idx`` / ``property``): ``data pack`` / ``unpack``."""

from __future__ import annotations

import contextlib
import io
import os

from ...errors import DataError
from ...files import atomic_path
from .faceset import RecordIOFaceSet
from .framing import RecordWriter, resolve_prefix
from .records import IMAGE_EXTENSIONS, detect_image_extension, pack_image_record

# --------------------------------------------------------------------------------------------------------------
# folder <-> RecordIO


def progress_bar(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="img", leave=False)


def _list_class_folders(src: str):
    try:
        entries = sorted(os.scandir(src), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{src}: cannot list folder: {e.strerror}") from None
    classes, empty, ignored = [], [], 0
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored += 1
            continue
        try:
            files = sorted(
                f.name
                for f in os.scandir(entry.path)
                if not f.name.startswith(".") and f.is_file() and os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS
            )
        except OSError as e:
            raise DataError(f"{entry.path}: cannot list folder: {e.strerror}") from None
        if files:
            classes.append((entry.name, [os.path.join(entry.path, f) for f in files]))
        else:
            empty.append(entry.name)
    return classes, empty, ignored


def _image_size(data: bytes, path: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    return h, w


def pack_folder(src_folder: str | os.PathLike, out_prefix: str | os.PathLike, *, progress: bool = True) -> dict:
    """Pack ``SRC/<class>/<image>`` into InsightFace RecordIO: ``OUT.rec``, ``OUT.idx``, ``property``,
    ``OUT.classes.txt``.

    Classes are the non-hidden sub-folders holding at least one image (extension in :data:`IMAGE_EXTENSIONS`),
    numbered 0.. in sorted folder-name order; images go in sorted file-name order, keys ``1..N``, label = class id
    (float). Key 0 is the header ``[N+1, N+1+C]``, keys ``N+1 .. N+C`` the identity records ``[start, end)``.
    Image bytes are copied verbatim. ``property`` (``C,height,width``; the most common image size) is written to
    ``os.path.join(dirname(OUT), "property")``; ``OUT.classes.txt`` lists ``id<TAB>folder``. Every file is written
    under a temporary name and renamed into place at the end. Returns a summary dict.
    """
    src = os.fspath(src_folder)
    if not os.path.isdir(src):
        raise DataError(f"{src}: source folder not found (expected SRC/<class>/<image> files)")
    out_arg = os.fspath(out_prefix)
    if os.path.isdir(out_arg):  # an existing folder: InsightFace's names inside it
        out_arg = os.path.join(out_arg, "train")
    rec_path, idx_path = resolve_prefix(out_arg)
    base = rec_path[:-4]
    out_dir = os.path.dirname(os.path.abspath(base))
    classes, empty, ignored = _list_class_folders(src)
    if not classes:
        raise DataError(f"{src}: no class folders with images found (expected SRC/<class>/<image>.jpg)")
    num_images = sum(len(files) for _, files in classes)
    num_classes = len(classes)
    if num_images + num_classes + 1 > 1 << 24:
        raise DataError(
            f"{src}: {num_images} images and {num_classes} classes are too many for the InsightFace layout, whose "
            "float32 header and identity records hold keys exactly only up to 2**24; split the set"
        )
    os.makedirs(out_dir, exist_ok=True)
    prop_path = os.path.join(os.path.dirname(base), "property")
    classes_path = base + ".classes.txt"
    finals = [rec_path, idx_path, classes_path, prop_path]
    sizes: dict[tuple[int, int], int] = {}
    total_bytes = 0
    a = num_images + 1
    b = a + num_classes
    with contextlib.ExitStack() as stack:
        # fresh temporary files beside the outputs (never through a planted link), renamed into place together
        # (entered last to first, so that they are renamed in order: .rec, .idx, classes, property)
        by_final = {p: str(stack.enter_context(atomic_path(p, what="RecordIO output"))) for p in reversed(finals)}
        temps = [by_final[p] for p in finals]
        with RecordWriter(temps[0], temps[1]) as w:
            w.write(0, pack_image_record([a, b], b""))
            key = 1
            ranges = []

            def items():
                for cid, (_, files) in enumerate(classes):
                    for path in files:
                        yield cid, path

            for cid, path in progress_bar(items(), num_images, "pack", progress):
                if key == 1 or ranges[-1][0] != cid:
                    ranges.append([cid, key, key])
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError as e:
                    raise DataError(f"{path}: cannot read image: {e.strerror}") from None
                hw = _image_size(data, path)
                sizes[hw] = sizes.get(hw, 0) + 1
                total_bytes += len(data)
                w.write(key, pack_image_record(float(cid), data, id=key))
                key += 1
                ranges[-1][2] = key
            for cid, start, end in ranges:
                w.write(a + cid, pack_image_record([start, end], b""))
        with open(temps[2], "w", encoding="utf-8", newline="\n") as f:
            for cid, (name, _) in enumerate(classes):
                f.write(f"{cid}\t{name}\n")
        (h, wd), _ = max(sizes.items(), key=lambda kv: kv[1])
        with open(temps[3], "w", encoding="ascii", newline="\n") as f:
            f.write(f"{num_classes},{h},{wd}\n")
    return {
        "rec": rec_path,
        "idx": idx_path,
        "property": prop_path,
        "classes_file": classes_path,
        "num_images": num_images,
        "num_classes": num_classes,
        "image_size": (h, wd),
        "image_sizes": {f"{hh}x{ww}": c for (hh, ww), c in sorted(sizes.items())},
        "image_bytes": total_bytes,
        "rec_bytes": os.path.getsize(rec_path),
        "header": (a, b),
        "skipped_empty_folders": empty,
        "ignored_top_level_files": ignored,
    }


def unpack(
    prefix_or_rec: str | os.PathLike,
    out_folder: str | os.PathLike,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write every image of a RecordIO face set to ``OUT/<class id>/<record key><ext>``.

    Class folders are the class id zero-padded to the width of the largest id (``00``, ``01``, ... ``23``), file
    names the record key zero-padded to the width of the largest key, the extension detected from the image's
    magic bytes (``.jpg``, ``.png``, ...; ``.dat`` if unknown). Zero-padding keeps sorted order equal to numeric
    order, so packing the result again gives the same class ids and image order. Bytes are written verbatim.
    ``OUT`` must be empty or missing unless ``overwrite``. Returns a summary dict.
    """
    ds = RecordIOFaceSet(prefix_or_rec)
    out = os.fspath(out_folder)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise DataError(f"{out}: exists and is not a folder")
        if os.listdir(out) and not overwrite:
            raise DataError(f"{out}: output folder is not empty; choose an empty folder (or pass overwrite=True)")
    os.makedirs(out, exist_ok=True)
    labels = ds.labels
    keys = ds.keys
    n = len(ds)
    cw = len(str(int(labels.max()))) if n else 1
    kw = len(str(int(keys.max()))) if n else 1
    made: set[int] = set()
    exts: dict[str, int] = {}
    with ds:
        for i in progress_bar(range(n), n, "unpack", progress):
            label, img = ds.read(i)
            folder = os.path.join(out, f"{label:0{cw}d}")
            if label not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(label)
            ext = detect_image_extension(img)
            exts[ext] = exts.get(ext, 0) + 1
            path = os.path.join(folder, f"{int(keys[i]):0{kw}d}{ext}")
            with open(path, "wb") as f:
                f.write(img)
    return {
        "out": out,
        "rec": ds.rec_path,
        "num_images": n,
        "num_classes": len(made),
        "extensions": exts,
        "class_folder_width": cw,
        "file_name_width": kw,
    }
