"""Real faces, end to end: detect -> align -> embed -> protocol, on the shared LFW and Glint sample.

    python benchmarks/real_faces.py [--all] [--models sface mobilefacenet] [--skip-export] [--work DIR] [--no-write]
    python benchmarks/real_faces.py --all --from-results      # rewrite the docs tables from WORK/results.json

Writes the tables of docs/results.md (sections "infer" and "eval"); every number below is computed here:

1. LFW (grayscale copy, official View-2 pairs): each 250x250 photo is detected (SCRFD-2.5G, and YuNet as a second
   detector) and aligned by its 5 landmarks to the ArcFace 112x112 template with ``facesphere data align``'s
   library function; a photo where no face is found falls back to its centre crop (counted in the table).
   ``facesphere eval``'s library function then scores the 6,000 pairs (flip-sum, exact 10-fold accuracy) for the
   SFace and MobileFaceNet ONNX models. A "no alignment" row (a fixed centre crop resized to 112x112) shows what
   alignment is worth.
2. Glint sample (already aligned, 24 identities): leave-one-out rank-1 identification of every image against all
   the others.
3. Export: a small SFNet trained here on the Glint sample (real faces, 24 identities) is exported to ONNX; its LFW
   accuracy in PyTorch and in onnxruntime must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESPHERE_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODELS = {
    "SFace (OpenCV Zoo, int8bq)": SHARED / "models" / "face_recognition_sface_2021dec_int8bq.onnx",
    "MobileFaceNet-128 (ONNX)": SHARED / "models" / "mobilefacenet_128d.onnx",
}
DETECTORS = {
    "SCRFD-2.5G": SHARED / "models" / "scrfd_2.5g_bnkps.onnx",
    "YuNet": SHARED / "models" / "face_detection_yunet_2023mar_int8bq.onnx",
}


def centre_crop(image: np.ndarray, side: int = 112, crop: int = 128) -> np.ndarray:
    """A fixed centre crop of ``crop`` px resized to ``side`` (the no-alignment baseline)."""
    from PIL import Image

    h, w = image.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    patch = image[top:top + crop, left:left + crop]
    return np.asarray(Image.fromarray(patch).resize((side, side), Image.BILINEAR))


def prepare_lfw(work: Path, detector_name: str | None) -> tuple[Path, dict]:
    """An LFW folder (``pairs.txt`` + ``images/``) of 112x112 crops: aligned by ``detector_name`` or centre crops."""
    from PIL import Image

    from facesphere.data.image import read_image

    lfw = SHARED / "data" / "lfw"
    tag = detector_name.lower().replace("-", "").replace(".", "") if detector_name else "centre_crop"
    out = work / f"lfw_{tag}"
    images_out = out / "images"
    info: dict = {"detector": detector_name}
    if detector_name:
        from facesphere.infer.align_folder import align_folder

        start = time.perf_counter()
        report = align_folder(lfw / "images", images_out, DETECTORS[detector_name], template="arcface",
                              choose="central", progress=True)
        info.update(seconds=time.perf_counter() - start, images=report.total, no_face=len(report.no_face),
                    several_faces=len(report.several_faces))
        for relative in report.no_face:  # fall back to the centre crop, and count it
            target = images_out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(centre_crop(read_image(lfw / "images" / relative))).save(target, quality=95)
    else:
        count = 0
        for path in sorted((lfw / "images").glob("*/*.jpg")):
            target = images_out / path.parent.name / path.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(centre_crop(read_image(path))).save(target, quality=95)
            count += 1
        info.update(images=count, no_face=0)
    shutil.copyfile(lfw / "pairs.txt", out / "pairs.txt")
    return out, info


def lfw_accuracy(model, folder: Path, out: Path, save_scores: bool = False) -> dict:
    from facesphere.evaluate.run import evaluate_model

    result = evaluate_model(model, [f"lfw:{folder}"], out, flip="sum", progress=True, save_scores=save_scores)
    (metrics,) = result["datasets"].values()
    return metrics


def protocol_variants(scores_file: Path) -> dict:
    """Every verification definition of ``facesphere.metrics`` on one set of saved LFW scores (no re-embedding)."""
    from facesphere.evaluate import metrics as M

    saved = np.load(scores_file)
    scores, issame, folds = saved["scores"], saved["issame"], saved["folds"]
    out: dict = {"accuracy": {}, "train_accuracy": {}}
    for method in ("exact", "insightface", "sphereface"):
        result = M.kfold_accuracy(scores, issame, method=method, folds=folds)
        out["accuracy"][method] = (result.mean, result.std, float(np.mean(result.thresholds)))
        out["train_accuracy"][method] = float(np.mean(result.train_accuracies))
    out["best_threshold_accuracy"] = M.best_threshold_accuracy(scores, issame)
    curve = M.roc(scores, issame)
    out["auc"] = M.auc(curve.fpr, curve.tpr)
    out["eer"] = M.eer(scores, issame)
    out["tar"] = [float(v) for v in M.tar_at_far(scores, issame, [1e-1, 1e-2, 1e-3], method="interpolate")]
    val = M.val_at_far(scores, issame, 1e-3, folds=folds)
    out["val"] = (val.val, val.val_std, val.far)
    return out


def glint_rank1(model_path: Path) -> dict:
    from facesphere.data.image import read_image
    from facesphere.infer.embedders import load_embedder

    root = SHARED / "data" / "glint_sample" / "images"
    paths = sorted(root.glob("*/*.jpg"))
    labels = np.asarray([p.parent.name for p in paths])
    embedder = load_embedder(model_path)
    features = embedder.embed([read_image(p) for p in paths], flip="sum")
    scores = features @ features.T
    np.fill_diagonal(scores, -np.inf)
    rank1 = float(np.mean(labels[scores.argmax(axis=1)] == labels))
    return {"images": len(paths), "identities": len(set(labels)), "rank1": rank1}


def train_glint_model(work: Path) -> Path:
    from facesphere.run.config import load_config
    from facesphere.train.loop import train

    run = work / "glint_sfnet"
    if (run / "best.pt").is_file() or (run / "checkpoints").is_dir():
        return run
    config = load_config(None, [
        "--data.train", f"folder:{SHARED / 'data' / 'glint_sample' / 'images'}", "--data.val", "[]",
        "--data.num_workers", "0", "--train.steps", "400", "--train.val_every", "0", "--train.quiet", "true",
        "--head.name", "arcface", "--head.s", "30", "--model.embed_dim", "128",
    ])
    train(config, out=run, progress=False, overwrite=True)  # no checkpoint there: nothing of worth to keep
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/facesphere_real_faces"),
                        help="cache of aligned crops, runs and eval outputs (reused when rerun)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--all", action="store_true",
                        help="also YuNet alignment and the no-alignment baseline (about 15 more minutes on 2 cores)")
    parser.add_argument("--models", nargs="+", choices=("sface", "mobilefacenet"), default=["sface", "mobilefacenet"])
    parser.add_argument("--skip-export", action="store_true", help="skip the train-export-compare step")
    parser.add_argument("--only", nargs="+", choices=("lfw", "glint", "export"), default=None,
                        help="recompute only these parts; the others are kept from WORK/results.json")
    parser.add_argument("--from-results", action="store_true",
                        help="compute nothing: rewrite the docs tables from WORK/results.json of an earlier run "
                             "(give that run's options too)")
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/real_faces.py"] + [
        option for option in (argv if argv is not None else sys.argv[1:]) if option != "--from-results"])
    if args.from_results:
        results = json.loads((args.work / "results.json").read_text())
        results.setdefault("command", command)
        return _finish(results, args.work, args)
    chosen = {name: path for name, path in MODELS.items()
              if ("sface" if name.startswith("SFace") else "mobilefacenet") in args.models}
    if not (SHARED / "data" / "lfw").is_dir():
        print(f"{SHARED}/data/lfw not found: nothing to do")
        return 1
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    parts = set(args.only or ("lfw", "glint", "export"))
    results: dict = {"lfw": [], "glint": [], "export": {}}
    if args.only and (work / "results.json").is_file():
        results.update(json.loads((work / "results.json").read_text()))
    if args.only and results.get("command"):  # say which run produced which rows
        command = f"{results['command']}; then {command}"
    results["command"] = command

    folders = {}
    for detector in (("SCRFD-2.5G", "YuNet", None) if args.all else ("SCRFD-2.5G",)):
        folder, info = prepare_lfw(work, detector)
        folders[detector] = (folder, info)
    if "lfw" in parts:
        results["lfw"] = []
    for model_name, model_path in chosen.items() if "lfw" in parts else ():
        for detector, (folder, info) in folders.items():
            if detector == "YuNet" and not model_name.startswith("SFace"):
                continue
            tag = f"{model_path.stem}_{folder.name}"
            # the protocol comparison (section "eval") uses SFace's scores on the SCRFD-aligned crops
            compare = model_name.startswith("SFace") and detector == "SCRFD-2.5G"
            metrics = lfw_accuracy(model_path, folder, work / "eval" / tag, save_scores=compare)
            if compare:
                results["protocols"] = {"model": model_name, "alignment": detector, "images": info["images"],
                                        "no_face": info["no_face"], "pairs": metrics["pairs"],
                                        **protocol_variants(work / "eval" / tag / f"scores_{folder.name}.npz")}
            row = {"model": model_name, "alignment": detector or "none (centre crop)", "no_face": info["no_face"],
                   "images": info["images"], "accuracy": metrics["accuracy"],
                   "accuracy_std": metrics["accuracy_std"], "threshold": metrics.get("threshold"),
                   "auc": metrics.get("auc"), "eer": metrics.get("eer"),
                   "tar@far=1e-3": (metrics.get("tar_at_far") or {}).get("1e-03")}
            results["lfw"].append(row)
            print(json.dumps(row), flush=True)
    if "glint" in parts:
        results["glint"] = []
    for model_name, model_path in chosen.items() if "glint" in parts else ():
        row = {"model": model_name, **glint_rank1(model_path)}
        results["glint"].append(row)
        print(json.dumps(row), flush=True)

    if args.skip_export or "export" not in parts:
        return _finish(results, work, args)
    from facesphere.infer.export import export_onnx

    run = train_glint_model(work)
    onnx_path = work / "glint_sfnet.onnx"
    export_report = export_onnx(run, onnx_path)
    scrfd_folder = folders["SCRFD-2.5G"][0]
    torch_metrics = lfw_accuracy(run, scrfd_folder, work / "eval" / "glint_sfnet_torch", save_scores=True)
    onnx_metrics = lfw_accuracy(onnx_path, scrfd_folder, work / "eval" / "glint_sfnet_onnx", save_scores=True)
    # pair by pair: how far the 6,000 cosine scores moved, and how many same / different decisions changed at the
    # PyTorch model's own (mean 10-fold) threshold
    scores = {name: np.load(work / "eval" / f"glint_sfnet_{name}" / f"scores_{scrfd_folder.name}.npz")["scores"]
              for name in ("torch", "onnx")}
    threshold = torch_metrics["threshold"]
    flipped = int(np.count_nonzero((scores["torch"] >= threshold) != (scores["onnx"] >= threshold)))
    results["export"] = {"max_rel_diff": export_report["max_rel_diff"], "torch": torch_metrics["accuracy"],
                         "onnx": onnx_metrics["accuracy"], "torch_auc": torch_metrics["auc"],
                         "onnx_auc": onnx_metrics["auc"], "torch_std": torch_metrics["accuracy_std"],
                         "onnx_std": onnx_metrics["accuracy_std"],
                         "max_score_diff": float(np.abs(scores["torch"] - scores["onnx"]).max()),
                         "pairs": int(scores["torch"].size), "decisions_changed": flipped}
    print(json.dumps(results["export"]), flush=True)
    return _finish(results, work, args)


def _finish(results: dict, work: Path, args: argparse.Namespace) -> int:
    (work / "results.json").write_text(json.dumps(results, indent=2))

    text = tables(results)
    print(text)
    if not args.no_write:
        from heads import write_section

        write_section(ROOT / "docs" / "results.md", "infer", text)
        if results.get("protocols"):
            write_section(ROOT / "docs" / "results.md", "eval",
                          protocol_table({**results["protocols"], "command": results["command"]}))
    return 0


def protocol_table(p: dict) -> str:
    """Section "eval": one recogniser's LFW scores under every definition ``facesphere eval`` offers."""
    acc, train = p["accuracy"], p["train_accuracy"]
    tar = " / ".join(f"{100 * v:.2f} %" for v in p["tar"])
    return "\n".join([
        f"### LFW (grayscale copy), {p['model']}, {p['alignment']} detection and ArcFace alignment",
        "",
        f"Produced by `{p['command'].split('; then')[0]}`: the same numbers as",
        "",
        "```",
        "facesphere data align ../shared/data/lfw/images lfw_aligned/images \\",
        "    --detector ../shared/models/scrfd_2.5g_bnkps.onnx --choose central",
        "cp ../shared/data/lfw/pairs.txt lfw_aligned/",
        "facesphere eval ../shared/models/face_recognition_sface_2021dec_int8bq.onnx --data lfw:lfw_aligned \\",
        "    --out eval_lfw_sface --save-scores",
        "```",
        "",
        f"Official View-2 protocol ({p['pairs']:,} pairs, the file's 10 folds, {p['images']:,} images, "
        f"{p['no_face']} without a detected face); flip-sum features; cosine scores. The rows other than the first "
        "are recomputed from the saved `scores_*.npz` with `facesphere.metrics`, with no second embedding.",
        "",
        "| metric (definition) | value |",
        "|---|---:|",
        f"| 10-fold accuracy, `exact` (default) | **{100 * acc['exact'][0]:.2f} % ± {100 * acc['exact'][1]:.2f}** "
        f"(mean threshold {acc['exact'][2]:.3f}) |",
        f"| 10-fold accuracy, `--accuracy insightface` | {100 * acc['insightface'][0]:.2f} % ± "
        f"{100 * acc['insightface'][1]:.2f} (threshold d = {acc['insightface'][2]:.3f}) |",
        f"| 10-fold accuracy, `--accuracy sphereface` | {100 * acc['sphereface'][0]:.2f} % ± "
        f"{100 * acc['sphereface'][1]:.2f} (threshold {acc['sphereface'][2]:.3f}) |",
        f"| best-threshold accuracy, no folds (opensphere) | {100 * p['best_threshold_accuracy']:.2f} % |",
        f"| AUC | {100 * p['auc']:.2f} % |",
        f"| EER | {100 * p['eer']:.2f} % |",
        f"| TAR @ FAR 1e-1 / 1e-2 / 1e-3 (interpolated) | {tar} |",
        f"| VAL @ FAR 1e-3 (insightface, 10-fold) | {100 * p['val'][0]:.2f} % ± {100 * p['val'][1]:.2f} "
        f"(FAR {100 * p['val'][2]:.2f} %) |",
        "",
        "Mean training-fold accuracy of the chosen thresholds: "
        + ", ".join(f"{name} {100 * train[name]:.3f} %" for name in ("exact", "sphereface", "insightface"))
        + " — the exact search is never below a grid on the folds it chooses on. Grayscale LFW costs colour-trained "
        "models a few tenths of a point (see `../shared/data/README.md`); quote these as \"LFW (grayscale copy)\".",
    ])


