"""Inference speed: embeddings/s of PyTorch eager vs the exported ONNX model in onnxruntime, and detection +
alignment images/s.

    python benchmarks/infer.py                # full table, written into docs/benchmarks.md (section "infer")
    python benchmarks/infer.py --quick --no-write

* Recognisers: mobilefacenet and iresnet50 (512-d, random weights: speed does not depend on the values), batch 1
  and 32, 112x112 RGB uint8 crops in, L2-normalised embeddings out (no flip), through the same
  :class:`facesphere.infer.embedders.Embedder` code path a user calls. The ONNX model is exported by
  :func:`facesphere.infer.export.export_onnx` (which also checks it against PyTorch) in the same run; the ratio is
  ONNX images/s over eager images/s.
* Real ONNX recognisers from ``../shared/models`` when present (SFace in OpenCV DNN, MobileFaceNet-128 in
  onnxruntime).
* Detection + 5-point alignment: SCRFD-2.5G, YuNet and MTCNN on LFW photos (250x250) from ``../shared/data``, images/s of
  ``detect_and_align`` (decode excluded).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESPHERE_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def images_per_second(fn, batch: np.ndarray, min_time: float, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn(batch)
    count, start = 0, time.perf_counter()
    while True:
        fn(batch)
        count += len(batch)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return count / elapsed


def recogniser_rows(names: list[str], batches: list[int], min_time: float) -> list[dict]:
    from facesphere import build_backbone
    from facesphere.infer.export import export_onnx
    from facesphere.infer.embedders import load_embedder

    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            module = build_backbone(name, embed_dim=512).eval()
            params = sum(parameter.numel() for parameter in module.parameters())
            eager = load_embedder(module)
            onnx_path = Path(folder) / f"{name}.onnx"
            report = export_onnx(eager, onnx_path, exporter="dynamo", batch_sizes=(1, 2))
            onnx = load_embedder(onnx_path, backend="onnxruntime")
            for batch_size in batches:
                batch = rng.integers(0, 256, size=(batch_size, 112, 112, 3), dtype=np.uint8)
                t_eager = images_per_second(lambda b: eager.embed(b, flip="none", batch_size=batch_size), batch,
                                            min_time)
                t_onnx = images_per_second(lambda b: onnx.embed(b, flip="none", batch_size=batch_size), batch,
                                           min_time)
                rows.append({"model": f"{name} ({params / 1e6:.2f} M parameters)", "batch": batch_size, "eager": t_eager, "onnx": t_onnx,
                             "ratio": t_onnx / t_eager, "max_rel_diff": report["max_rel_diff"]})
                print(f"  {name:<14} batch {batch_size:>3}: eager {t_eager:8.1f} img/s, onnxruntime {t_onnx:8.1f} "
                      f"img/s ({t_onnx / t_eager:.2f}x)", flush=True)
    return rows


def real_recogniser_rows(batches: list[int], min_time: float) -> list[dict]:
    from facesphere.infer.embedders import load_embedder

    rows = []
    rng = np.random.default_rng(1)
    for file in ("mobilefacenet_128d.onnx", "face_recognition_sface_2021dec_int8bq.onnx"):
        path = SHARED / "models" / file
        if not path.is_file():
            continue
        embedder = load_embedder(path)
        for batch_size in batches:
            batch = rng.integers(0, 256, size=(batch_size, 112, 112, 3), dtype=np.uint8)
            speed = images_per_second(lambda b: embedder.embed(b, flip="none", batch_size=batch_size), batch,
                                      min_time)
            rows.append({"model": file, "backend": type(embedder).__name__, "batch": batch_size, "speed": speed})
            print(f"  {file:<44} batch {batch_size:>3}: {speed:8.1f} img/s ({type(embedder).__name__})", flush=True)
    return rows


#: (label, file under ../shared/models, build_detector options) of the detection rows.
DETECTION_SETUPS = (
    ("SCRFD-2.5G (default: photo fed at its own size, padded to 32)", "scrfd_2.5g_bnkps.onnx", {}),
    ("SCRFD-2.5G, upscale=True (640x640, InsightFace's way)", "scrfd_2.5g_bnkps.onnx", {"upscale": True}),
    ("YuNet int8bq (OpenCV)", "face_detection_yunet_2023mar_int8bq.onnx", {}),
    ("MTCNN (min_face_size 20, threads=1)", "mtcnn", {}),
    ("MTCNN, threads=None (onnxruntime's default)", "mtcnn", {"threads": None}),
)


def detection_rows(count: int) -> list[dict]:
    from facesphere.data.align import align_face
    from facesphere.data.image import read_image
    from facesphere.infer.detectors import build_detector, detect_and_align

    lfw = SHARED / "data" / "lfw" / "images"
    if not lfw.is_dir():
        return []
    paths = sorted(lfw.glob("*/*.jpg"))[:count]
    images = [read_image(p) for p in paths]
    rows = []
    landmarks = None
    for label, file, options in DETECTION_SETUPS:
        path = SHARED / "models" / file
        if not path.exists():
            continue
        detector = build_detector(path, **options)
        detect_and_align(images[0], detector)  # warm-up
        found, points = 0, []
        start = time.perf_counter()
        for image in images:
            aligned, face = detect_and_align(image, detector)
            found += aligned is not None
            points.append(None if face is None else face.landmarks)
        elapsed = time.perf_counter() - start
        landmarks = landmarks or points
        rows.append({"detector": label, "images": len(images), "speed": len(images) / elapsed,
                     "found": found / len(images)})
        print(f"  {label:<62} {len(images) / elapsed:7.1f} img/s, face found in {found}/{len(images)}", flush=True)
    if landmarks:  # the warp alone, on the first detector's landmarks
        known = [(image, points) for image, points in zip(images, landmarks) if points is not None]
        start = time.perf_counter()
        for image, points in known:
            align_face(image, points)
        elapsed = time.perf_counter() - start
        rows.append({"detector": "alignment alone (align_face, 112x112, landmarks given)", "images": len(known),
                     "speed": len(known) / elapsed, "found": 1.0})
    return rows


#: the 1-minute load average when the run started (other jobs on the machine), or None
LOAD_BEFORE = os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def machine() -> str:
    load = "" if LOAD_BEFORE is None else f", load average {LOAD_BEFORE:.1f} when the run started"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
            f" ({torch.get_num_threads()} threads){load}")


def tables(recognisers: list[dict], real: list[dict], detection: list[dict], command: str) -> str:
    lines = [f"Measured by `{command}` on {machine()}.", "",
             "| recogniser (512-d, random weights) | batch | PyTorch eager img/s | ONNX Runtime img/s | ONNX / eager |"
             " export check (max rel. diff) |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in recognisers:
        lines.append(f"| {row['model']} | {row['batch']} | {row['eager']:.1f} | {row['onnx']:.1f} | "
                     f"{row['ratio']:.2f}x | {row['max_rel_diff']:.1e} |")
    if real:
        lines += ["", "| real ONNX recogniser (../shared/models) | backend | batch | img/s |", "|---|---|---:|---:|"]
        for row in real:
            lines.append(f"| {row['model']} | {row['backend']} | {row['batch']} | {row['speed']:.1f} |")
    if detection:
        lines += ["", "| detector + 5-point alignment (LFW 250x250 photos) | images | img/s | face found |",
                  "|---|---:|---:|---:|"]
        for row in detection:
            lines.append(f"| {row['detector']} | {row['images']} | {row['speed']:.1f} | {row['found']:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mobilefacenet only, shorter timings")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--detection-images", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    names = ["mobilefacenet"] if args.quick else ["mobilefacenet", "iresnet50"]
    min_time = 1.0 if args.quick else args.min_time
    print("recognisers: PyTorch eager vs exported ONNX in onnxruntime")
    recognisers = recogniser_rows(names, [1, 32], min_time)
    print("real ONNX recognisers")
    real = real_recogniser_rows([1, 32], min_time)
    print("detection + alignment")
    detection = detection_rows(50 if args.quick else args.detection_images)
    command = "python benchmarks/infer.py" + (" --quick" if args.quick else "")
    text = tables(recognisers, real, detection, command)
    print(text)
    if not args.no_write:
        from heads import write_section

        write_section(ROOT / "docs" / "benchmarks.md", "infer", "## Inference\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
