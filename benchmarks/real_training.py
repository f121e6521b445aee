"""Training on real faces: every head on Families in the Wild, tested on LFW; the papers' claims checked.

    python benchmarks/real_training.py prepare                 # LFW aligned (SCRFD), FIW/LFW overlap, FIW split
    python benchmarks/real_training.py recipe                  # the recipe's default head at its full budget
    python benchmarks/real_training.py heads [--heads arcface cosface ...]   # the comparison, one head per call ok
    python benchmarks/real_training.py optimiser               # facesphere's optimiser defaults vs the papers'
    python benchmarks/real_training.py stability [--seeds 0 1 2]
    python benchmarks/real_training.py noise
    python benchmarks/real_training.py write                   # the docs/results.md tables from WORK/results.json

Data: ``../shared/data/fiw`` (15,825 faces of 3,020 people in 571 families, aligned 112x112) for training; LFW (the
shared grayscale copy, official View-2 pairs) for testing, each photo detected and aligned by SCRFD-2.5G with
``facesphere data align``'s library function (as in docs/results.md). ``prepare`` runs, as a user would with the CLI:

1. ``facesphere data overlap`` of FIW against LFW with the public SFace model (grayscale on both sides, the test copy
   being grey): the FIW people who are also LFW people go to ``WORK/fiw_overlap/overlap.txt``;
2. ``facesphere data split`` of the rest of FIW: whole families held out (~10 % of the identities with 2+ images), 10
   folds of 300 pairs that no family crosses -> ``WORK/fiw_split/heldout_pairs.txt`` and ``heldout_identities.txt``.

Every run trains the recipe (``configs/fiw_sfnet20_arcface.yaml`` unless ``--recipe``) on FIW minus both lists, with
the FIW held-out pairs as its validation set (hyper-parameters are chosen there, never on LFW), then evaluates the
final model on LFW and on the FIW held-out pairs (exact 10-fold accuracy, AUC, TAR@FAR=1e-3). Results are merged into
``WORK/results.json`` part by part; ``write`` turns them into the tables of docs/results.md. Steps, not wall time,
fix each run's budget (the numbers do not depend on the machine's load); wall time and images/s are recorded as
measured, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from real_faces import SHARED, prepare_lfw  # noqa: E402

from facesphere.data.split import make_heldout_split  # noqa: E402
from facesphere.errors import TrainingError, TrainingInterrupted  # noqa: E402
from facesphere.files import atomic_write, atomic_write_text  # noqa: E402
from facesphere.evaluate.run import evaluate_model  # noqa: E402
from facesphere.infer.embedders import load_embedder  # noqa: E402
from facesphere.run.config import load_config  # noqa: E402
from facesphere.train.loop import train  # noqa: E402
from facesphere.workflows.clean import clean_dataset  # noqa: E402
from facesphere.workflows.overlap import find_overlap  # noqa: E402

FIW = SHARED / "data" / "fiw" / "images"
SFACE = SHARED / "models" / "face_recognition_sface_2021dec_int8bq.onnx"
RECIPE = ROOT / "configs" / "fiw_sfnet20_arcface.yaml"
DOC = ROOT / "docs" / "results.md"
IMAGES = ROOT / "docs" / "images"
#: every head of the comparison, with the options it needs beyond its published defaults (none: the papers' values)
HEADS = {
    "softmax": {}, "normface": {}, "cosface": {}, "arcface": {}, "combined": {},
    "sphereface": {}, "sphereface_r": {}, "sphereface_r SFN": {"head.feature_norm": "soft"},
    "sphereface2": {}, "sface": {}, "subcenter_arcface": {},
}
#: the optimiser question of the issue: facesphere's defaults against the papers' (OpenSphere / arcface_torch)
OPTIMISER = {
    "facesphere defaults (clip 5, no decay on BN / PReLU / biases)": [],
    "papers (no clipping, weight decay on every parameter)": ["--optim.clip_grad_norm", "0", "--optim.decay_all", "true"],
}
OPTIMISER_HEADS = ("sphereface_r", "arcface")
STABILITY = {
    "A-Softmax, no λ annealing": ["--head.name", "sphereface", "--head.lambda_base", "0", "--head.lambda_min", "0"],
    "A-Softmax, λ annealing (2017 recipe)": ["--head.name", "sphereface"],
    "SphereFace-R (HFN, v2)": ["--head.name", "sphereface_r"],
}


# ----------------------------------------------------------------------------------------------------------------
# bookkeeping


def load_results(work: Path) -> dict[str, Any]:
    """Every result written so far: ``WORK/results/prepare.json`` and one file per run under
    ``WORK/results/SECTION/`` (so several parts may run side by side without overwriting each other)."""
    root = work / "results"
    results: dict[str, Any] = {}
    if (root / "prepare.json").is_file():
        results.update(json.loads((root / "prepare.json").read_text()))
    for section in ("recipe", "heads", "optimiser", "stability", "noise"):
        for path in sorted((root / section).glob("*.json")) if (root / section).is_dir() else []:
            record = json.loads(path.read_text())
            if section == "recipe":
                results["recipe"] = record["row"]
            else:
                results.setdefault(section, {})[record["key"]] = record["row"]
    # rows in the order of the script's tables (files come back in name order)
    order = {"heads": lambda key: (list(HEADS).index(key) if key in HEADS else len(HEADS), key),
             "optimiser": lambda key: (key.split(" | ")[-1], list(OPTIMISER).index(key.split(" | ")[0])
                                       if key.split(" | ")[0] in OPTIMISER else 0),
             "stability": lambda key: (list(STABILITY).index(key.split(" | seed ")[0])
                                       if key.split(" | seed ")[0] in STABILITY else len(STABILITY), key)}
    for section, rank in order.items():
        if section in results:
            results[section] = dict(sorted(results[section].items(), key=lambda item, rank=rank: rank(item[0])))
    return results


def save_row(work: Path, section: str, key: str, row: dict[str, Any]) -> None:
    """Write one result atomically (a killed part loses only the run it was in)."""
    name = "".join(c if c.isalnum() else "_" for c in key)
    path = work / "results" / section / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "row": row}, indent=2))
    os.replace(tmp, path)


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def paths(work: Path) -> dict[str, Path]:
    return {"lfw": work / "lfw_scrfd25g", "overlap": work / "fiw_overlap" / "overlap.txt",
            "heldout": work / "fiw_split" / "heldout_identities.txt",
            "pairs": work / "fiw_split" / "heldout_pairs.txt"}


def data_overrides(work: Path) -> list[str]:
    p = paths(work)
    return ["--data.train", f"folder:{FIW}", "--data.exclude", f"[{p['overlap']}, {p['heldout']}]",
            "--data.val", f"[pairs:{p['pairs']}]"]


# ----------------------------------------------------------------------------------------------------------------
# prepare


def prepare(work: Path, results: dict[str, Any]) -> None:
    p = paths(work)
    folder, info = prepare_lfw(work, "SCRFD-2.5G")
    results["lfw"] = {"folder": str(folder), **info}
    if not p["overlap"].is_file():
        report = find_overlap(load_embedder(SFACE), f"folder:{FIW}", f"lfw:{folder}", p["overlap"].parent,
                              grayscale=True, model_name=SFACE.name)
    else:
        report = json.loads((p["overlap"].parent / "report.json").read_text())
    results["overlap"] = {key: report[key] for key in ("threshold", "excluded_identities", "excluded_images",
                                                       "test_identities_matched", "train", "test")}
    results["overlap"]["calibration"] = report["calibration"]
    results["overlap"]["closest"] = report["pairs"][:8]
    summary = make_heldout_split(f"folder:{FIW}", p["pairs"].parent, exclude=[str(p["overlap"])],
                                 group=r"^(F\d+)_", fraction=0.1, folds=10, pairs_per_fold=300, seed=0)
    results["split"] = {key: summary[key] for key in ("heldout_groups", "heldout_identities", "heldout_images",
                                                      "training_identities", "training_images")}
    path = work / "results" / "prepare.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({key: results[key] for key in ("lfw", "overlap", "split")}, indent=2))


# ----------------------------------------------------------------------------------------------------------------
# one run


def run_and_evaluate(work: Path, tag: str, overrides: list[str], recipe: Path, *, evaluate_lfw: bool = True) -> dict:
    """Train the recipe with ``overrides`` into WORK/runs/TAG (reused if finished), evaluate it; the run's row."""
    run = work / "runs" / tag.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    config = load_config(recipe, data_overrides(work) + ["--train.quiet", "true"] + overrides)
    load_start = load_average()
    row: dict[str, Any] = {"tag": tag, "head": config.head.name, "seed": config.train.seed,
                           "steps": config.train.steps, "backbone": config.model.backbone}
    summary_path = run / "metrics.json"
    if not summary_path.is_file():
        if run.exists():
            shutil.rmtree(run)
        start = time.perf_counter()
        try:
            train(config, out=run, progress=False)
        except TrainingInterrupted:  # Ctrl-C / SIGTERM: not an outcome of the method; nothing is recorded
            raise
        except TrainingError as error:
            row.update(status="diverged", error=str(error), wall_seconds=time.perf_counter() - start)
            return row | {"curve": curve(run)}
        row["wall_seconds"] = time.perf_counter() - start
    summary = json.loads(summary_path.read_text())
    row.update(status="finished", images_per_second=summary["images_per_second"],
               train_seconds=summary["train_seconds"], nonfinite_steps=summary["nonfinite_steps"],
               load_average=[load_start, load_average()], curve=curve(run))
    row.setdefault("wall_seconds", summary["train_seconds"])
    specs = [f"pairs:{paths(work)['pairs']}"] + ([f"lfw:{paths(work)['lfw']}"] if evaluate_lfw else [])
    evaluation = evaluate_model(run, specs, work / "eval" / run.name, progress=False, plots=False)
    for name, metrics in evaluation["datasets"].items():
        key = "fiw" if name.startswith("heldout") else "lfw"
        row[key] = {"accuracy": metrics["accuracy"], "accuracy_std": metrics["accuracy_std"], "auc": metrics["auc"],
                    "tar@1e-3": metrics["tar_at_far"].get("1e-03"), "threshold": metrics["threshold"]}
    return row


