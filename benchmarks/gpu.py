"""The GPU path run for real, in one short script: the CUDA tests, training throughput, the million-identity head,
a real-faces recipe and evaluation / embedding speed. One JSON of results and the table for docs/benchmarks.md.

    python benchmarks/gpu.py --out gpu_results.json --markdown docs/benchmarks.md   # a CUDA machine, < 8 minutes
    python benchmarks/gpu.py --quick --device cpu --out /tmp/gpu.json               # the CPU smoke run (seconds)

Stages (each in its own try block: one failing stage is recorded and the others still run; the JSON is rewritten
after every stage, so a run cut short keeps what it measured):

1. ``tests`` — ``pytest -m cuda tests/gpu``: every head forward / backward under fp16 and bf16 autocast against fp32,
   backbones in channels-last, a checkpoint saved on the GPU and loaded on the CPU and back, ``torchrun
   --nproc_per_node 1`` DDP + Partial FC on NCCL, the NaN guard with the fp16 grad scaler, fp16 embedding against
   fp32 (CUDA only; on the CPU with ``--tests``, where the CUDA cases skip).
2. ``throughput`` — images/s of one bare training step (forward under autocast, ArcFace head in fp32, backward,
   grad-norm clip, SGD with momentum; the trainer's step without its loop) of iResNet-50 + ArcFace at batch 128 and
   C = 85,742 (MS1MV2's identities), for fp32 / fp16 AMP (grad scaler) / bf16 AMP, channels-last off / on, and
   ``torch.compile`` on the fastest of them in a child process with a time limit (``--compile-timeout``).
3. ``loop`` — the trainer's own loop (``facesphere.train.train``, its data loader replaced by one fixed batch so the
   data pipeline is out of the figure) against the bare step of the same settings: the loop's overhead, with the
   host reading its guard flags every step (``train.sync_every 1``) and every 50 steps.
4. ``head`` — the ArcFace head alone (Partial FC, one process) at C = 1,000,000, D = 512, batch 128, sampling rate
   ρ = 1.0 and 0.1: median step time (forward + backward + SGD step) and peak GPU memory.
5. ``fiw`` — ``configs/fiw_sfnet20_arcface.yaml`` (the real-faces recipe) trained on the GPU for its step budget and
   evaluated on LFW, when the recipe, ``../shared/data/fiw`` and the recipe's prepared lists (``runs/fiw/overlap``,
   ``runs/fiw/split``; docs/training.md "Training on real faces", done on the CPU beforehand and carried over) and
   an aligned LFW (``--lfw``) are present; skipped with the reason otherwise.
6. ``eval`` — ``facesphere eval MODEL --device cuda --fp16`` and ``facesphere embed ... --device cuda --fp16``
   images/s (the CLI's own code, called in this process) on the FIW model when stage 5 ran, else on the stage-3
   model; on aligned LFW when present, else the synthetic pairs.

``--quick`` shrinks every stage to seconds (a narrow SFNet-4, batch 4, C = 2,000) so that CI keeps the script from
rotting (tests/benchmarks/test_gpu_script.py); the figures of a quick run mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import facesphere as fs  # noqa: E402
from heads import write_section  # noqa: E402

FIW_CONFIG = REPO / "configs" / "fiw_sfnet20_arcface.yaml"
SHARED = Path(os.environ.get("FACESPHERE_SHARED") or REPO.parent / "shared")
#: arcface_torch's iResNet-50 fp16 figure per A100 (its 8-GPU throughput / 8); the issue's goal is 1.3x per GPU
ANCHOR_IPS = 675.0

FULL = {"backbone": "iresnet50", "options": {}, "batch": 128, "classes": 85_742, "warmup": 5, "steps": 20,
        "loop_window": 20, "head_classes": 1_000_000, "head_batch": 128, "head_steps": 10, "embed_images": 2048,
        "synthetic_pairs_per_fold": 300}
QUICK = {"backbone": "sfnet4", "options": {"channels": [8, 16, 16, 32], "batchnorm": True}, "batch": 4,
         "classes": 100, "warmup": 1, "steps": 2, "loop_window": 2, "head_classes": 2_000, "head_batch": 8,
         "head_steps": 2, "embed_images": 8, "synthetic_pairs_per_fold": 4}
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = f"{cpu} ({os.cpu_count()} logical cores), torch {torch.__version__}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}; " + text
    return text


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------------
# 2. bare training step


def bare_step(size: dict, device: torch.device, precision: str, channels_last: bool, compile: bool = False,
              classes: int | None = None) -> dict[str, Any]:
    """images/s of the trainer's step without its loop: autocast forward, fp32 ArcFace head, (scaled) backward,
    grad-norm clip 5, SGD momentum 0.9 + weight decay; timed over ``steps`` steps after ``warmup`` (one sync at
    the end, as a loop without host reads runs)."""
    torch.manual_seed(0)
    classes = classes or size["classes"]
    backbone = fs.build_backbone(size["backbone"], embed_dim=512, **size["options"]).to(device)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    head = fs.build_head("arcface", embed_dim=512, num_classes=classes).to(device)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda",
                                  growth_interval=100)
    model = torch.compile(backbone) if compile else backbone
    images = torch.randn(size["batch"], 3, 112, 112, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (size["batch"],), device=device)
    trainable = [p for p in backbone.parameters() if p.requires_grad]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            embeddings = model(images)
        scaler.scale(head(embeddings, labels).loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 5.0)
        scaler.step(optimizer)
        scaler.update()

    start = time.perf_counter()
    for _ in range(size["warmup"]):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(size["steps"]):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / size["steps"]
    out = {"precision": precision, "channels_last": channels_last, "compile": compile, "batch": size["batch"],
           "classes": classes, "step_ms": 1000 * seconds, "images_per_second": size["batch"] / seconds,
           "warmup_s": warmup_s}
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def throughput(size: dict, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    precisions = ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the trainer's default on CUDA (train.cudnn_benchmark)
    cases = []
    for precision in precisions:
        for channels_last in (False, True):
            cases.append(bare_step(size, device, precision, channels_last))
            _log(f"  {precision} channels_last={channels_last}: {cases[-1]['images_per_second']:.1f} images/s")
    best = max(cases, key=lambda c: c["images_per_second"])
    compiled: dict[str, Any]
    if args.no_compile:
        compiled = {"skipped": "--no-compile"}
    else:
        compiled = _child_case({"precision": best["precision"], "channels_last": best["channels_last"],
                                "compile": True}, args, timeout=args.limit(args.compile_timeout))
        _log(f"  compiled ({best['precision']}, channels_last={best['channels_last']}): {compiled}")
    return {"cases": cases, "best": best, "compiled": compiled,
            "anchor": {"images_per_second_per_a100": ANCHOR_IPS, "goal": 1.3 * ANCHOR_IPS}}


def _child_case(case: dict, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """:func:`bare_step` in a child process (``torch.compile`` can take minutes; the child is killed at ``timeout``)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--case", json.dumps(case)]
    if args.quick:
        command.append("--quick")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"did not compile and run within {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# 3. the loop's overhead


