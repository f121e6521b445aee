"""Training input throughput: how close does the trainer's input pipeline get to bare JPEG decoding, and what does
each augmentation cost?

    python benchmarks/data.py --images 2000 --workers 2 [--markdown docs/benchmarks.md]

Builds a temporary set of 112x112 JPEGs (the Glint360K sample in ../shared/data/glint_sample when present, cycled to
``--images`` files; otherwise synthetic face-like JPEGs made with Pillow), packs it to RecordIO with ``pack_folder``,
then measures images per second of:

* ``decode`` -- Pillow decode of the in-memory JPEG bytes to an RGB uint8 array (``decode_image``), in 1 process and
  in ``--workers`` processes (a fork Pool; each process decodes its share of the bytes): the baseline;
* ``pipeline`` -- the trainer's own input (``facesphere.train.data``: ``build_train_set`` + ``make_loader``, the seeded
  per-sample augmentations, uint8 batches; ``--workers`` workers, batch ``--batch-size``) over RecordIO and over the
  image folder, with the default flip only, with each augmentation switched on alone, and with all of them (the FIW
  recipe's set), iterated in the main process as the training loop does.

The baseline for the pipeline target (ratio >= 0.85) is ``decode`` in the **same number of processes** as loader
workers: with W workers the loader may decode W images at a time. Pipeline rates are over a whole epoch of
``--images`` images (the trainer starts its workers once per run; their start-up is included, as a run pays it).
Every figure is the median over ``--repeats`` interleaved repeats.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from heads import machine, write_section  # noqa: E402

from facesphere.data.datasets import ImageFolderDataset
from facesphere.data.image import decode_image
from facesphere.data.recordio import pack_folder
from facesphere.run.config import load_config
from facesphere.train.data import build_train_set, make_loader

HERE = os.path.dirname(os.path.abspath(__file__))
GLINT = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "glint_sample", "images"))


# ---- data ---------------------------------------------------------------------------------------------------------


def synth_jpeg(rng: np.random.Generator, size: int = 112) -> bytes:
    from PIL import Image, ImageFilter

    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(40, 72, 2)
    face = np.exp(-(((x - cx) / rng.uniform(25, 35)) ** 2 + ((y - cy) / rng.uniform(30, 40)) ** 2))
    base = rng.uniform(60, 200, 3)[None, None, :] * (0.4 + 0.6 * face[:, :, None])
    noise = rng.normal(0, 18, (size, size, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    im = Image.fromarray(arr).filter(ImageFilter.GaussianBlur(1.0))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(85, 96)))
    return buf.getvalue()


def build_folder(dst: str, n: int, source: str | None, classes: int = 24) -> str:
    """Write ``n`` JPEGs under ``dst/<class>/``; returns a description of where they came from."""
    if source and os.path.isdir(source):
        files = []
        for ident in sorted(os.listdir(source)):
            d = os.path.join(source, ident)
            if os.path.isdir(d):
                files.extend((ident, os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.lower().endswith(".jpg"))
        if files:
            for i in range(n):
                ident, path = files[i % len(files)]
                out = os.path.join(dst, ident)
                os.makedirs(out, exist_ok=True)
                shutil.copyfile(path, os.path.join(out, f"{i:07d}.jpg"))
            return f"Glint360K sample ({len(files)} real aligned 112x112 JPEGs, cycled)"
    rng = np.random.default_rng(0)
    for i in range(n):
        out = os.path.join(dst, f"id{i % classes:03d}")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{i:07d}.jpg"), "wb") as f:
            f.write(synth_jpeg(rng))
    return "synthetic 112x112 JPEGs (Pillow)"


# ---- measurements -------------------------------------------------------------------------------------------------

_BYTES: list[bytes] = []

#: augmentation settings measured alone and together (the FIW recipe's set is ALL)
AUGMENTATIONS = {
    "flip (default)": [],
    "+ random resized crop (scale 0.8)": ["--data.crop_scale", "0.8"],
    "+ down-scaling (p 0.2, >= 0.5)": ["--data.down_prob", "0.2"],
    "+ Gaussian blur (p 0.2)": ["--data.blur_prob", "0.2"],
    "+ colour jitter (0.3)": ["--data.color_jitter", "0.3"],
    "+ grayscale (p 0.3)": ["--data.gray_prob", "0.3"],
}
ALL = ["--data.crop_scale", "0.8", "--data.down_prob", "0.2", "--data.blur_prob", "0.2", "--data.color_jitter", "0.3",
       "--data.gray_prob", "0.3"]


def _decode_range(bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    for i in range(lo, hi):
        decode_image(_BYTES[i], source="bench")
    return hi - lo


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the given processes so far (Linux ``/proc``; 0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS
        except (OSError, IndexError, ValueError):
            pass
    return total


class _Clock:
    """Wall time, and CPU time of this process plus ``pids``."""

    def __init__(self, pids: list[int] | None = None):
        self.pids = pids or []
        self.wall = time.perf_counter()
        self.cpu = time.process_time() + _cpu_seconds(self.pids)

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() + _cpu_seconds(self.pids) - self.cpu


def time_inline(fn, n: int) -> tuple[float, float]:
    """(images/s, CPU microseconds per image)."""
    clock = _Clock()
    fn((0, n))
    wall, cpu = clock.stop()
    return n / wall, cpu / n * 1e6


def time_pool(pool, fn, n: int, workers: int) -> tuple[float, float]:
    clock = _Clock([p.pid for p in getattr(pool, "_pool", [])])
    done = sum(pool.map(fn, _split(n, workers), chunksize=1))
    wall, cpu = clock.stop()
    return done / wall, cpu / done * 1e6


def time_pipeline(spec: str, extra: list[str], images: int, batch: int, workers: int) -> float:
    """Images/s of one epoch of the trainer's input pipeline over ``spec``."""
    config = load_config(None, ["--data.train", spec, "--data.batch_size", str(batch), "--data.num_workers",
                                str(workers), *extra])
    train_set = build_train_set(config)
    steps = len(train_set.samples) // batch
    loader = make_loader(train_set, config, start=0, total=steps)
    start = time.perf_counter()
    n = 0
    for images, labels, num_bad in loader:
        n += int(labels.shape[0])
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--source", default=GLINT, help="folder of <identity>/*.jpg to copy (default: the Glint sample)")
    ap.add_argument("--synthetic", action="store_true", help="synthesize JPEGs even if the Glint sample is present")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--markdown", default=None, help="also write the table into this markdown file's data section")
    args = ap.parse_args(argv)

    global _BYTES
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="facesphere-bench-data-")
    try:
        folder = os.path.join(tmp, "images")
        what = build_folder(folder, args.images, None if args.synthetic else args.source)
        rec_prefix = os.path.join(tmp, "rec", "train")
        pack_folder(folder, rec_prefix, progress=False)
        _BYTES = [open(p, "rb").read() for p in ImageFolderDataset(folder).paths]
        n = len(_BYTES)
        w = args.workers
        mean_kb = sum(map(len, _BYTES)) / n / 1024
        pipelines = {"rec " + name: (f"rec:{rec_prefix}", extra) for name, extra in AUGMENTATIONS.items()}
        pipelines["folder flip (default)"] = (f"folder:{folder}", [])
        pipelines["rec all of the above"] = (f"rec:{rec_prefix}", ALL)
        ctx = multiprocessing.get_context("fork")
        results: dict[str, list[float]] = {}

        def add(key: str, value: float) -> None:
            results.setdefault(key, []).append(value)

        load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        time_pipeline(*pipelines["rec flip (default)"], n, args.batch_size, w)  # warm the page cache
        with ctx.Pool(w) as pool:
            pool.map(_decode_range, _split(min(n, 64 * w), w))  # warm the pool
            for _ in range(args.repeats):
                for key, (rate, cpu) in (("decode_1", time_inline(_decode_range, n)),
                                         ("decode_w", time_pool(pool, _decode_range, n, w))):
                    add(key, rate)
                    add(f"{key}_cpu", cpu)
                for name, (spec, extra) in pipelines.items():
                    add(name, time_pipeline(spec, extra, n, args.batch_size, w))
        load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        med = {k: statistics.median(v) for k, v in results.items()}
        base = med["decode_w"]
        rows = [("decode, 1 process", "decode_1"), (f"decode, {w} processes (baseline)", "decode_w")]
        rows += [(f"pipeline from RecordIO, {w} workers, {name[4:]}", name) for name in pipelines if
                 name.startswith("rec ")]
        rows.insert(3, (f"pipeline from folder, {w} workers, flip (default)", "folder flip (default)"))
        lines = [
            f"machine: {machine()}; torch {torch.__version__}, {platform.python_implementation()} "
            f"{platform.python_version()}",
            f"data: {n} images, {what}, mean {mean_kb:.1f} KiB; batch {args.batch_size}; medians of {args.repeats} "
            f"repeats; 1-min load average {load_start:.2f} -> {load_end:.2f}",
            "",
            "| measurement | images/s | ratio to baseline |",
            "|---|---:|---:|",
        ]
        for name, key in rows:
            lines.append(f"| {name} | {med[key]:,.0f} | {med[key] / base:.2f} |")
        lines.append("")
        ratio_rec = med["rec flip (default)"] / base
        ratio_folder = med["folder flip (default)"] / base
        verdict = "meets" if min(ratio_rec, ratio_folder) >= 0.85 else "misses"
        lines.append(
            f"pipeline/raw-decode throughput ratio (same process count, flip only): RecordIO {ratio_rec:.2f}, folder "
            f"{ratio_folder:.2f} -> {verdict} the 0.85 target; with every augmentation on: "
            f"{med['rec all of the above'] / base:.2f}"
        )
        table = "\n".join(lines)
        print(table)
        if args.markdown:
            write_section(Path(args.markdown), "data", table)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"medians": med, "all": results, "images": n, "workers": w, "machine": machine()}, f,
                          indent=2)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