def curve(run: Path) -> dict[str, list]:
    """The run's training-loss curve and its FIW-validation accuracies (from metrics.jsonl)."""
    steps, losses, val_steps, val = [], [], [], []
    path = run / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in record:
                steps.append(record["step"])
                losses.append(record["loss"])
            if "val" in record:
                val_steps.append(record["step"])
                val.append(float(np.mean([m["accuracy"] for m in record["val"].values()])))
    return {"steps": steps, "loss": losses, "val_steps": val_steps, "val_accuracy": val}


# ----------------------------------------------------------------------------------------------------------------
# the parts


def part_recipe(work: Path, results: dict, recipe: Path, extra: list[str]) -> None:
    row = run_and_evaluate(work, "recipe", extra, recipe)
    row["path"] = str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT) else str(recipe)
    save_row(work, "recipe", "recipe", row)


def part_heads(work: Path, results: dict, recipe: Path, heads: list[str], extra: list[str]) -> None:
    for name in heads:
        options = HEADS[name]
        head = name.split()[0]
        overrides = ["--head.name", head] + [x for key, value in options.items() for x in (f"--{key}", value)]
        save_row(work, "heads", name, run_and_evaluate(work, f"head {name}", overrides + extra, recipe))


#: a run "stalls" when its model verifies the FIW held-out pairs barely better than chance (50 %)
STALL_ACCURACY = 0.6