class _FixedBatches:
    """The trainer's loader replaced: the same uint8 batch for ever (no data pipeline in the figure)."""

    def __init__(self, batch: int, classes: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8, generator=generator)
        self.labels = torch.randint(0, classes, (batch,), generator=generator)
        if torch.cuda.is_available():
            self.images, self.labels = self.images.pin_memory(), self.labels.pin_memory()

    def __iter__(self):
        while True:
            yield self.images, self.labels, 0


def loop_overhead(size: dict, device: torch.device, work: Path) -> dict[str, Any]:
    from facesphere.run.config import load_config
    from facesphere.train import loop as train_loop

    precision = "fp16" if device.type == "cuda" else "bf16"
    channels_last = True
    window = size["loop_window"]
    classes = size["classes"]
    results: dict[str, Any] = {"precision": precision, "channels_last": channels_last, "batch": size["batch"],
                               "classes": classes}
    bare = bare_step({**size, "warmup": window, "steps": window}, device, precision, channels_last)
    results["bare_images_per_second"] = bare["images_per_second"]
    original = train_loop.make_loader
    train_loop.make_loader = lambda train_set, config, **kw: _FixedBatches(config.data.batch_size,
                                                                            train_set.num_classes)
    try:
        for sync_every in (1, 50):
            overrides = ["--model.backbone", size["backbone"], "--model.embed_dim", "512",
                         "--head.name", "arcface", "--data.batch_size", str(size["batch"]),
                         "--data.synthetic_identities", str(classes), "--data.synthetic_images_per_identity", "2",
                         "--data.val", "[]", "--data.num_workers", "0", "--optim.warmup_steps", "0",
                         "--train.device", device.type, "--train.amp", precision,
                         "--train.channels_last", "true", "--train.steps", str(2 * window),
                         "--train.log_every", str(window), "--train.checkpoint_every", str(2 * window),
                         "--train.sync_every", str(sync_every), "--train.quiet", "true", "--train.plots", "false"]
            for key, value in size["options"].items():
                overrides += [f"--model.{key}", json.dumps(value)]
            config = load_config(None, overrides)
            run = work / f"loop_sync{sync_every}"
            train_loop.train(config, out=run, progress=False)
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            ips = [r["images_per_second"] for r in records if "images_per_second" in r][-1]  # the warm window
            results[f"sync_every_{sync_every}"] = {"images_per_second": ips,
                                                   "overhead": bare["images_per_second"] / ips - 1.0}
            results["run"] = str(run)
            _log(f"  loop sync_every={sync_every}: {ips:.1f} images/s (bare {bare['images_per_second']:.1f})")
    finally:
        train_loop.make_loader = original
    return results


