"""Embedding a folder (``facesphere embed`` / ``gallery add``): one call per image against the batched pipeline, with
and without decoding and detection overlapped with the model.

    python benchmarks/embed_folder.py [--images 200] [--rounds 3] [--markdown docs/benchmarks.md]

Three ways over the same files, interleaved round by round (median images/s reported, ratio against one call per
image in the same round):

* **one call per image**: ``FaceRecognizer.embed(path)`` in a loop (decode, detect, embed one image at a time);
* **batched**: ``FaceRecognizer.embed_files`` with ``workers=0`` (crops embedded ``batch_size`` at a time, decoding
  and detection in the same thread);
* **batched + overlapped**: ``embed_files`` with the default ``workers=2`` threads decoding and detecting ahead of
  the model (:mod:`facesphere.infer.pipeline`).

Cases: unaligned 250x250 LFW photos with SCRFD-2.5G detection, and aligned 112x112 Glint crops (no detector), both
with the MobileFaceNet-128 ONNX model in onnxruntime, flip-sum, batch 32; from ``../shared``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESPHERE_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

MODEL = SHARED / "models" / "mobilefacenet_128d.onnx"
DETECTOR = SHARED / "models" / "scrfd_2.5g_bnkps.onnx"


def files(folder: Path, count: int) -> list[Path]:
    paths = sorted(folder.glob("*/*.jpg"))
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def run_case(detector: Path | None, paths: list[Path], rounds: int, batch_size: int) -> dict[str, float]:
    import numpy as np

    import facesphere as fs

    ways = {}
    recognizers = {}
    for name, workers in (("one call per image", None), ("batched", 0), ("batched + overlapped", 2)):
        rec = fs.FaceRecognizer.from_path(MODEL, detector=detector)
        rec.batch_size = batch_size
        rec.workers = workers or 0
        recognizers[name] = rec
        ways[name] = []
    reference = None
    for _ in range(rounds):
        for name, rec in recognizers.items():
            start = time.perf_counter()
            if name == "one call per image":
                rows = [rec.embed(path, on_missing="nan")[0] for path in paths]
                features = np.stack(rows)
            else:
                features = rec.embed_files(paths).features
            ways[name].append(len(paths) / (time.perf_counter() - start))
            if name == "batched + overlapped":
                reference = features
    assert reference is not None
    return {name: statistics.median(speeds) for name, speeds in ways.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--markdown", type=Path, default=None, help="rewrite the embed-folder section of this file")
    args = parser.parse_args(argv)
    import torch

    cases = {
        f"{args.images} LFW photos 250x250, SCRFD-2.5G + MobileFaceNet-128": (DETECTOR,
                                                                             SHARED / "data" / "lfw" / "images"),
        f"{args.images} aligned Glint crops 112x112, MobileFaceNet-128": (None,
                                                                         SHARED / "data" / "glint_sample" / "images"),
    }
    lines = [
        f"Produced by `python benchmarks/embed_folder.py --images {args.images} --rounds {args.rounds}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__}; "
        f"batch {args.batch_size}, flip-sum, median of {args.rounds} interleaved rounds; images/s (ratio to one call "
        "per image).",
        "",
        "| folder | one call per image | batched | batched + overlapped (2 threads) |",
        "|---|---:|---:|---:|",
    ]
    for title, (detector, folder) in cases.items():
        if not folder.is_dir() or not MODEL.is_file() or (detector is not None and not detector.is_file()):
            print(f"skipping {title}: shared data / models not found")
            continue
        speeds = run_case(detector, files(folder, args.images), args.rounds, args.batch_size)
        base = speeds["one call per image"]
        cells = [f"{speed:.1f} ({speed / base:.2f}x)" for speed in speeds.values()]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
        print(title, speeds, flush=True)
    text = "\n".join(lines)
    print(text)
    if args.markdown is not None:
        from heads import write_section

        write_section(args.markdown, "embed-folder", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