def stability_outcome(row: dict) -> str:
    """``diverged`` (non-finite losses stopped the run), ``stalled`` (held-out accuracy < 60 %) or ``trained``."""
    if row.get("status") != "finished":
        return "diverged"
    loss = row["curve"]["loss"]
    if not loss or not np.isfinite(loss[-1]):
        return "diverged"
    if row.get("fiw", {}).get("accuracy", 0.0) < STALL_ACCURACY:
        return "stalled"
    return "trained"


#: stability runs: 10 warm-up steps, then the recipe's peak learning rate held (no decay), where margins diverge
STABILITY_SCHEDULE = ["--optim.schedule", "constant", "--optim.warmup_steps", "10"]


def part_stability(work: Path, results: dict, recipe: Path, seeds: list[int], extra: list[str],
                   configurations: list[str]) -> None:
    for name in configurations:
        for seed in seeds:
            overrides = STABILITY[name] + STABILITY_SCHEDULE + ["--train.seed", str(seed)] + extra
            row = run_and_evaluate(work, f"stability {name} seed {seed}", overrides, recipe, evaluate_lfw=False)
            row["outcome"] = stability_outcome(row)
            save_row(work, "stability", f"{name} | seed {seed}", row)


def part_optimiser(work: Path, results: dict, recipe: Path, extra: list[str], heads: list[str]) -> None:
    """facesphere's optimiser defaults against the papers', per head; the loss logged at every step."""
    for head in heads:
        for name, overrides in OPTIMISER.items():
            row = run_and_evaluate(work, f"optimiser {head} {name.split()[0]}",
                                   ["--head.name", head, "--train.log_every", "1"] + overrides + extra, recipe,
                                   evaluate_lfw=False)
            save_row(work, "optimiser", f"{name} | {head}", row)


