"""Loader throughput: how close does the training DataLoader get to bare JPEG decoding?

    python benchmarks/data.py --images 2000 --workers 2

Builds a temporary set of 112x112 JPEGs (the Glint360K sample in ../shared/data/glint_sample when present, cycled to
``--images`` files; otherwise synthetic faces-like JPEGs made with Pillow), packs it to RecordIO with ``pack_folder``,
then measures images per second of:

* ``decode``            -- Pillow decode of the in-memory JPEG bytes to an RGB uint8 array (``decode_image``), in
  1 process and in ``--workers`` processes (a fork Pool; each process decodes its share of the bytes);
* ``decode+transform``  -- the same plus the training transform (random flip + normalise to a float32 CHW tensor);
* ``loader (rec)``      -- ``make_train_loader`` over ``RecordIODataset`` (``--workers`` workers, batch
  ``--batch-size``, flip + normalise), iterated in the main process;
* ``loader (folder)``   -- the same over ``ImageFolderDataset``.

The baseline for the loader target (ratio >= 0.85) is ``decode`` in the **same number of processes** as loader
workers: with W workers the loader may decode W images at a time, so comparing it with a single process would flatter
it. The loader also reads the files, transforms, collates and ships float32 batches between processes, all of which
the bare decode does not do. Loader rates are steady state (from the first batch to the last, with persistent
workers, after a warm-up epoch); the full-epoch rate including the pipeline's start-up is printed beside it. Every
figure is the median over ``--repeats`` interleaved repeats.
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
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from facesphere.data.datasets import ImageFolderDataset, RecordIODataset
from facesphere.data.loader import make_train_loader
from facesphere.data.image import decode_image
from facesphere.data.recordio import pack_folder
from facesphere.data.transforms import build_train_transform

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
_TRANSFORM = None


def _decode_range(bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    for i in range(lo, hi):
        decode_image(_BYTES[i], source="bench")
    return hi - lo


def _decode_transform_range(bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    t = _TRANSFORM
    for i in range(lo, hi):
        t(decode_image(_BYTES[i], source="bench"))
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


def time_loader(loader) -> tuple[float, float, float]:
    """(steady-state images/s from the first batch to the last, full-epoch images/s, CPU us per image)."""
    iterator = getattr(loader, "_iterator", None)
    pids = [w.pid for w in getattr(iterator, "_workers", [])]
    clock = _Clock(pids)
    start = time.perf_counter()
    first_t = None
    first_n = 0
    n = 0
    for images, labels, num_bad in loader:
        n += int(labels.shape[0])
        if first_t is None:
            first_t = time.perf_counter()
            first_n = n
    end = time.perf_counter()
    _, cpu = clock.stop()
    steady = (n - first_n) / (end - first_t) if first_t is not None and end > first_t else float("nan")
    return steady, n / (end - start), cpu / max(n, 1) * 1e6


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--source", default=GLINT, help="folder of <identity>/*.jpg to copy (default: the Glint sample)")
    ap.add_argument("--synthetic", action="store_true", help="synthesize JPEGs even if the Glint sample is present")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    global _BYTES, _TRANSFORM
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="facesphere-bench-data-")
    try:
        folder = os.path.join(tmp, "images")
        what = build_folder(folder, args.images, None if args.synthetic else args.source)
        pack_folder(folder, os.path.join(tmp, "rec", "train"), progress=False)
        rec_ds = RecordIODataset(os.path.join(tmp, "rec", "train"), transform=build_train_transform())
        folder_ds = ImageFolderDataset(folder, transform=build_train_transform())
        _BYTES = [open(p, "rb").read() for p in folder_ds.paths]
        _TRANSFORM = build_train_transform()
        n = len(_BYTES)
        w = args.workers
        mean_kb = sum(map(len, _BYTES)) / n / 1024

        rec_prefix = os.path.join(tmp, "rec", "train")

        def loader(ds, where="main"):
            return make_train_loader(ds, args.batch_size, num_workers=w, drop_last=False, seed=0, normalize_in=where)

        loaders = {
            "rec": loader(rec_ds),
            "folder": loader(folder_ds),
            "rec_worker": loader(RecordIODataset(rec_prefix, transform=build_train_transform()), "worker"),
            "rec_u8": loader(RecordIODataset(rec_prefix, transform=build_train_transform()), "none"),
        }
        for loader in loaders.values():  # warm-up: start the persistent workers, fill the page cache
            time_loader(loader)
        ctx = multiprocessing.get_context("fork")
        results: dict[str, list[float]] = {}

        def add(key: str, value: float) -> None:
            results.setdefault(key, []).append(value)

        load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        with ctx.Pool(w) as pool:
            pool.map(_decode_range, _split(min(n, 64 * w), w))  # warm the pool
            for _ in range(args.repeats):
                for key, (rate, cpu) in (
                    ("decode_1", time_inline(_decode_range, n)),
                    ("decode_tf_1", time_inline(_decode_transform_range, n)),
                    ("decode_w", time_pool(pool, _decode_range, n, w)),
                    ("decode_tf_w", time_pool(pool, _decode_transform_range, n, w)),
                ):
                    add(key, rate)
                    add(f"{key}_cpu", cpu)
                for name, loader in loaders.items():
                    steady, full, cpu = time_loader(loader)
                    add(f"loader_{name}", steady)
                    add(f"loader_{name}_full", full)
                    add(f"loader_{name}_cpu", cpu)
        load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        med = {k: statistics.median(v) for k, v in results.items()}
        base = med["decode_w"]

        rows = [
            ("decode, 1 process", "decode_1", False),
            ("decode + flip + normalise, 1 process", "decode_tf_1", False),
            (f"decode, {w} processes (baseline)", "decode_w", False),
            (f"decode + flip + normalise, {w} processes", "decode_tf_w", False),
            (f"loader from RecordIO, {w} workers (default)", "loader_rec", True),
            (f"loader from folder, {w} workers (default)", "loader_folder", True),
            (f"loader from RecordIO, {w} workers, normalise in the workers", "loader_rec_worker", True),
            (f"loader from RecordIO, {w} workers, uint8 batches (normalise on the GPU)", "loader_rec_u8", True),
        ]
        base_cpu = med["decode_w_cpu"]
        lines = [
            f"machine: {machine()}; torch {torch.__version__}, {platform.python_implementation()} "
            f"{platform.python_version()}",
            f"data: {n} images, {what}, mean {mean_kb:.1f} KiB; batch {args.batch_size}; "
            f"medians of {args.repeats} repeats; 1-min load average {load_start:.2f} -> {load_end:.2f}",
            "",
            "| measurement | images/s | full epoch images/s | ratio to baseline | CPU us/image | CPU ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, key, is_loader in rows:
            rate, cpu = med[key], med[f"{key}_cpu"]
            full_s = f"{med[key + '_full']:,.0f}" if is_loader else ""
            lines.append(
                f"| {name} | {rate:,.0f} | {full_s} | {rate / base:.2f} | {cpu:,.0f} | {base_cpu / cpu:.2f} |"
            )
        lines.append("")
        ratio_rec = med["loader_rec"] / base
        ratio_folder = med["loader_folder"] / base
        verdict = "meets" if min(ratio_rec, ratio_folder) >= 0.85 else "misses"
        lines.append(
            f"loader/raw-decode throughput ratio (same process count): RecordIO {ratio_rec:.2f}, folder "
            f"{ratio_folder:.2f} -> {verdict} the 0.85 target (normalising in the workers: "
            f"{med['loader_rec_worker'] / base:.2f}; uint8 batches: {med['loader_rec_u8'] / base:.2f}). CPU ratio = "
            f"baseline CPU per image / this CPU per image (all processes; less sensitive to other load): RecordIO "
            f"{base_cpu / med['loader_rec_cpu']:.2f}, folder {base_cpu / med['loader_folder_cpu']:.2f}"
        )
        print("\n".join(lines))
        if args.json:
            with open(args.json, "w") as f:
                payload = {"medians": med, "all": results, "images": n, "workers": w, "machine": machine()}
                json.dump(payload, f, indent=2)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
