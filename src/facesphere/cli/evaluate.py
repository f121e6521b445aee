"""``facesphere eval``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..evaluate.report import format_table
from ..evaluate.run import evaluate_model, synthetic_defaults_for
from ..infer.embedders import load_embedder
from .common import add_model_options, check_detector_args, detector_options, model_options

EVAL_DESCRIPTION = """\
Evaluate a face recogniser on verification and identification protocols.

MODEL: a facesphere run directory or checkpoint, an arcface_torch backbone.pth (with --arch), or an ONNX recogniser
(with its input convention: --input-color / --input-mean / --input-std; pixels are fed as (p - M) / S).

--data SPEC (repeatable):
  synthetic[:pairs_per_fold=N,seed=S,difficulty=D]   built-in held-out synthetic pairs
  bin:FILE.bin        InsightFace verification set (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW, ...)
  lfw:DIR             DIR/pairs.txt + images (DIR/images/<name>/ or DIR/<name>/); lfw:FILE a pairs file
                      (LFW names, or 'label path0 path1' lines naming images)
  pairs:FILE          OpenSphere 'label path0 path1' list (ordinary image paths)
  ijb:DIR             IJB-B/C meta files + loose crops (aligned with the given 5 landmarks); 1:N with the CSVs
  ident:DIR           1:N: DIR/gallery/<id>/*, DIR/probe/<id>/*, optional DIR/distractors/**; probes that
                      data align dropped (DIR/align_dropped.txt) count as misses

Images that are not aligned crops of the model's input size need --detector; where it finds no face, --no-face
decides (crop: the central square, the default; resize: the whole image; fail); the count is in the table and a
warning. The synthetic set is the one the run validated on (for a run, and for a facesphere ONNX export, whose
metadata carries the run's validation settings).

Defaults: accuracy = exact 10-fold (never below the grid variants on the training folds); TAR@FAR = nearest ROC
point for IJB (as published), interpolated otherwise. Writes DIR/metrics.json, DIR/roc.png and one
DIR/scores_<dataset>.png per dataset; prints a table (every rate in percent). ONNX models need
pip install "facesphere[onnx]".
"""


def _cmd_eval(args: argparse.Namespace) -> int:
    check_detector_args(args)
    embedder = load_embedder(args.model, **model_options(args))
    results = evaluate_model(
        embedder, args.data, args.out, flip=args.flip, batch_size=args.batch_size, method=args.accuracy,
        tar_method=args.tar_method, detector=args.detector, progress=not args.quiet, plots=not args.no_plots,
        search_method=args.search, synthetic=synthetic_defaults_for(args.model), save_scores=args.save_scores,
        no_face=args.no_face, choose=args.choose, detector_options=detector_options(args),
    )
    print(format_table(results))
    print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def register(commands: Any) -> None:
    p = commands.add_parser("eval", help="evaluate a recogniser: LFW-style pairs, IJB-B/C, 1:N identification",
                            description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="run directory, checkpoint, backbone.pth (with --arch) or .onnx")
    p.add_argument("--data", action="append", required=True, metavar="SPEC", help="a dataset spec (repeatable)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    add_model_options(p, batch_size=64, onnx_backend=True, input_size=True)
    p.add_argument("--accuracy", choices=("exact", "insightface", "sphereface"), default="exact",
                   help="10-fold accuracy definition (default exact; insightface / sphereface reproduce those tools)")
    p.add_argument("--tar-method", choices=("nearest", "interpolate"), default=None,
                   help="TAR@FAR definition (default: nearest for IJB, interpolate otherwise)")
    p.add_argument("--search", choices=("auto", "numpy", "flat", "ivf", "hnsw"), default="auto",
                   help="1:N search backend (default: FAISS flat for large galleries when installed, else numpy)")
    p.add_argument("--no-plots", action="store_true", help="skip roc.png and the score histograms")
    p.add_argument("--save-scores", action="store_true",
                   help="also write scores_<dataset>.npz (pair scores, labels, folds) to recompute any metric later")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)