def write_noisy_list(work: Path, rate: float, seed: int) -> tuple[Path, np.ndarray]:
    """FIW training images (minus overlap and held-out) as a list file whose labels are flipped at ``rate`` to
    another identity uniformly; returns the list and the flipped mask."""
    from facesphere.data.datasets import ImageFolderDataset, read_identity_list

    p = paths(work)
    dataset = ImageFolderDataset(FIW)
    drop = set(read_identity_list(p["overlap"])) | set(read_identity_list(p["heldout"]))
    keep = [i for i in range(len(dataset)) if dataset.classes[dataset.labels[i]] not in drop]
    names = sorted({dataset.classes[dataset.labels[i]] for i in keep})
    index = {name: i for i, name in enumerate(names)}
    rng = np.random.default_rng(seed)
    true = np.array([index[dataset.classes[dataset.labels[i]]] for i in keep])
    flipped = rng.random(len(keep)) < rate
    noisy = true.copy()
    shift = rng.integers(1, len(names), size=int(flipped.sum()))
    noisy[flipped] = (true[flipped] + shift) % len(names)
    out = work / "fiw_noisy" / "train.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    # the same (seeded) list for every noise run; written atomically, as parts may run side by side
    atomic_write_text(out, "".join(f"{dataset.paths[i]} {names[label]}\n" for i, label in zip(keep, noisy)))
    atomic_write(out.parent / "flipped.npy", lambda handle: np.save(handle, flipped))
    return out, flipped


