"""The training loop: one function, :func:`train`, from a resolved :class:`Config` to a trustworthy run directory.

Run directory::

    config.yaml            the resolved config (every default spelled out)
    checkpoints/step_N.pt  atomic checkpoints (model, head, optimiser, scaler, counters, RNG states)
    best.pt                the checkpoint with the best mean validation accuracy so far
    metrics.jsonl          one JSON line per logged step and per validation
    metrics.json           the summary: steps, images_per_second, val {set: {accuracy, accuracy_std, ...}}, ...
    curves.png             loss / learning rate / accuracy curves (when matplotlib is installed)

Determinism: the data order and augmentations depend only on (seed, epoch, index) (see :mod:`.data`), the learning
rate only on the step, and every other piece of state is checkpointed, so ``train(resume=RUN_DIR)`` after a kill
continues bit for bit on the CPU.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.pairs import PairSet, cached_pair_set, open_pair_set
from ..errors import TrainingError
from ..evaluate.report import format_table
from ..evaluate.verification import verify_pairs
from ..files import atomic_write_text
from ..run.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_state_dict_checked,
    prune_checkpoints,
    save_checkpoint,
    unwrap_model,
)
from ..run.config import Config, config_to_dict
from ..run.directory import (
    BEST_NAME,
    CHECKPOINT_FORMAT,
    build_model_backbone,
    build_model_head,
    default_run_dir,
    read_run_config,
)
from .data import build_train_set, make_loader, normalize, warn_synthetic_validation
from .distributed import cleanup_distributed, init_distributed
from .interrupt import StopSignals, interrupted
from .optim import build_optimizer, set_learning_rate
from .partial_fc import PartialFC
from .rundir import RunDirectory, resume_changes

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain model inside ``torch.compile`` / DDP wrappers (whose state dict has the model's own keys)."""
    return unwrap_model(module)


def resolve_sync_every(sync_every: int, device: torch.device) -> int:
    """``train.sync_every`` with 0 (auto) resolved: 1 on the CPU (a host read is free there, and the loop then
    behaves exactly as it always did), :data:`CUDA_SYNC_EVERY` on CUDA."""
    if sync_every > 0:
        return int(sync_every)
    return CUDA_SYNC_EVERY if device.type == "cuda" else 1


#: ``train.sync_every: 0`` on CUDA: read the guard flags every 50 steps (a few seconds of an iResNet-50 run; a
#: non-finite streak is found at most 50 steps late, its gradients zeroed meanwhile).
CUDA_SYNC_EVERY = 50


def ddp_options(tc: Any, device: torch.device) -> dict[str, Any]:
    """The keyword arguments the trainer passes to ``DistributedDataParallel`` (``train.ddp_*``, docs/gpu.md)."""
    return {
        "device_ids": [device.index] if device.type == "cuda" else None,
        "broadcast_buffers": bool(tc.ddp_broadcast_buffers),
        "gradient_as_bucket_view": bool(tc.ddp_gradient_as_bucket_view),
        "static_graph": bool(tc.ddp_static_graph),
        "bucket_cap_mb": float(tc.ddp_bucket_cap_mb),
    }


def wrap_ddp(backbone: nn.Module, tc: Any, device: torch.device) -> nn.Module:
    """``backbone`` in ``DistributedDataParallel`` with the config's options, and the fp16 gradient-compression
    communication hook when ``train.ddp_fp16_compress`` is set."""
    model = nn.parallel.DistributedDataParallel(backbone, **ddp_options(tc, device))
    if tc.ddp_fp16_compress:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    return model


def make_scaler(tc: Any, device: torch.device, *, force: bool = False) -> torch.amp.GradScaler:
    """The fp16 grad scaler: enabled for ``train.amp: fp16`` on CUDA (``force``: on any device, for tests), doubling
    its scale every ``train.scaler_growth_interval`` steps without an overflow."""
    enabled = tc.amp == "fp16" and (device.type == "cuda" or force)
    return torch.amp.GradScaler(device.type, enabled=enabled, growth_interval=tc.scaler_growth_interval)


