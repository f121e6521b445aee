"""Decision thresholds of the known public recognisers, measured on the shared LFW (the numbers in
``facesphere.infer.thresholds.KNOWN_THRESHOLDS`` and docs/results.md, section "thresholds").

    python benchmarks/thresholds.py --lfw /path/to/lfw_scrfd              # an aligned LFW folder (pairs.txt + images/)
    python benchmarks/thresholds.py --work /tmp/thr --markdown docs/results.md   # aligns the shared LFW first

The LFW folder is the shared grayscale LFW aligned by SCRFD-2.5G to the ArcFace template, as
``facesphere data align ../shared/data/lfw/images DIR/images --detector scrfd_2.5g_bnkps.onnx --choose central``
makes it (``pairs.txt`` copied beside). For each model the official View-2 pairs (6,000, the file's 10 folds) are
scored (flip-sum, cosine) and the script prints:

* the accuracy-optimal threshold (mean of the exact 10-fold thresholds, what ``facesphere eval`` prints), with the
  FAR and TAR it gives over all 6,000 pairs;
* the thresholds at FAR 1e-1, 1e-2 and 1e-3 (:func:`facesphere.infer.thresholds.threshold_at_far`: the smallest
  threshold accepting at most ⌊FAR·3000⌋ of the 3,000 impostor pairs), each with its TAR.

With 3,000 impostor pairs the FAR 1e-3 threshold rests on the 4th-highest impostor score: read it as an estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESPHERE_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

MODELS = {
    "face_recognition_sface": ("SFace (OpenCV Zoo, int8bq)",
                               SHARED / "models" / "face_recognition_sface_2021dec_int8bq.onnx"),
    "mobilefacenet_128d": ("MobileFaceNet-128 (ONNX)", SHARED / "models" / "mobilefacenet_128d.onnx"),
}
FARS = (1e-1, 1e-2, 1e-3)


def aligned_lfw(work: Path) -> Path:
    from facesphere.infer.align_folder import align_folder

    out = work / "lfw_scrfd"
    align_folder(SHARED / "data" / "lfw" / "images", out / "images", SHARED / "models" / "scrfd_2.5g_bnkps.onnx",
                 choose="central", progress=True)
    if not (out / "pairs.txt").is_file():
        shutil.copy(SHARED / "data" / "lfw" / "pairs.txt", out / "pairs.txt")
    return out


def measure(model_path: Path, lfw: Path) -> dict:
    import numpy as np

    from facesphere.data.pairs import open_pair_set
    from facesphere.evaluate.verification import verify_pairs
    from facesphere.infer.embedders import load_embedder
    from facesphere.infer.thresholds import far_key, rates_at, threshold_at_far

    embedder = load_embedder(model_path)
    pairs = open_pair_set(f"lfw:{lfw}", image_size=embedder.input_size)
    metrics, scores = verify_pairs(embedder, pairs, batch_size=64, flip="sum")
    issame = np.asarray(pairs.issame, dtype=bool)
    optimal = float(metrics["threshold"])
    far, tar = rates_at(scores, issame, optimal)
    at_far = {}
    for rate in FARS:
        value = math.ceil(threshold_at_far(scores[~issame], rate) * 1e4) / 1e4  # rounded up: the FAR stays <= rate
        got_far, got_tar = rates_at(scores, issame, value)
        at_far[far_key(rate)] = {"threshold": value, "far": got_far, "tar": got_tar}
    return {"pairs": int(issame.size), "impostors": int((~issame).sum()), "accuracy": metrics["accuracy"],
            "accuracy_std": metrics["accuracy_std"], "threshold": round(optimal, 4), "far": far, "tar": tar,
            "at_far": at_far}


def table(results: dict, lfw: Path) -> str:
    lines = [
        "### Decision thresholds of the known public models",
        "",
        "Produced by `python benchmarks/thresholds.py --lfw DIR` (DIR: the SCRFD-aligned LFW of the evaluation section "
        "above; without `--lfw` the script aligns it first) on LFW View 2 (the shared grayscale copy, 6,000 pairs of "
        "which 3,000 impostor, the file's 10 folds), flip-sum cosine scores. These are the thresholds `verify`, "
        "`gallery search` and `FaceRecognizer` use for these models (`facesphere.infer.thresholds.KNOWN_THRESHOLDS`): "
        "the accuracy-optimal one (mean of the 10 fold thresholds) by default, the others with `--far`. FAR and TAR "
        "are over all 6,000 pairs, in percent; thresholds are cosines (those at a FAR rounded up to 4 decimals, so "
        "their FAR stays at most the target).",
        "",
        "| recogniser | 10-fold accuracy % | accuracy-optimal threshold | its FAR % | its TAR % | "
        + " | ".join(f"threshold @ FAR {far_key_text(r)} (TAR %)" for r in FARS) + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(FARS),
    ]
    reading = []
    for name, r in results.items():
        cells = [f"{r['at_far'][k]['threshold']:.4f} ({100 * r['at_far'][k]['tar']:.2f})" for k in r["at_far"]]
        lines.append(f"| {name} | {100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f} | {r['threshold']:.4f} | "
                     f"{100 * r['far']:.2f} | {100 * r['tar']:.2f} | " + " | ".join(cells) + " |")
        reading.append(f"{name.split(' (')[0]}'s accuracy-optimal threshold accepts "
                       f"{round(r['far'] * r['impostors']):,} of the {r['impostors']:,} impostor pairs")
    if results:
        strict = "; ".join(f"{name.split(' (')[0]}: {r['at_far']['1e-03']['threshold']:.4f}"
                           for name, r in results.items())
        lines += ["", "Reading: " + "; ".join(reading) + ". A gallery search compares "
                  "a stranger with every enrolled identity, so its chance of a false name grows with the gallery: for "
                  f"open-set search over more than a handful of people prefer `--far 1e-3` ({strict}). With 3,000 "
                  "impostor pairs the FAR 1e-3 thresholds rest on the 4th-highest impostor score: read them as "
                  "estimates."]
    return "\n".join(lines)


def far_key_text(rate: float) -> str:
    return f"{rate:.0e}".replace("e-0", "e-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=None, help="an aligned LFW folder (pairs.txt + images/)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/facesphere_thresholds"),
                        help="where to align the shared LFW when --lfw is not given")
    parser.add_argument("--markdown", type=Path, default=None, help="rewrite the thresholds section of this file")
    args = parser.parse_args(argv)
    lfw = args.lfw or aligned_lfw(args.work)
    results = {}
    for prefix, (name, path) in MODELS.items():
        if not path.is_file():
            print(f"skipping {name}: {path} not found")
            continue
        results[name] = {"prefix": prefix, **measure(path, lfw)}
        print(name, json.dumps(results[name], indent=1))
    text = table(results, lfw)
    print(text)
    if args.markdown is not None:
        from heads import write_section

        write_section(args.markdown, "thresholds", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