def part_noise(work: Path, results: dict, recipe: Path, rate: float, extra: list[str], heads: list[str]) -> None:
    """20 % flipped labels: the noisy runs (``heads``), then ``clean`` + ArcFace retrained (head ``cleaned``)."""
    listing, flipped = write_noisy_list(work, rate, seed=0)
    noisy_data = ["--data.train", f"list:{listing}", "--data.exclude", "[]"]
    info = {"rate": rate, "flipped": int(flipped.sum()), "images": int(flipped.size)}
    for head in [h for h in heads if h != "cleaned"]:
        row = run_and_evaluate(work, f"noisy {head}", ["--head.name", head] + noisy_data + extra, recipe,
                               evaluate_lfw=False)
        save_row(work, "noise", head, row | {"noise": info})
    if "cleaned" not in heads:
        return
    sub_run = work / "runs" / "noisy_subcenter_arcface"
    cleaned = work / "fiw_noisy" / "cleaned"
    if cleaned.exists():
        shutil.rmtree(cleaned)
    report = clean_dataset(sub_run, f"list:{listing}", cleaned, progress=False)
    dropped = np.zeros(flipped.size, bool)
    dropped[[row["index"] for row in report["dropped"]]] = True  # list-file order = the flipped mask's order
    tp = int((dropped & flipped).sum())
    clean = {"dropped": report["num_dropped"], "kept": report["num_kept"], "dropped_flipped": tp,
             "precision": tp / max(int(dropped.sum()), 1), "recall": tp / max(int(flipped.sum()), 1),
             "threshold_deg": report["threshold_deg"]}
    cleaned_list = next(cleaned.glob("*.txt"))
    row = run_and_evaluate(work, "noisy arcface cleaned", ["--head.name", "arcface", "--data.train",
                                                          f"list:{cleaned_list}", "--data.exclude", "[]"] + extra,
                           recipe, evaluate_lfw=False)
    save_row(work, "noise", "arcface cleaned", row | {"noise": info, "clean": clean})


# ----------------------------------------------------------------------------------------------------------------
# tables


def _pct(metrics: dict | None, key: str = "accuracy") -> str:
    if not metrics:
        return "—"
    value = metrics.get(key)
    if value is None:
        return "—"
    if key == "accuracy":
        return f"{100 * value:.2f} ± {100 * metrics['accuracy_std']:.2f}"
    return f"{100 * value:.2f}"


def head_row(name: str, row: dict) -> str:
    if row.get("status") != "finished":
        return f"| {name} | diverged: {row.get('error', '')[:60]} | | | | | | |"
    minutes = row["wall_seconds"] / 60
    return (f"| {name} | {_pct(row.get('lfw'))} | {_pct(row.get('lfw'), 'auc')} | {_pct(row.get('lfw'), 'tar@1e-3')} "
            f"| {_pct(row.get('fiw'))} | {_pct(row.get('fiw'), 'auc')} | {minutes:.1f} | "
            f"{row['images_per_second']:.0f} |")


HEADER = ("| head | LFW accuracy % | LFW AUC % | LFW TAR@FAR=1e-3 % | FIW held-out accuracy % | FIW AUC % | "
          "wall min | images/s |\n|---|---:|---:|---:|---:|---:|---:|---:|")