class DeviceGuard:
    """The non-finite guard's state kept on the device between host reads (``train.sync_every`` > 1).

    Per step :meth:`record` adds, without a host sync: whether the step was non-finite, the run of consecutive
    non-finite steps (and its longest run since the last read) and the step's loss (0 for a non-finite step).
    :meth:`read` fetches all of it in one transfer and resets the window."""

    def __init__(self, device: torch.device, consecutive: int) -> None:
        self.device = device
        self.consecutive = torch.tensor(consecutive, dtype=torch.int64, device=device)
        self._reset()

    def _reset(self) -> None:
        self.bad_steps = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.longest = self.consecutive.to(torch.float64)  # a streak carried in counts from its start

    def record(self, bad: torch.Tensor, loss: torch.Tensor | None) -> None:
        self.bad_steps += bad
        self.consecutive = torch.where(bad, self.consecutive + 1, torch.zeros_like(self.consecutive))
        self.longest = torch.maximum(self.longest, self.consecutive.to(torch.float64))
        if loss is not None:
            self.loss += torch.where(bad, torch.zeros_like(loss), loss).to(torch.float64)

    def read(self) -> tuple[int, int, int, float]:
        """``(non-finite steps, consecutive now, longest run, loss sum)`` since the last read (one host sync)."""
        values = torch.stack([self.bad_steps, self.consecutive.to(torch.float64), self.longest, self.loss]).tolist()
        self._reset()
        return int(values[0]), int(values[1]), int(values[2]), float(values[3])