def tables(results: dict) -> str:
    lines = [
        f"Produced by `{results['command']}` (LFW: the shared **grayscale copy**, official View-2 pairs, "
        "flip-sum, exact 10-fold accuracy: mean ± std over the folds).",
        "",
        "| recogniser | detection + alignment | photos without a detected face | LFW accuracy | AUC | EER | "
        "TAR@FAR=1e-3 | mean threshold |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["lfw"]:
        lines.append(
            f"| {row['model']} | {row['alignment']} | {row['no_face']} / {row['images']} | "
            f"{100 * row['accuracy']:.2f} ± {100 * row['accuracy_std']:.2f} % | {row['auc']:.4f} | "
            f"{100 * row['eer']:.2f} % | {100 * (row['tar@far=1e-3'] or float('nan')):.2f} % | "
            f"{row['threshold']:.3f} |")
    lines += ["", "Photos where the detector finds no face are replaced by their centre crop (counted above).", "",
              "| recogniser | Glint sample (aligned) | leave-one-out rank-1 |", "|---|---|---:|"]
    for row in results["glint"]:
        lines.append(f"| {row['model']} | {row['images']} images, {row['identities']} identities | "
                     f"{100 * row['rank1']:.2f} % |")
    e = results["export"]
    if not e:
        return "\n".join(lines)
    lines += ["", "`facesphere export` of a small SFNet-4 (128-d) trained here on the Glint sample (24 identities, "
              "400 steps; a weak model, and that is not the point: the two rows must agree), LFW aligned by SCRFD:",
              "", "| model | LFW accuracy | AUC |", "|---|---:|---:|",
              f"| PyTorch eager | {100 * e['torch']:.2f} ± {100 * e.get('torch_std', float('nan')):.2f} % | "
              f"{e['torch_auc']:.6f} |",
              f"| exported ONNX in onnxruntime | {100 * e['onnx']:.2f} ± {100 * e.get('onnx_std', float('nan')):.2f} % "
              f"| {e['onnx_auc']:.6f} |"]
    if "max_score_diff" in e:
        lines += ["", f"Export check (random crops): max relative feature difference {e['max_rel_diff']:.1e}. "
                      f"Over the {e['pairs']:,} LFW pairs the cosine scores differ by at most "
                      f"{e['max_score_diff']:.1e}, and {e['decisions_changed']} same / different decisions change at "
                      "the PyTorch threshold."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