def tables(results: dict) -> str:
    lines: list[str] = []
    if "overlap" in results:
        o, s = results["overlap"], results.get("split", {})
        lines += [
            f"Data: FIW {o['train']['identities']} identities / {o['train']['images']} images; "
            f"`facesphere data overlap` with SFace (grayscale) against LFW ({o['test']['identities']} identities): "
            f"**{o['excluded_identities']} FIW identities ({o['excluded_images']} images) overlap** "
            f"{o['test_identities_matched']} LFW identities at the measured threshold {o['threshold']:.2f} "
            f"(non-matching identities above it: {100 * o['calibration']['null_above_threshold']:.1f} %); "
            f"`facesphere data split`: {s.get('heldout_identities')} identities of {s.get('heldout_groups')} families "
            f"held out (3,000 pairs in 10 family-disjoint folds); training on the remaining "
            f"{s.get('training_identities')} identities / {s.get('training_images')} images.",
            "",
        ]
    if "recipe" in results:
        r = results["recipe"]
        lines += [f"### The recipe (`{r.get('path')}`, {r['steps']} steps)", "", HEADER, head_row(r["head"], r), ""]
        if r.get("status") == "finished" and r.get("lfw"):
            accuracy, minutes = 100 * r["lfw"]["accuracy"], r["wall_seconds"] / 60
            met = accuracy >= 90 and minutes <= 30
            lines += [f"Target (≥ 90 % on LFW after ≤ 30 minutes of training on the 2-core CPU): **{'met' if met else 'missed'}**"
                      f" — {accuracy:.2f} % after {minutes:.1f} minutes (the whole `facesphere train` command, validation "
                      f"included; {r['images_per_second']:.0f} "
                      f"images/s; load average {r['load_average'][0]:.1f} → {r['load_average'][1]:.1f}).", ""]
    if results.get("heads"):
        steps = sorted({row.get("steps") for row in results["heads"].values() if row.get("steps")})
        lines += [f"### Every head, same backbone, data and budget ({', '.join(map(str, steps))} steps of "
                  "128 images, two runs side by side at one thread each)", "", HEADER]
        lines += [head_row(name, row) for name, row in results["heads"].items()]
        lines.append("")
    if results.get("optimiser"):
        lines += ["### Optimiser defaults against the papers' settings", "",
                  "| settings | head | loss, step 1 | loss, step 13 | loss, last step | FIW held-out accuracy % |",
                  "|---|---|---:|---:|---:|---:|"]
        for key, row in results["optimiser"].items():
            name, head = key.split(" | ")
            by_step = dict(zip(row["curve"]["steps"], row["curve"]["loss"]))
            first, last = by_step.get(1, float("nan")), row["curve"]["loss"][-1] if by_step else float("nan")
            lines.append(f"| {name} | {head} | {first:.3f} | {by_step.get(13, float('nan')):.3f} | {last:.3f} | "
                         f"{_pct(row.get('fiw'))} |")
        lines.append("")
    if results.get("stability"):
        steps = sorted({row.get("steps") for row in results["stability"].values() if row.get("steps")})
        seeds = sorted({key.split(" | seed ")[1] for key in results["stability"]})
        lines += [f"### Training stability (seeds {', '.join(seeds)}; {', '.join(map(str, steps))} steps at the "
                  "recipe's learning rate, held constant after 10 warm-up steps)", "",
                  "| configuration | seed | outcome | final training loss | FIW held-out accuracy % |",
                  "|---|---:|---|---:|---:|"]
        for key, row in results["stability"].items():
            name, seed = key.split(" | seed ")
            loss = row["curve"]["loss"][-1] if row["curve"]["loss"] else float("nan")
            outcome = row.get("outcome") or stability_outcome(row)
            lines.append(f"| {name} | {seed} | {outcome} | {loss:.3f} | {_pct(row.get('fiw'))} |")
        lines.append("")
    if results.get("noise"):
        rows = results["noise"]
        info = next(iter(rows.values()))["noise"]
        lines += [f"### Label noise: {100 * info['rate']:.0f} % of the FIW training labels flipped ({info['flipped']} "
                  f"of {info['images']} images)", "",
                  "| model | FIW held-out accuracy % | FIW AUC % | FIW TAR@FAR=1e-3 % | steps | wall min |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in ("arcface", "sface", "subcenter_arcface", "arcface cleaned"):
            if name in rows:
                row = rows[name]
                label = "arcface, retrained on the cleaned set" if name == "arcface cleaned" else f"{name}, noisy labels"
                if row.get("status") != "finished":
                    lines.append(f"| {label} | diverged: {row.get('error', '')[:60]} | | | | |")
                    continue
                lines.append(f"| {label} | {_pct(row.get('fiw'))} | {_pct(row.get('fiw'), 'auc')} | "
                             f"{_pct(row.get('fiw'), 'tar@1e-3')} | {row['steps']} | {row['wall_seconds'] / 60:.1f} |")
        if "arcface cleaned" in rows:
            c = rows["arcface cleaned"]["clean"]
            lines += ["", f"`facesphere clean` with the noisy sub-center ArcFace run (threshold "
                          f"{c['threshold_deg']:.1f}°): dropped {c['dropped']} images, {c['dropped_flipped']} of them "
                          f"flipped: precision {100 * c['precision']:.1f} %, recall {100 * c['recall']:.1f} % against "
                          "the known flips."]
        lines.append("")
    return "\n".join(lines)


def plot_curves(groups: dict[str, dict[str, dict]], path: Path, title: str) -> None:
    """One panel per group: every run's training loss (solid) and FIW held-out accuracy during training (dots)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(len(groups), 4)
    grid_rows = -(-len(groups) // columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * grid_rows))
    FigureCanvasAgg(figure)
    for column, (group, rows) in enumerate(groups.items()):
        loss_axis = figure.add_subplot(grid_rows, columns, column + 1)
        accuracy_axis = loss_axis.twinx()
        for index, (name, row) in enumerate(rows.items()):
            colour = f"C{index % 10}"
            c = row.get("curve", {})
            loss_axis.plot(c.get("steps", []), c.get("loss", []), color=colour, lw=1, label=name)
            if c.get("val_steps"):
                accuracy_axis.plot(c["val_steps"], [100 * a for a in c["val_accuracy"]], "o--", color=colour, ms=3,
                                   lw=0.6)
        loss_axis.set_xlabel("step")
        loss_axis.set_ylabel("training loss (line)", fontsize=8)
        accuracy_axis.set_ylabel("FIW held-out accuracy % (dots)", fontsize=8)
        loss_axis.set_title(group, fontsize=9)
        if len(rows) > 1:
            loss_axis.legend(fontsize=6, loc="upper right")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def write_plots(results: dict) -> list[str]:
    """The curve PNGs under docs/images/; returns the Markdown lines that show them."""
    lines = []
    if results.get("heads"):
        plot_curves({name: {name: row} for name, row in results["heads"].items()}, IMAGES / "real_training_heads.png",
                    "FIW training: loss and held-out accuracy per head")
        lines.append("![loss and FIW held-out accuracy per head](images/real_training_heads.png)")
    if results.get("stability"):
        groups: dict[str, dict] = {}
        for key, row in results["stability"].items():
            name, seed = key.split(" | seed ")
            groups.setdefault(name, {})[f"seed {seed}"] = row
        plot_curves(groups, IMAGES / "real_training_stability.png", "training stability, 3 seeds each")
        lines.append("![stability: loss curves per seed](images/real_training_stability.png)")
    return lines


def write_section(text: str) -> None:
    from heads import write_section as write

    write(DOC, "real-training", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("prepare", "recipe", "heads", "optimiser", "stability", "noise", "write"))
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "real_training")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--heads", nargs="+", choices=tuple(HEADS), default=list(HEADS))
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps (comparison budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--optimiser-heads", nargs="+", choices=OPTIMISER_HEADS, default=list(OPTIMISER_HEADS))
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--configurations", nargs="+", choices=tuple(STABILITY), default=list(STABILITY))
    parser.add_argument("--noise-runs", nargs="+", choices=("arcface", "sface", "subcenter_arcface", "cleaned"),
                        default=["arcface", "sface", "subcenter_arcface", "cleaned"])
    parser.add_argument("--threads", type=int, default=0,
                        help="training threads (0 = all cores; 1 when two parts run side by side)")
    args = parser.parse_args(argv)
    if not FIW.is_dir():
        print(f"{FIW} not found: nothing to do")
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    results = load_results(args.work)
    extra = ["--train.threads", str(args.threads)]
    if args.steps:  # a shorter budget: validate (the curves' dots) and checkpoint four times along it
        every = str(max(args.steps // 4, 1))
        extra += ["--train.steps", str(args.steps), "--train.val_every", every, "--train.checkpoint_every", every]
    if args.part == "prepare":
        prepare(args.work, results)
    elif args.part == "recipe":
        part_recipe(args.work, results, args.recipe, extra)
    elif args.part == "heads":
        part_heads(args.work, results, args.recipe, args.heads, extra)
    elif args.part == "optimiser":
        part_optimiser(args.work, results, args.recipe, extra, args.optimiser_heads)
    elif args.part == "stability":
        part_stability(args.work, results, args.recipe, args.seeds, extra, args.configurations)
    elif args.part == "noise":
        part_noise(args.work, results, args.recipe, args.noise, extra, args.noise_runs)
    text = tables(load_results(args.work))
    print(text)
    if args.part == "write":
        write_section(text + "\n" + "\n\n".join(write_plots(load_results(args.work))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