@dataclass
class RunState:
    step: int = 0
    nonfinite_steps: int = 0
    consecutive_nonfinite: int = 0
    bad_samples: int = 0
    seen_samples: int = 0
    images_trained: int = 0
    train_seconds: float = 0.0
    best_accuracy: float = -1.0
    best_step: int = -1
    last_val: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "last_val"} | {
            "last_val": json.dumps(self.last_val)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        state = cls(**{k: v for k, v in data.items() if k != "last_val"})
        state.last_val = json.loads(data.get("last_val", "{}"))
        return state


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": repr(random.getstate()),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    import ast

    random.setstate(ast.literal_eval(state["python"]))


class MetricsLog:
    """``metrics.jsonl``, appended and flushed line by line; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        self.handle = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _build_model(config: Config, num_classes: int, dist: Any) -> tuple[nn.Module, nn.Module]:
    backbone = build_model_backbone(config)
    use_partial = dist.is_distributed or config.head.partial_fc_rate < 1.0
    if use_partial:
        head: nn.Module = PartialFC(config.head.name, config.model.embed_dim, num_classes,
                                    sample_rate=config.head.partial_fc_rate, dist=dist, seed=config.train.seed,
                                    **config.head.options)
    else:
        head = build_model_head(config, num_classes)
    return backbone, head


def _nonfinite_message(config: Config, count: int) -> str:
    causes = [f"the learning rate (optim.lr={config.optim.lr}) is too high for this model / batch size",
              f"the margin is too strong for this stage of training (head {config.head.name} "
              f"{config.head.options or '(published defaults)'}); try a smaller m or a margin warm-up"]
    if config.train.amp == "fp16":
        causes.insert(0, "fp16 overflow (train.amp=fp16): try train.amp=bf16 or none")
    return (f"the loss or gradients were non-finite for {count} consecutive steps; stopping instead of saving a NaN "
            f"model. Likely causes: " + "; ".join(causes) + ".")


def train(config: Config | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
          progress: bool | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train (or resume) a run; returns the ``metrics.json`` summary.

    A new run refuses an ``out`` directory that exists and is not empty (:class:`~facesphere.errors.RunExistsError`)
    unless ``overwrite`` (the old run's files are then deleted once the new run is ready to start); the directory is
    created only then, and removed again when the run fails before its first step (:mod:`.rundir`). SIGINT / SIGTERM
    during the steps save a checkpoint and raise :class:`~facesphere.errors.TrainingInterrupted` naming the
    ``--resume`` command (:mod:`.interrupt`).
    """
    config, run_dir, resume_path = _resolve_run(config, out, resume)
    run = RunDirectory(run_dir, resume=resume is not None, overwrite=overwrite)
    try:
        return _train(config, run, resume_path, progress)
    except BaseException:
        run.discard()
        raise


def _resolve_run(config: Config | None, out: str | Path | None,
                 resume: str | Path | None) -> tuple[Config, Path, Path | None]:
    resume_path: Path | None = None
    if resume is not None:
        run_dir = Path(resume)
        saved = read_run_config(run_dir)
        # a config given with resume may change only what is safe mid-run (train.steps to extend it, logging...);
        # anything else is refused by name (the run would otherwise mix two trainings)
        config = saved if config is None else resume_changes(saved, config, run_dir)[0]
        resume_path = latest_checkpoint(run_dir)
    else:
        config = config or Config()
        run_dir = Path(out) if out is not None else default_run_dir(config)
    return config, run_dir, resume_path


def _train(config: Config, run: RunDirectory, resume_path: Path | None, progress: bool | None) -> dict[str, Any]:
    run_dir = run.path
    tc = config.train
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    dist = init_distributed(tc.device)
    device = dist.device if dist.is_distributed else resolve_device(tc.device)
    main = dist.is_main
    show = (not tc.quiet) if progress is None else progress
    show = show and main

    random.seed(tc.seed)
    np.random.seed(tc.seed % 2**32)
    torch.manual_seed(tc.seed)

    if main:
        warn_synthetic_validation(config)
    train_set = build_train_set(config)
    backbone, head = _build_model(config, train_set.num_classes, dist)
    if tc.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    backbone.to(device)
    head.to(device)
    optimizer = build_optimizer(backbone, head, config.optim)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(tc.amp)
    if tc.amp == "fp16" and device.type != "cuda":
        logger.warning("train.amp=fp16 needs CUDA (the grad scaler); using bf16 autocast on %s", device.type)
        amp_dtype = torch.bfloat16
    scaler = make_scaler(tc, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = tc.cudnn_benchmark
    sync_every = resolve_sync_every(tc.sync_every, device)

    state = RunState()
    if resume_path is not None:
        checkpoint = load_checkpoint(_rank_path(resume_path, dist.rank), map_location=device)
        load_state_dict_checked(backbone, checkpoint["backbone"], str(resume_path), "backbone")
        load_state_dict_checked(head, checkpoint["head"], str(resume_path), "head")
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = RunState.from_dict(checkpoint["state"])
        _set_rng_state(checkpoint["rng"])
    run.state = state
    model_for_eval = backbone
    if dist.is_distributed:
        backbone = wrap_ddp(backbone, tc, device)
    if tc.compile:
        backbone = torch.compile(backbone)

    val_sets = _load_val_sets(config) if main else []
    if main:
        run.create(config)  # only now: a run that could not start leaves no directory
    log = MetricsLog(run_dir / "metrics.jsonl", state.step if resume_path is not None else None) if main else None
    writer = _tensorboard(run_dir) if main else None
    accumulate = config.optim.accumulate
    total = tc.steps
    loader = make_loader(train_set, config, start=state.step * accumulate, total=total * accumulate,
                         rank=dist.rank, world_size=dist.world_size)
    batches = iter(loader)
    bar = _progress(total, state.step, show)
    if main and state.step == 0:
        logger.info("training %s + %s on %s", config.model.backbone, config.head.name, train_set.description)

    window_images, window_start, window_loss, window_correct, window_count = 0, time.perf_counter(), 0.0, 0, 0
    extras: dict[str, torch.Tensor] = {}
    eager = sync_every == 1  # check the guards on the host every step (the CPU default)
    guard = None if eager else DeviceGuard(device, state.consecutive_nonfinite)
    window_start_step = state.step
    backbone.train()
    head.train()
    stop = StopSignals().install()
    try:
        while state.step < total:
            step_start = time.perf_counter()
            lr = set_learning_rate(optimizer, state.step, total, config.optim)
            optimizer.zero_grad(set_to_none=True)
            next_step = state.step + 1
            log_due = next_step % tc.log_every == 0 or next_step == total  # (on every rank: syncs line up)
            log_step = main and log_due
            finite, step_loss, step_images = True, 0.0, 0
            loss_sum: torch.Tensor | None = None  # the step's loss on the device (sync_every > 1)
            for _ in range(accumulate):
                images, labels, num_bad = next(batches)
                state.bad_samples += int(num_bad)
                state.seen_samples += int(labels.shape[0]) + int(num_bad)
                _check_bad_fraction(state, config)
                if labels.numel() == 0:
                    continue
                images = normalize(images.to(device, non_blocking=True), config.data.pixel_mean, config.data.pixel_std)
                labels = labels.to(device, non_blocking=True)
                if tc.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    embeddings = backbone(images)
                out = head(embeddings, labels)
                loss = out.loss / accumulate
                if eager:
                    if not torch.isfinite(loss):
                        finite = False
                        break
                    scaler.scale(loss).backward()
                    extras = out.extras
                    step_loss += float(loss.detach())
                    step_images += int(labels.shape[0])
                    if out.logits is not None:
                        window_correct += int((out.logits.detach().argmax(dim=1) == labels).sum())
                        window_count += int(labels.shape[0])
                else:  # no host read: the loss and accuracy stay on the device
                    scaler.scale(loss).backward()
                    extras = out.extras
                    loss_sum = loss.detach().float() if loss_sum is None else loss_sum + loss.detach().float()
                    step_images += int(labels.shape[0])
                    if log_step and out.logits is not None:  # the accuracy of logging steps only
                        window_correct += (out.logits.detach().argmax(dim=1) == labels).sum()
                        window_count += int(labels.shape[0])
            if finite:
                scaler.unscale_(optimizer)
                params = [p for p in backbone.parameters() if p.grad is not None]
                if config.optim.clip_grad_norm > 0:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.optim.clip_grad_norm)
                else:
                    grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])) if params \
                        else torch.zeros(())
                if eager and not torch.isfinite(grad_norm) and not scaler.is_enabled():
                    finite = False
            if not eager:
                bad = torch.zeros((), dtype=torch.bool, device=device)
                if loss_sum is not None:
                    bad = bad | ~torch.isfinite(loss_sum)
                if not scaler.is_enabled():  # (the fp16 scaler skips a step with non-finite gradients itself)
                    bad = bad | ~torch.isfinite(grad_norm.to(device))
                    _zero_grads_where(optimizer, bad)
                guard.record(bad, loss_sum)
            if finite:
                scaler.step(optimizer)
                scaler.update()
                state.consecutive_nonfinite = 0 if eager else state.consecutive_nonfinite
            else:
                optimizer.zero_grad(set_to_none=True)
                if scaler.is_enabled():
                    half = scaler.get_scale() / 2
                    scaler.scale(torch.ones((), device=device))  # creates the scale when the first step is the bad one
                    scaler.update(half)
                state.nonfinite_steps += 1
                state.consecutive_nonfinite += 1
                logger.warning("step %d: non-finite loss or gradients, step skipped (%d in a row)",
                               state.step + 1, state.consecutive_nonfinite)
                if state.consecutive_nonfinite >= tc.max_nonfinite_steps:
                    raise TrainingError(_nonfinite_message(config, state.consecutive_nonfinite))
            state.step += 1
            state.images_trained += step_images * dist.world_size
            state.train_seconds += time.perf_counter() - step_start
            window_images += step_images * dist.world_size
            window_loss += step_loss
            validate_now = tc.val_every > 0 and state.step % tc.val_every == 0 and state.step < total
            save_now = state.step % tc.checkpoint_every == 0 or state.step == total
            # Ctrl-C / SIGTERM: save and stop. Across DDP ranks the check is a collective: at the guard's cadence
            signal_check = state.step < total and (not dist.is_distributed or state.step % sync_every == 0)
            signum = stop.requested(device) if signal_check else None
            save_now = save_now or bool(signum)
            if guard is not None and (state.step % sync_every == 0 or log_due or validate_now or save_now):
                window_loss += _read_guard(guard, state, config, window_start_step)  # every rank: the same steps
                window_start_step = state.step
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}" if eager else "-", lr=f"{lr:.3g}",
                                ips=f"{state.images_trained / max(state.train_seconds, 1e-9):.0f}")
            if main and (state.step % tc.log_every == 0 or state.step == total):
                elapsed = time.perf_counter() - window_start
                steps_in_window = tc.log_every if state.step % tc.log_every == 0 else state.step % tc.log_every
                record = {"step": state.step, "loss": window_loss / max(steps_in_window, 1), "lr": lr,
                          "images_per_second": window_images / max(elapsed, 1e-9),
                          "bad_samples": state.bad_samples, "nonfinite_steps": state.nonfinite_steps}
                if window_count:
                    record["train_accuracy"] = int(window_correct) / window_count
                record |= {k: float(v) for k, v in extras.items() if v.numel() == 1}
                log.write(record)
                if writer is not None:
                    for key, value in record.items():
                        if key != "step":
                            writer.add_scalar(f"train/{key}", value, state.step)
                if bar is None and not tc.quiet:
                    print(f"step {state.step}/{total} loss {record['loss']:.4f} lr {lr:.4g} "
                          f"{record['images_per_second']:.0f} img/s", file=sys.stderr)
                window_images, window_start, window_loss, window_correct, window_count = 0, time.perf_counter(), 0.0, 0, 0
            if main and (validate_now or state.step == total) and val_sets:
                _validate(model_for_eval, val_sets, config, device, state, log, writer, run_dir, backbone, head,
                          optimizer, scaler, dist)
            if save_now:
                _save(run_dir / "checkpoints" / f"step_{state.step}.pt", backbone, head, optimizer, scaler, state,
                      config, dist)
                if main:
                    prune_checkpoints(run_dir, tc.keep_checkpoints)
            if signum:
                raise interrupted(signum, run_dir, run_dir / "checkpoints" / f"step_{state.step}.pt", state.step,
                                  total)
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        if writer is not None:
            writer.close()
        del batches
        cleanup_distributed()

    summary = {
        "steps": state.step,
        "images_per_second": state.images_trained / max(state.train_seconds, 1e-9),
        "train_seconds": state.train_seconds,
        "val": state.last_val,
        "best": {"step": state.best_step, "accuracy": state.best_accuracy},
        "nonfinite_steps": state.nonfinite_steps,
        "bad_samples": state.bad_samples,
        "run_dir": str(run_dir),
    }
    if main:
        atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2))
        if tc.plots:
            _plot_curves(run_dir)
        summary["table"] = results_table(summary)
    return summary


