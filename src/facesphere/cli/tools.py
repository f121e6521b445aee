"""``facesphere clean`` and ``facesphere invert``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..workflows.clean import clean_dataset
from ..workflows.invert import DEFAULTS, ID_LOSSES, synthesize


def register(commands: Any) -> None:
    _register_clean(commands)
    _register_invert(commands)


# ------------------------------------------------------------------------------------------------------------------
# clean


def _register_clean(commands: Any) -> None:
    p = commands.add_parser(
        "clean", help="drop noisy labels with a sub-center ArcFace run (dominant sub-centre + angle threshold)",
        description="Embed every image of the training set with a run trained with subcenter_arcface (K >= 2), find "
        "each class's dominant sub-centre, keep the images closer to it than --threshold degrees, drop emptied "
        "classes, re-index labels, and write the cleaned set in the input's format (image folder, list file or "
        "RecordIO) with report.json and angles.png (docs/methods.md §6.5).",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a facesphere run directory (or checkpoint .pt)")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="the training set: folder:DIR, list:FILE, rec:PREFIX, a bare path, or synthetic "
                   "(default: the run's data.train)")
    p.add_argument("--out", type=Path, required=True, metavar="CLEANED", help="output folder (new or empty)")
    p.add_argument("--threshold", type=float, default=75.0, metavar="DEGREES",
                   help="keep an image iff its angle to the dominant sub-centre is below this (default 75)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_clean)


def _cmd_clean(args: argparse.Namespace) -> int:
    report = clean_dataset(args.run_dir, args.data, args.out, threshold=args.threshold, batch_size=args.batch_size,
                           device=args.device, progress=not args.quiet)
    summary = {key: report[key] for key in ("data", "format", "threshold_deg", "num_images", "num_kept",
                                            "num_dropped", "num_unreadable", "num_classes", "num_classes_kept",
                                            "num_classes_dropped")}
    summary["output"] = report["output"]["spec"]
    if "label_noise" in report:
        summary["label_noise"] = report["label_noise"]
    if "warning" in report:
        summary["warning"] = report["warning"]
    summary["report"] = str(args.out / "report.json")
    print(json.dumps(summary, indent=2))
    return 0


# ------------------------------------------------------------------------------------------------------------------
# invert


def _register_invert(commands: Any) -> None:
    p = commands.add_parser(
        "invert", help="synthesise faces from a run's embedding space with BatchNorm priors (no generator)",
        description="Optimise input images so that the frozen network maps them to the target identity (a training "
        "class, an embedding .npy, or an aligned face image) while every BatchNorm2d layer's batch statistics match "
        "its running statistics (docs/methods.md §6.7). Writes grid.png, face_NN.png and metrics.json.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a facesphere run directory (or checkpoint .pt)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--class", dest="class_id", type=int, metavar="ID", help="a training class id of the run")
    target.add_argument("--embedding", type=Path, metavar="FILE.npy", help="a target embedding, shape (D,) or (1, D)")
    target.add_argument("--image", type=Path, metavar="FACE.jpg", help="an aligned face crop (e.g. 112x112)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="Adam learning rate (cosine decay to 0)")
    p.add_argument("--bn-weight", type=float, default=DEFAULTS["bn_weight"], help="λ_BN of the BatchNorm prior")
    p.add_argument("--tv-weight", type=float, default=DEFAULTS["tv_weight"], help="total-variation weight")
    p.add_argument("--num-images", type=int, default=DEFAULTS["num_images"], help="images optimised together")
    p.add_argument("--id-loss", choices=ID_LOSSES, default=DEFAULTS["id_loss"])
    p.add_argument("--jitter", type=int, default=DEFAULTS["jitter"], help="random shift in pixels each step (0: off)")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no random horizontal flip each step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_invert)


def _cmd_invert(args: argparse.Namespace) -> int:
    metrics = synthesize(
        args.run_dir, args.out, class_id=args.class_id, embedding=args.embedding, image=args.image,
        id_loss=args.id_loss, device=args.device, progress=not args.quiet, steps=args.steps, lr=args.lr,
        bn_weight=args.bn_weight, tv_weight=args.tv_weight, num_images=args.num_images, seed=args.seed,
        flip=args.flip, jitter=args.jitter,
    )
    summary = {"target": metrics["target"], "steps": metrics["steps"],
               "identity_cosine": {"initial": metrics["initial"]["cosine"], "final": metrics["final_uint8"]["cosine"]},
               "bn_loss": {"initial": metrics["initial"]["bn_loss"], "final": metrics["final_uint8"]["bn_loss"]},
               "grid": str(args.out / "grid.png"), "metrics": str(args.out / "metrics.json")}
    print(json.dumps(summary, indent=2))
    return 0
