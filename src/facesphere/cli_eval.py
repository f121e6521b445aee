"""`facesphere eval`: argument parsing only (the work is done by :func:`facesphere.evaluate.run.evaluate_model`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EVAL_DESCRIPTION = """\
Evaluate a face recogniser on verification and identification protocols.

MODEL: a facesphere run directory or checkpoint, an arcface_torch backbone.pth (with --arch), or an ONNX recogniser
(with its input convention: --input-color / --input-mean / --input-std; pixels are fed as (p - M) / S).

--data SPEC (repeatable):
  synthetic[:pairs_per_fold=N,seed=S,difficulty=D]   built-in held-out synthetic pairs
  bin:FILE.bin        InsightFace verification set (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, ...)
  lfw:DIR             DIR/pairs.txt + images (DIR/images/<name>/ or DIR/<name>/)
  pairs:FILE          OpenSphere 'label path0 path1' list
  ijb:DIR             IJB-B/C meta files + loose crops (aligned with the given 5 landmarks); 1:N with the CSVs
  ident:DIR           1:N: DIR/gallery/<id>/*, DIR/probe/<id>/*, optional DIR/distractors/**

Defaults: accuracy = exact 10-fold (never below the grid variants on the training folds); TAR@FAR = nearest ROC
point for IJB (as published), interpolated otherwise. Writes DIR/metrics.json, DIR/roc.png and one
DIR/scores_<dataset>.png per dataset; prints a table.
"""


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate.run import evaluate_model, format_table, synthetic_defaults_for
    from .infer.models import load_embedder

    size = tuple(args.input_size) if args.input_size else None
    embedder = load_embedder(args.model, arch=args.arch, input_color=args.input_color, input_mean=args.input_mean,
                             input_std=args.input_std, input_size=size, device=args.device, fp16=args.fp16,
                             backend=args.backend)
    results = evaluate_model(
        embedder, args.data, args.out, flip=args.flip, batch_size=args.batch_size, method=args.accuracy,
        tar_method=args.tar_method, detector=args.detector, progress=not args.quiet, plots=not args.no_plots,
        search_method=args.search, synthetic=synthetic_defaults_for(args.model), save_scores=args.save_scores,
    )
    print(format_table(results))
    print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def register(commands: Any, data_commands: Any) -> None:
    """Add this area's sub-commands to the top-level ``commands`` and the ``data`` sub-command group."""
    p = commands.add_parser("eval", help="evaluate a recogniser: LFW-style pairs, IJB-B/C, 1:N identification",
                            description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="run directory, checkpoint, backbone.pth (with --arch) or .onnx")
    p.add_argument("--data", action="append", required=True, metavar="SPEC", help="a dataset spec (repeatable)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--arch", default=None, help="backbone of an arcface_torch backbone.pth, e.g. iresnet50")
    p.add_argument("--input-color", choices=("rgb", "bgr"), default=None, help="channel order the model expects")
    p.add_argument("--input-mean", type=float, default=None, metavar="M", help="pixels are fed as (p - M) / S")
    p.add_argument("--input-std", type=float, default=None, metavar="S")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="model input size (default: from the model, else 112 112)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "opencv"), default="auto",
                   help="ONNX runtime (default: onnxruntime, then OpenCV DNN)")
    p.add_argument("--flip", choices=("sum", "concat", "none"), default="sum",
                   help="flip-test fusion: sum (insightface, default), concat (SphereFace), none")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--fp16", action="store_true", help="half-precision inference (CUDA, PyTorch models)")
    p.add_argument("--accuracy", choices=("exact", "insightface", "sphereface"), default="exact",
                   help="10-fold accuracy definition (default exact; insightface / sphereface reproduce those tools)")
    p.add_argument("--tar-method", choices=("nearest", "interpolate"), default=None,
                   help="TAR@FAR definition (default: nearest for IJB, interpolate otherwise)")
    p.add_argument("--detector", default=None, metavar="WEIGHTS",
                   help="SCRFD or YuNet ONNX face detector, or an MTCNN folder (pnet/rnet/onet.onnx), for "
                        "images that are not aligned crops")
    p.add_argument("--search", choices=("auto", "numpy", "flat", "ivf", "hnsw"), default="auto",
                   help="1:N search backend (default: FAISS flat for large galleries when installed, else numpy)")
    p.add_argument("--no-plots", action="store_true", help="skip roc.png and the score histograms")
    p.add_argument("--save-scores", action="store_true",
                   help="also write scores_<dataset>.npz (pair scores, labels, folds) to recompute any metric later")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)