# ----------------------------------------------------------------------------------------------------------------
# 4. the head alone


def head_alone(size: dict, device: torch.device) -> dict[str, Any]:
    from facesphere.train.partial_fc import PartialFC

    rows = []
    for rate in (1.0, 0.1):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        torch.manual_seed(0)
        head = PartialFC("arcface", 512, size["head_classes"], sample_rate=rate).to(device)
        optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        x = torch.randn(size["head_batch"], 512, device=device)
        y = torch.randint(0, size["head_classes"], (size["head_batch"],), device=device)
        times = []
        for i in range(size["head_steps"] + 2):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            head(x.detach().requires_grad_(True), y).loss.backward()
            optimizer.step()
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
        row = {"rate": rate, "classes": size["head_classes"], "batch": size["head_batch"],
               "step_ms": 1000 * statistics.median(times), "spread_ms": 1000 * (max(times) - min(times))}
        if device.type == "cuda":
            row["peak_gib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
        rows.append(row)
        _log(f"  head rho={rate}: {row}")
        del head, optimizer
    return {"rows": rows}


# ----------------------------------------------------------------------------------------------------------------
# 5. the real-faces recipe


def fiw(device: torch.device, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.quick:
        return {"skipped": "--quick"}
    if not FIW_CONFIG.is_file():
        return {"skipped": f"{FIW_CONFIG.relative_to(REPO)} is not in this checkout (the real-faces issue)"}
    if not (SHARED / "data" / "fiw").is_dir():
        return {"skipped": f"{SHARED / 'data' / 'fiw'} is absent"}
    from facesphere.run.config import load_config

    config = load_config(FIW_CONFIG)
    needed = [Path(p) for p in config.data.exclude] + [Path(s.split(":", 1)[1]) for s in config.data.val
                                                         if ":" in s]
    missing = [str(p) for p in needed if not (REPO / p).exists()]
    if missing:
        return {"skipped": f"the recipe's prepared lists are missing ({', '.join(missing)}): run its steps 1-3 "
                           "(docs/training.md, 'Training on real faces') on the CPU and carry runs/fiw over"}
    run = work / "fiw"
    workers = str(min(8, os.cpu_count() or 1))
    command = [sys.executable, "-m", "facesphere.cli", "train", "--config", str(FIW_CONFIG), "--out", str(run),
               "--train.device", device.type, "--data.num_workers", workers, "--train.quiet", "true"]
    start = time.perf_counter()
    timeout = args.limit(args.fiw_timeout)
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"training did not finish within {timeout:.0f} s", "run": str(run)}
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": done.stderr[-3000:]}
    summary = json.loads((run / "metrics.json").read_text())
    out = {"run": str(run), "train_seconds": seconds, "steps": summary["steps"],
           "images_per_second": summary["images_per_second"], "val": summary["val"]}
    lfw = Path(args.lfw)
    if (REPO / lfw).is_dir() or lfw.is_dir():
        metrics = _cli_eval(run, f"lfw:{lfw if lfw.is_absolute() else REPO / lfw}", device, work / "fiw_eval")
        out["lfw"] = metrics
    else:
        out["lfw"] = {"skipped": f"no aligned LFW at {lfw} (docs/training.md step 1)"}
    return out


# ----------------------------------------------------------------------------------------------------------------
# 6. evaluation and embedding


def _cli(argv: list[str]) -> float:
    """Run the facesphere CLI in this process (its output swallowed); the seconds it took."""
    from facesphere.cli import main as cli_main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(argv)
    seconds = time.perf_counter() - start
    if code:
        raise RuntimeError(f"facesphere {' '.join(argv)} exited with {code}")
    return seconds


def _cli_eval(model: Path, data: str, device: torch.device, out: Path) -> dict[str, Any]:
    argv = ["eval", str(model), "--data", data, "--out", str(out), "--device", str(device), "--no-plots", "--quiet"]
    if device.type == "cuda":
        argv.append("--fp16")
    seconds = _cli(argv)
    metrics = json.loads((out / "metrics.json").read_text())
    (name, result), = metrics["datasets"].items()
    images = int(result.get("images", 0))
    return {"data": name, "seconds": seconds, "images": images, "images_per_second": images / seconds,
            "accuracy": result.get("accuracy")}


def eval_embed(size: dict, device: torch.device, args: argparse.Namespace, work: Path,
               model: Path | None) -> dict[str, Any]:
    if model is None:
        return {"skipped": "no model (the loop stage did not run)"}
    lfw = Path(args.lfw)
    lfw = lfw if lfw.is_absolute() else REPO / lfw
    data = f"lfw:{lfw}" if lfw.is_dir() and not args.quick else \
        f"synthetic:pairs_per_fold={size['synthetic_pairs_per_fold']}"
    out: dict[str, Any] = {"model": str(model), "eval": _cli_eval(model, data, device, work / "eval")}
    _log(f"  eval: {out['eval']}")
    folder = work / "embed_images"
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(size["embed_images"]):
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    argv = ["embed", str(model), str(folder), "--out", str(work / "embeddings.npy"), "--device", str(device),
            "--quiet"]
    if device.type == "cuda":
        argv.append("--fp16")
    seconds = _cli(argv)
    count = int(np.load(work / "embeddings.npy").shape[0])
    out["embed"] = {"images": count, "seconds": seconds, "images_per_second": count / seconds}
    _log(f"  embed: {out['embed']}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# 1. tests


def cuda_tests(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    if device.type != "cuda" and not args.tests:
        return {"skipped": "no CUDA device (--tests runs them anyway; every case skips)"}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", str(REPO / "tests" / "gpu")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    timeout = args.limit(args.tests_timeout) if hasattr(args, "limit") else args.tests_timeout
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        output = error.stdout.decode(errors="replace") if isinstance(error.stdout, bytes) else (error.stdout or "")
        return {"error": f"pytest did not finish within {timeout:.0f} s", "output": output[-3000:]}
    lines = done.stdout.strip().splitlines()
    return {"returncode": done.returncode, "summary": lines[-1] if lines else "",
            "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))],
            "output_tail": done.stdout[-4000:] if done.returncode else ""}


# ----------------------------------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def markdown(results: dict[str, Any]) -> str:
    """The docs/benchmarks.md section of a results dict."""
    stages = results["stages"]
    lines = [f"Machine: {results['machine']}; `python benchmarks/gpu.py{' --quick' if results['quick'] else ''}` "
             f"({results['seconds']:.0f} s in all).", ""]
    tests = stages.get("tests", {})
    if "summary" in tests:
        lines += [f"CUDA tests (`pytest -m cuda tests/gpu`): {tests['summary']}", ""]
    tp = stages.get("throughput", {})
    if "cases" in tp:
        first = tp["cases"][0]
        lines += [f"Training step, {results['size']['backbone']} + ArcFace, batch {first['batch']}, "
                  f"C = {first['classes']:,} (bare step: autocast forward, fp32 head, backward, clip, SGD):", "",
                  "| precision | channels-last | torch.compile | images/s | step ms |", "|---|---|---|---:|---:|"]
        for case in tp["cases"]:
            lines.append(f"| {case['precision']} | {'on' if case['channels_last'] else 'off'} | off | "
                         f"{case['images_per_second']:.0f} | {case['step_ms']:.1f} |")
        compiled = tp.get("compiled", {})
        if "images_per_second" in compiled:
            lines.append(f"| {compiled['precision']} | {'on' if compiled['channels_last'] else 'off'} | on | "
                         f"{compiled['images_per_second']:.0f} | {compiled['step_ms']:.1f} |")
        else:
            lines.append(f"| (compile) | | on | {compiled.get('skipped') or 'failed'} | |")
        if results["device"].startswith("cuda"):
            lines += ["", f"Anchor: arcface_torch ~{ANCHOR_IPS:.0f} images/s per A100 (iResNet-50, fp16); the goal "
                          f"is {1.3 * ANCHOR_IPS:.0f} per GPU; best here {tp['best']['images_per_second']:.0f}."]
        lines.append("")
    lp = stages.get("loop", {})
    if "bare_images_per_second" in lp:
        lines += ["The trainer's loop (fixed batch, no data pipeline) against the bare step, "
                  f"{lp['precision']}, channels-last:", "", "| | images/s | overhead |", "|---|---:|---:|",
                  f"| bare step | {lp['bare_images_per_second']:.0f} | — |"]
        for key in ("sync_every_1", "sync_every_50"):
            if key in lp:
                lines.append(f"| loop, `train.sync_every {key.rsplit('_', 1)[1]}` | {lp[key]['images_per_second']:.0f}"
                             f" | {100 * lp[key]['overhead']:+.1f} % |")
        lines.append("")
    head = stages.get("head", {})
    if "rows" in head:
        row0 = head["rows"][0]
        lines += [f"ArcFace head alone, Partial FC, C = {row0['classes']:,}, D = 512, batch {row0['batch']}:", "",
                  "| ρ | step ms (median) | spread ms | peak memory GiB |", "|---:|---:|---:|---:|"]
        for row in head["rows"]:
            peak = f"{row['peak_gib']:.2f}" if "peak_gib" in row else "—"
            lines.append(f"| {row['rate']} | {row['step_ms']:.1f} | {row['spread_ms']:.1f} | {peak} |")
        lines.append("")
    fiw_result = stages.get("fiw", {})
    if "steps" in fiw_result:
        lfw = fiw_result.get("lfw", {})
        accuracy = f"{100 * lfw['accuracy']:.2f} %" if isinstance(lfw.get("accuracy"), float) else \
            lfw.get("skipped", "—")
        lines += [f"FIW recipe (`configs/fiw_sfnet20_arcface.yaml`): {fiw_result['steps']} steps in "
                  f"{fiw_result['train_seconds']:.0f} s ({fiw_result['images_per_second']:.0f} images/s); "
                  f"LFW accuracy {accuracy}.", ""]
    elif fiw_result:
        lines += [f"FIW recipe: {fiw_result.get('skipped') or 'failed'}.", ""]
    ee = stages.get("eval", {})
    if "eval" in ee:
        lines += [f"`facesphere eval --device {results['device']}{' --fp16' if results['device'].startswith('cuda') else ''}`"
                  f" on {ee['eval']['data']}: {ee['eval']['images']} images in {ee['eval']['seconds']:.1f} s "
                  f"({ee['eval']['images_per_second']:.0f} images/s, flip-test, load and decode included); "
                  f"`facesphere embed`: {ee['embed']['images']} PNG files in {ee['embed']['seconds']:.1f} s "
                  f"({ee['embed']['images_per_second']:.0f} images/s).", ""]
    failed = [name for name, stage in stages.items() if "error" in stage]
    if failed:
        lines += [f"Stages that failed: {', '.join(failed)} (see the JSON)."]
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="every stage in seconds (CI); the figures mean nothing")
    parser.add_argument("--out", type=Path, default=Path("gpu_results.json"), help="the results JSON")
    parser.add_argument("--markdown", type=Path, help="rewrite the gpu section of this page (docs/benchmarks.md)")
    parser.add_argument("--work", type=Path, help="folder for the runs it trains (default: a temporary one)")
    parser.add_argument("--skip", default="", help="comma-separated stages to leave out: tests, throughput, loop, "
                                                   "head, fiw, eval")
    parser.add_argument("--tests", action="store_true", help="run the tests stage without CUDA too")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the throughput stage")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for the whole run: a stage's time limit never reaches past it (default 450)")
    parser.add_argument("--compile-timeout", type=float, default=120.0)
    parser.add_argument("--tests-timeout", type=float, default=120.0)
    parser.add_argument("--fiw-timeout", type=float, default=120.0)
    parser.add_argument("--lfw", default="lfw_aligned", help="aligned LFW folder (pairs.txt + images)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    args.device = str(device)
    size = QUICK if args.quick else FULL
    if args.case:  # a child of _child_case
        print(json.dumps(bare_step(size, device, **json.loads(args.case))))
        return 0
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = skip - {"tests", "throughput", "loop", "head", "fiw", "eval"}
    if unknown:
        parser.error(f"unknown stage(s) in --skip: {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(device), "device": str(device), "quick": args.quick,
                               "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                        "cudnn": torch.backends.cudnn.allow_tf32},
                               "size": {k: v for k, v in size.items()}, "stages": {}, "seconds": 0.0}
    temporary = None
    if args.work is None:
        temporary = tempfile.TemporaryDirectory(prefix="facesphere-gpu-")
        work = Path(temporary.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    def limit(seconds: float) -> float:
        """A stage's time limit, cut so that the rest of the run still fits the budget (a minute kept back)."""
        return max(10.0, min(seconds, left() - 60.0))

    args.limit = limit

    def stage(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if name in skip:
            results["stages"][name] = {"skipped": "--skip"}
            return results["stages"][name]
        if left() < 20.0:
            results["stages"][name] = {"skipped": f"out of time (--budget {args.budget:.0f} s)"}
            return results["stages"][name]
        _log(f"[{time.perf_counter() - started:6.1f} s] {name}")
        start = time.perf_counter()
        try:
            value = fn()
        except Exception as error:  # noqa: BLE001 - one stage failing must not lose the others
            value = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
            _log(value["traceback"])
        value["stage_seconds"] = time.perf_counter() - start
        results["stages"][name] = value
        results["seconds"] = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
        return value

    try:
        stage("tests", lambda: cuda_tests(args, device))
        stage("throughput", lambda: throughput(size, device, args))
        loop_result = stage("loop", lambda: loop_overhead(size, device, work))
        stage("head", lambda: head_alone(size, device))
        fiw_result = stage("fiw", lambda: fiw(device, args, work))
        model = Path(fiw_result["run"]) if "steps" in fiw_result else \
            (Path(loop_result["run"]) if "run" in loop_result else None)
        stage("eval", lambda: eval_embed(size, device, args, work, model))
    finally:
        results["seconds"] = time.perf_counter() - started
        args.out.write_text(json.dumps(results, indent=2, default=str))
        text = markdown(results)
        print(text)
        if args.markdown:
            write_section(args.markdown, "gpu", text)
        if temporary is not None:
            temporary.cleanup()
    return 0 if not any("error" in s for s in results["stages"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
