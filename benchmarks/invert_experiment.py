"""Faces synthesised from embeddings with BatchNorm priors (docs/methods.md §6.7), measured in this run.

    python benchmarks/invert_experiment.py --run RUN_DIR                 # a facesphere run with BatchNorm
    python benchmarks/invert_experiment.py                               # trains its own small run first (~2 min)
    python benchmarks/invert_experiment.py --run RUN_DIR --markdown docs/results.md --grid docs/images/invert_grid.png

For training classes (target = the class centre) and unseen identities (target = the embedding of a held-out
synthetic face), runs ``facesphere.workflows.invert.invert`` with the default constants and with one constant changed at a
time, and reports the identity cosine of the saved 8-bit images and R_BN before / after. Yardsticks measured on the run's own
training images in the same run: their cosine to their own class centre, and R_BN of batches of the same size.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

from heads import write_section  # noqa: E402

VARIANTS = [
    ("defaults", {}),
    ("ArcFace identity loss (paper form)", {"id_loss": "arcface"}),
    ("jitter 4 px (DeepInversion-style)", {"jitter": 4}),
    ("no BN prior (λ_BN = 0)", {"bn_weight": 0.0}),
    ("λ_BN = 1", {"bn_weight": 1.0}),
]


def train_small_run(out: Path, steps: int) -> Path:
    from facesphere.run.config import load_config
    from facesphere.train.loop import train

    train(load_config(None, ["--head.name", "arcface", "--train.steps", str(steps), "--data.synthetic_identities",
                             "150", "--data.synthetic_images_per_identity", "20", "--data.synthetic_difficulty", "1.0",
                             "--train.quiet", "true", "--train.plots", "false", "--data.val", "[]"]),
          out=out, progress=False, overwrite=True)  # the experiment's own run, retrained on every call
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a facesphere run directory (default: train one)")
    parser.add_argument("--work", type=Path, default=Path("runs/invert_experiment"))
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--unseen", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="inversion steps (default: the library default)")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--grid", type=Path, default=None, help="write a PNG of the default-setting results here")
    args = parser.parse_args(argv)

    from facesphere.run import load_run
    from facesphere.workflows.clean import open_training_data
    from facesphere.data.synthetic import EVAL_IDENTITY_OFFSET, SyntheticConfig, SyntheticFaces
    from facesphere.workflows.invert import DEFAULTS, BatchNormPrior, _normalise, class_target, image_target, invert, save_grid

    t0 = time.perf_counter()
    run = args.run if args.run is not None else train_small_run(args.work / "run", args.train_steps)
    config, backbone, head, _ = load_run(run)
    data = config.data
    norm = {"mean": data.pixel_mean, "std": data.pixel_std, "color": data.color}
    faces = SyntheticFaces(SyntheticConfig(seed=config.train.seed, difficulty=data.synthetic_difficulty,
                                           image_size=int(data.image_size[0])))
    options = {"num_images": args.num_images, "seed": 0}
    if args.steps is not None:
        options["steps"] = args.steps

    # yardsticks from the run's own training images (up to 8 per class, labels as trained): their cosine to their class
    # centre, and R_BN of real batches of the same size
    training = open_training_data(data.train, config)
    picks = [i for c in args.classes for i in np.flatnonzero(training.labels == c)[:8].tolist()]
    train_faces = np.stack([training.load(i) for i in picks])
    labels = training.labels[picks]
    with torch.no_grad():
        emb = torch.nn.functional.normalize(backbone(_normalise(train_faces, **norm)), dim=1)
    real_cos = [float(class_target(head, int(c)).cosines(emb[labels == c]).mean()) for c in args.classes]
    real_bn = []
    with BatchNormPrior(backbone) as prior, torch.no_grad():
        for start in range(0, len(train_faces), args.num_images):
            backbone(_normalise(train_faces[start:start + args.num_images], **norm))
            real_bn.append(float(prior.pop()))
    yard = {"real_cos": float(np.mean(real_cos)), "real_bn": float(np.mean(real_bn))}
    print(f"real training images: cosine to their class centre {yard['real_cos']:.3f}; R_BN of batches of "
          f"{args.num_images}: {yard['real_bn']:.1f}", flush=True)

    unseen_faces = [faces.render(EVAL_IDENTITY_OFFSET + u, 0) for u in args.unseen]
    rows, tiles = [], []
    for label, change in VARIANTS:
        result = {"class": [], "unseen": [], "bn0": [], "bn1": [], "seconds": 0.0}
        start = time.perf_counter()
        id_loss = change.get("id_loss", DEFAULTS["id_loss"])
        rest = {k: v for k, v in change.items() if k != "id_loss"}
        targets = [("class", class_target(head, int(c), loss=id_loss), None) for c in args.classes]
        targets += [("unseen", image_target(backbone, f, head=head, loss=id_loss, **norm), f) for f in unseen_faces]
        for kind, target, face in targets:
            out = invert(backbone, target, input_size=tuple(data.image_size), **norm, **options, **rest)
            m = out.metrics
            result[kind].append(m["final_uint8"]["cosine"])
            result["bn0"].append(m["initial"]["bn_loss"])
            result["bn1"].append(m["final_uint8"]["bn_loss"])
            if label == "defaults":
                tiles.append(out.images if face is None else np.concatenate([face[None], out.images]))
        result["seconds"] = (time.perf_counter() - start) / len(targets)
        rows.append((label, result))
        print(f"{label}: class cosine {np.mean(result['class']):.3f} (min {min(result['class']):.3f}), unseen "
              f"{np.mean(result['unseen']):.3f} (min {min(result['unseen']):.3f}), R_BN {np.mean(result['bn0']):.1f} "
              f"-> {np.mean(result['bn1']):.1f}, {result['seconds']:.1f} s per target", flush=True)
    if args.grid is not None:
        width = max(len(t) for t in tiles)
        padded = [np.concatenate([t, np.full((width - len(t),) + t.shape[1:], 255, np.uint8)]) for t in tiles]
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        save_grid(np.concatenate(padded), args.grid, columns=width)
    text = markdown(args, config, run, yard, rows, time.perf_counter() - t0, DEFAULTS)
    print(text)
    if args.markdown is not None:
        write_section(args.markdown, "invert", text)
    return 0


def markdown(args, config, run, yard, rows, total, defaults) -> str:
    steps = args.steps or defaults["steps"]
    grid = f" --grid {args.grid}" if args.grid else ""
    lines = [
        f"`python benchmarks/invert_experiment.py --run {run}{grid} --markdown docs/results.md` "
        f"({total / 60:.1f} min, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads).",
        "",
        f"Model: {config.model.backbone} {config.model.options.get('channels')} + BN, {config.head.name}, trained on "
        f"{config.data.train} ({run}). Targets: training classes {args.classes} (class centre) and unseen identities "
        f"(the embedding of one held-out synthetic face each, {len(args.unseen)} people); {args.num_images} images per "
        f"target, {steps} Adam steps, seed 0. Cosine = mean identity cosine of the saved 8-bit images to the target.",
        "",
        f"Yardsticks: the run's training images (8 per class above) sit at cosine {yard['real_cos']:.3f} to their own class centre; real "
        f"batches of {args.num_images} images have R_BN = {yard['real_bn']:.1f}.",
        "",
        "| setting | cosine, training class (min) | cosine, unseen identity (min) | R_BN start → end | s / target |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        lines.append(f"| {label} | {np.mean(r['class']):.3f} ({min(r['class']):.3f}) | {np.mean(r['unseen']):.3f} "
                     f"({min(r['unseen']):.3f}) | {np.mean(r['bn0']):.1f} → {np.mean(r['bn1']):.1f} | "
                     f"{r['seconds']:.1f} |")
    if args.grid:
        base = args.markdown.parent if args.markdown is not None else Path(".")
        lines += ["", f"![synthesised faces]({os.path.relpath(args.grid, base)})", "",
                  "Default settings; one row per target: training classes, then each unseen face followed by its "
                  "synthesised faces."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