def _zero_grads_where(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """Zero every gradient the optimiser will apply when the 0-d device flag ``bad`` is set (no host sync): the
    step of a non-finite loss / gradient becomes a zero-gradient step (``train.sync_every`` > 1)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                param.grad.masked_fill_(bad, 0.0)


def _read_guard(guard: DeviceGuard, state: RunState, config: Config, first_step: int) -> float:
    """Read the device-side guard (one host sync): count the non-finite steps since ``first_step``, stop the run on
    a streak of ``train.max_nonfinite_steps``; returns the loss summed over the finite steps read."""
    bad, consecutive, longest, loss = guard.read()
    state.nonfinite_steps += bad
    state.consecutive_nonfinite = consecutive
    if bad:
        logger.warning("steps %d-%d: %d step(s) with a non-finite loss or gradients, their gradients zeroed "
                       "(at most %d in a row)", first_step + 1, state.step, bad, longest)
        if longest >= config.train.max_nonfinite_steps:
            raise TrainingError(_nonfinite_message(config, longest))
    return loss


def _rank_path(path: Path, rank: int) -> Path:
    return path if rank == 0 else path.with_name(path.stem + f".rank{rank}.pt")


def _save(path: Path, backbone, head, optimizer, scaler, state: RunState, config: Config, dist) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "backbone": unwrap(backbone).state_dict(),
        "head": unwrap(head).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "state": state.as_dict(),
        "rng": _rng_state(),
        "config": json.dumps(config_to_dict(config)),
    }
    save_checkpoint(payload, _rank_path(path, dist.rank))


def _check_bad_fraction(state: RunState, config: Config) -> None:
    limit = config.data.max_bad_fraction
    if state.seen_samples >= 1000 and state.bad_samples > limit * state.seen_samples:
        raise TrainingError(
            f"{state.bad_samples} of the {state.seen_samples} samples read so far could not be loaded, more than "
            f"data.max_bad_fraction={limit}; the dataset looks broken: run 'facesphere data verify' on it"
        )


def _load_val_sets(config: Config) -> list[PairSet]:
    """The validation sets, each image decoded once (at the first validation) and kept for the later ones."""
    data = config.data
    return [
        cached_pair_set(open_pair_set(spec, image_size=data.image_size, seed=config.train.seed,
                                      pairs_per_fold=data.synthetic_val_pairs_per_fold,
                                      difficulty=data.synthetic_difficulty,
                                      identity_spread=data.synthetic_identity_spread))
        for spec in data.val
    ]


def _validate(model, val_sets, config, device, state, log, writer, run_dir, backbone, head, optimizer, scaler, dist):
    results = {}
    for pairs in val_sets:
        results[pairs.name], _ = verify_pairs(model, pairs, device=device, mean=config.data.pixel_mean,
                                              std=config.data.pixel_std, color=config.data.color,
                                              batch_size=max(config.data.batch_size, 64))
    state.last_val = results
    mean_accuracy = float(np.mean([r["accuracy"] for r in results.values()]))
    if log is not None:
        log.write({"step": state.step, "val": results})
    if writer is not None:
        for name, metrics in results.items():
            writer.add_scalar(f"val/{name}/accuracy", metrics["accuracy"], state.step)
    improved = mean_accuracy > state.best_accuracy
    if improved:
        state.best_accuracy, state.best_step = mean_accuracy, state.step
        _save(run_dir / BEST_NAME, backbone, head, optimizer, scaler, state, config, dist)
    if not config.train.quiet:  # one line per validation, in percent like every table facesphere prints
        sets = ", ".join(f"{name} {100 * metrics['accuracy']:.2f} %" for name, metrics in results.items())
        print(f"step {state.step}/{config.train.steps} validation: {sets}"
              f"{' (best so far)' if improved else f' (best {100 * state.best_accuracy:.2f} % at step {state.best_step})'}",
              file=sys.stderr)


def _progress(total: int, initial: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc="train")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def results_table(summary: dict[str, Any]) -> str:
    """A plain-text results table of a run's summary: its throughput line, then the validation sets as
    ``facesphere eval`` prints them."""
    lines = [f"steps {summary['steps']}, {summary['images_per_second']:.1f} images/s, "
             f"non-finite steps {summary['nonfinite_steps']}, bad samples {summary['bad_samples']}"]
    if summary.get("val"):
        lines.append(format_table({"datasets": summary["val"]}))
    return "\n".join(lines)


def _plot_curves(run_dir: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no curves.png")
        return
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_records = [r for r in records if "loss" in r]
    val_records = [r for r in records if "val" in r]
    if not train_records:
        return
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    steps = [r["step"] for r in train_records]
    axes[0].plot(steps, [r["loss"] for r in train_records])
    axes[0].set(title="training loss", xlabel="step", ylabel="loss (mean over the logging window)")
    axes[1].plot(steps, [r["lr"] for r in train_records])
    axes[1].set(title="learning rate", xlabel="step", ylabel="learning rate")
    if any("train_accuracy" in r for r in train_records):
        axes[2].plot([r["step"] for r in train_records if "train_accuracy" in r],
                     [100 * r["train_accuracy"] for r in train_records if "train_accuracy" in r])
    axes[2].set(title="training accuracy (batches, margin applied)", xlabel="step", ylabel="accuracy %",
                ylim=(0, 100))
    for name in sorted({n for r in val_records for n in r["val"]}):
        axes[3].plot([r["step"] for r in val_records if name in r["val"]],
                     [100 * r["val"][name]["accuracy"] for r in val_records if name in r["val"]], "o-", label=name)
    axes[3].set(title="verification accuracy (validation pairs)", xlabel="step", ylabel="10-fold accuracy %",
                ylim=(50, 100))
    if val_records:
        axes[3].legend()
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)


__all__ = ["train", "TrainingError", "results_table"]
