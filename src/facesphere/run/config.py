"""Typed training configuration: dataclasses with defaults; YAML only serialises them.

``load_config(path, overrides)`` reads a YAML file of (partial) overrides of the defaults and applies dotted
command-line overrides such as ``--head.name arcface --head.m 0.5 --optim.lr 0.1``. Every key is validated: unknown
sections / fields are rejected with the valid names, values are converted to the field's type (or, for head and
backbone options, to the type of the option's published default) and rejected with a clear message when they do not
parse. ``save_config`` writes the fully resolved config (every default spelled out) next to each run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..backbones import BACKBONES, backbone_options
from ..data import limits
from ..data.transforms import Augmentation
from ..errors import ConfigError, InvalidOptionError, UnknownNameError
from ..files import atomic_write_text
from ..heads import HEADS, build_head, head_options, resolve_aliases, resolved_options


@dataclass
class DataConfig:
    """What to train and validate on.

    ``train``: ``synthetic`` (built-in identities, the default) or a dataset spec: ``folder:DIR``, ``list:FILE``,
    ``rec:PREFIX`` or a bare path (auto-detected). ``exclude``: files listing identity (class) names to leave out of
    the training set, one per line (e.g. ``facesphere data overlap``'s ``overlap.txt``, ``facesphere data split``'s
    held-out identities). ``val``: verification sets checked during training: ``synthetic``, ``bin:FILE.bin``,
    ``lfw:DIR`` (pairs.txt + images), ``pairs:FILE`` (OpenSphere list).

    Augmentations (docs/data.md; all off by default except the flip, seeded per sample so resume is exact):
    ``flip``, ``crop_scale`` (random resized crop, min area fraction; 1 = off), ``down_prob`` / ``down_min``
    (down-scale and back), ``blur_prob`` / ``blur_sigma`` (Gaussian blur), ``color_jitter`` (brightness / contrast /
    saturation strength), ``gray_prob`` (grayscale).
    """

    train: str = "synthetic"
    exclude: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=lambda: ["synthetic"])
    synthetic_identities: int = 300
    synthetic_images_per_identity: int = 24
    # 1.5: the default run (600 steps, ~3 min on 2 CPU cores) lands near 90% verification accuracy, leaving room
    # for better losses to show (docs/synthetic.md); 1.0 reaches ~97% with the same budget.
    synthetic_difficulty: float = 1.5
    synthetic_identity_spread: float = 1.0
    synthetic_label_noise: float = 0.0
    synthetic_val_pairs_per_fold: int = 100
    image_size: list[int] = field(default_factory=lambda: [112, 112])
    batch_size: int = 64
    num_workers: int = 2
    flip: bool = True
    crop_scale: float = 1.0
    down_prob: float = 0.0
    down_min: float = 0.5
    blur_prob: float = 0.0
    blur_sigma: float = 1.5
    color_jitter: float = 0.0
    gray_prob: float = 0.0
    color: str = "rgb"
    pixel_mean: float = 127.5
    pixel_std: float = 127.5
    bad_samples: str = "skip"
    max_bad_fraction: float = 0.01


@dataclass
class ModelConfig:
    """The backbone: a registry name, the embedding size and backbone-specific options.

    The default is a narrow SFNet-4 with BatchNorm (stage widths 16/32/64/128, 1.7M parameters) so that the default
    run fits in a few minutes on a laptop CPU; the paper recipes in ``configs/`` use the full networks.
    """

    backbone: str = "sfnet4"
    embed_dim: int = 128
    options: dict[str, Any] = field(default_factory=lambda: {"channels": (16, 32, 64, 128), "batchnorm": True})


@dataclass
class HeadConfig:
    """The head: a registry name and its options (unset options take the published defaults)."""

    name: str = "sphereface_r"
    options: dict[str, Any] = field(default_factory=dict)
    partial_fc_rate: float = 1.0


@dataclass
class OptimConfig:
    """Optimiser and schedule.

    ``schedule``: ``step`` (× gamma at each of ``milestones``, given as fractions of the total steps when ≤ 1),
    ``poly`` (polynomial decay with ``power`` to ``min_lr``), ``cosine`` or ``constant``; all after
    ``warmup_steps`` of linear warm-up. Weight decay is not applied to BatchNorm / PReLU parameters and biases
    unless ``decay_all`` (every parameter decays, as in OpenSphere's and arcface_torch's recipes).
    ``head_lr`` (default: ``lr``) is the learning rate of the classification head.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    head_lr: float | None = None
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "step"
    milestones: list[float] = field(default_factory=lambda: [0.6, 0.85])
    gamma: float = 0.1
    power: float = 1.0
    min_lr: float = 0.0
    warmup_steps: int = 50
    clip_grad_norm: float = 5.0
    decay_all: bool = False
    accumulate: int = 1


@dataclass
class TrainConfig:
    """The run itself.

    Speed options (docs/gpu.md gives the reasons for each default):

    ``cudnn_benchmark``: let cuDNN time its convolution algorithms on the first batches and keep the fastest (the
    fixed 112x112 inputs are its ideal case); CUDA only. It makes GPU runs non-deterministic run to run (the
    chosen algorithm may differ); set false for repeatable GPU runs. No effect on the CPU.

    ``sync_every``: how often (in steps) the host reads the device's guard flags (non-finite loss / gradient norm)
    and the running loss. 1 checks every step before the optimiser step (a skipped step is a true no-op); N > 1
    keeps the flags on the device, zeroes the gradients of a non-finite step instead of skipping it (the optimiser
    still applies momentum and weight decay to zero gradients), reads the flags every N steps (and at every log,
    validation and checkpoint) and computes the training accuracy only on logging steps. 0 (default) = 1 on the CPU
    (where a host read costs nothing; results are those of every earlier version) and 50 on CUDA.

    ``scaler_growth_interval``: with ``amp: fp16``, the grad scaler doubles its scale after this many steps without
    an overflow. PyTorch's default, 2000, is slow for margin heads: their logits (s = 64 times a cosine) overflow
    fp16 gradients early in training, each overflow halves the scale, and at 2000 steps per doubling the scale
    stays needlessly low (small gradients flush to zero) for tens of thousands of steps. 100 (arcface_torch's
    choice for the same heads) recovers within a few hundred steps, at the price of one skipped step per 100
    when the scale sits at its ceiling.

    ``ddp_*`` (multi-process runs only; passed to ``DistributedDataParallel``): ``ddp_broadcast_buffers`` (re-send
    rank 0's BatchNorm statistics before every forward; off: rank 0's statistics, the ones its checkpoints hold,
    are the same either way), ``ddp_gradient_as_bucket_view`` (gradients live in the all-reduce buckets: one copy
    less per step, less memory), ``ddp_static_graph`` (the backbone uses the same parameters every step; off by
    default, PyTorch's default), ``ddp_fp16_compress`` (all-reduce the gradients in fp16: half the traffic, for
    slow interconnects; off: one node's NVLink is not the bottleneck and fp32 sums are exact-er),
    ``ddp_bucket_cap_mb`` (all-reduce bucket size, PyTorch's 25).
    """

    steps: int = 600
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    threads: int = 0
    log_every: int = 20
    val_every: int = 200
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    max_nonfinite_steps: int = 20
    quiet: bool = False
    plots: bool = True
    cudnn_benchmark: bool = True
    sync_every: int = 0
    scaler_growth_interval: int = 100
    ddp_broadcast_buffers: bool = False
    ddp_gradient_as_bucket_view: bool = True
    ddp_static_graph: bool = False
    ddp_fp16_compress: bool = False
    ddp_bucket_cap_mb: float = 25.0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CHOICES = {
    ("data", "bad_samples"): ("skip", "fail"),
    ("data", "color"): ("rgb", "bgr"),
    ("optim", "optimizer"): ("sgd", "adamw"),
    ("optim", "schedule"): ("step", "poly", "cosine", "constant"),
    ("train", "amp"): ("none", "fp16", "bf16"),
}


# ----------------------------------------------------------------------------------------------------------------
# conversion


def _parse_scalar(text: str, where: str = "command line") -> Any:
    """A command-line value as YAML scalar / list (``0.5`` -> float, ``true`` -> bool, ``[1, 2]`` -> list)."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError):
        return text
    check_size(value, where)
    return value


def _as_float(value: str) -> float | None:
    """``value`` as a float when Python's ``float()`` reads it (``1e6``, ``5e-4``, ``1_000.5``, ``inf``), else None.

    YAML 1.1 (PyYAML) reads ``1e6`` and ``5e-4`` as strings (its floats need a dot), so every number that reaches
    the config as text goes through here too."""
    try:
        return float(value.strip())
    except ValueError:
        return None


def check_size(value: Any, where: str, limit: int | None = None) -> None:
    """Refuse a value holding more than ``limit`` values in all (YAML aliases expanded; a self-referencing
    structure counts forever): the "billion laughs" bomb, refused after ``limit`` steps instead of spinning."""
    limit = limits.MAX_CONFIG_VALUES if limit is None else limit
    stack, count = [value], 0
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            raise ConfigError(f"{where}: holds more than {limit} values (YAML anchors and aliases nested into each "
                              "other, or a structure that refers to itself); a config is a few hundred values")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Convert ``value`` to ``annotation`` or raise ConfigError naming ``where``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0], where)
    if annotation is Any:
        return value
    if origin is list:
        if isinstance(value, str):
            value = _parse_scalar(value, where)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            value = [value]
        item_type = args[0] if args else Any
        return [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_shown(value)}")
        return dict(value)
    if isinstance(value, str) and annotation is not str:
        value = _parse_scalar(value, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {_shown(value)}")
    if annotation is int:
        if isinstance(value, str) and _as_float(value) is not None:  # 1e4 (YAML 1.1 leaves it a string)
            value = _as_float(value)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{where}: expected an integer, got {_shown(value)}")
        if not -(1 << 63) <= value < 1 << 63:
            raise ConfigError(f"{where}: the integer {_shown(value)} is out of range")
        return value
    if annotation is float:
        if isinstance(value, str) and _as_float(value) is not None:
            return _as_float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_shown(value)}")
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: the number {_shown(value)} is out of range") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {_shown(value)}")
        return str(value)
    return value


def _shown(value: Any) -> str:
    """A value for a message: its ``repr``, cut short (a config value can be a long string or a deep list)."""
    try:
        text = repr(value) if not isinstance(value, int) or value.bit_length() < 300 else f"an integer of " \
            f"{value.bit_length()} bits"
    except (RecursionError, ValueError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= 120 else text[:117] + "..."


def convert_like(value: Any, default: Any, where: str) -> Any:
    """Convert ``value`` to the type of ``default`` (head / backbone options are typed by their defaults)."""
    if default is None:
        return _parse_scalar(value, where) if isinstance(value, str) else value
    if isinstance(default, bool):
        return _convert(value, bool, where)
    if isinstance(default, int):
        return _convert(value, int, where)
    if isinstance(default, float):
        return _convert(value, float, where)
    if isinstance(default, str):
        return _convert(value, str, where)
    if isinstance(default, (tuple, list)):
        if isinstance(value, str):
            value = _parse_scalar(value, where)
        if value is None or isinstance(value, dict):
            raise ConfigError(f"{where}: expected a list, got {_shown(value)}")
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        kinds = {type(v) for v in default}
        if len(kinds) == 1 and kinds <= {bool, int, float, str}:  # items typed like the default's
            kind = kinds.pop()
            items = [convert_like(v, kind(), f"{where}[{i}]") for i, v in enumerate(items)]
        return tuple(items) if isinstance(default, tuple) else items
    return value


def _section_types(section_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _section_cls(name: str) -> type:
    return typing.get_type_hints(Config)[name]


def _set(config: Config, key: str, value: Any, source: str) -> None:
    """Set ``section.field`` (or a head / backbone option) with validation."""
    parts = key.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{source}: {key!r} must be SECTION.FIELD with SECTION one of {', '.join(SECTIONS)}")
    section_name, field_name = parts
    check_size(value, f"{source}: {key}")
    if section_name not in SECTIONS:
        raise ConfigError(f"{source}: unknown section {section_name!r}; valid sections: {', '.join(SECTIONS)}")
    section = getattr(config, section_name)
    types = _section_types(type(section))
    if field_name not in types:
        if section_name in ("head", "model"):
            section.options[field_name] = value  # validated against the chosen head / backbone in validate()
            return
        raise ConfigError(
            f"{source}: unknown key {key!r}; valid keys of [{section_name}]: {', '.join(sorted(types))}"
        )
    converted = _convert(value, types[field_name], f"{source}: {key}")
    if (section_name, field_name) in (("model", "backbone"), ("head", "name")) and converted != getattr(section, field_name):
        section.options.clear()  # options belong to the registry entry they were set for (e.g. the default's)
    if field_name == "options" and isinstance(converted, dict):
        section.options.update(converted)
        return
    setattr(section, field_name, converted)


def apply_mapping(config: Config, mapping: dict[str, Any], source: str) -> None:
    """Apply a nested mapping ``{section: {field: value}}`` (a YAML file's content)."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections ({', '.join(SECTIONS)})")
    check_size(mapping, source)
    for section_name, values in mapping.items():
        if not isinstance(section_name, str) or section_name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {_shown(section_name)}; valid sections: "
                              f"{', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section_name!r} must be a mapping, got {_shown(values)}")
        # the head / backbone name first, so that its options validate against the right registry entry
        ordered = sorted(values.items(), key=lambda kv: kv[0] not in ("name", "backbone"))
        for field_name, value in ordered:
            if not isinstance(field_name, str):
                raise ConfigError(f"{source}: section {section_name!r} has the key {_shown(field_name)}; keys are "
                                  "names")
            _set(config, f"{section_name}.{field_name}", value, source)


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """``["--head.m", "0.5", "--optim.lr=0.1"]`` -> ``[("head.m", "0.5"), ("optim.lr", "0.1")]``."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) <= 2:
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --section.key VALUE")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key} needs a value")
            i += 1
            value = args[i]
        pairs.append((key, value))
        i += 1
    return pairs


def _check_registry_options(section: str, name: str, options: dict[str, Any], defaults: dict[str, Any],
                            section_cls: type) -> None:
    """Reject options the registry entry ``name`` does not take; convert the rest to their defaults' types."""
    kind = "head" if section == "head" else "backbone"
    for key, value in list(options.items()):
        if key not in defaults:
            raise ConfigError(
                f"unknown option {section}.{key} for {kind} {name!r}; valid: {', '.join(sorted(defaults)) or '(none)'}"
                f" (and {', '.join(sorted(_section_types(section_cls)))})"
            )
        options[key] = convert_like(value, defaults[key], f"{section}.{key}")


def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False, none: bool = False) -> None:
    """``value`` must be a finite number in the range (``None`` too when ``none``); else a ConfigError."""
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {_shown(value)}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        bounds = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        raise ConfigError(f"{name} must be in {bounds}, got {_shown(value)}")


#: Largest scale (``s``; SphereFace2's ``r``) a head accepts: the logits are s·cos θ, so s = 1000 already makes a
#: softmax of e^1000 ratios; published values are 30-64.
MAX_HEAD_SCALE = 1000.0
#: Largest embedding: far above any published model (512), far below what a config may make a backbone allocate.
MAX_EMBED_DIM = 65536


def _check_ranges(config: Config) -> None:
    """Ranges of every numeric field (docs/training.md, "Config"): a value outside them crashes or trains nonsense."""
    data, optim, train, head = config.data, config.optim, config.train, config.head
    for section in (data, optim, train, head):  # every float field finite (NaN / inf are never meaningful)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float):
                _number(f"{type(section).__name__.removesuffix('Config').lower()}.{f.name}", value)
    at_least = [("data.batch_size", data.batch_size, 1), ("train.steps", train.steps, 1),
                ("optim.accumulate", optim.accumulate, 1), ("model.embed_dim", config.model.embed_dim, 1),
                ("data.synthetic_identities", data.synthetic_identities, 1),
                ("data.synthetic_images_per_identity", data.synthetic_images_per_identity, 1),
                ("data.synthetic_val_pairs_per_fold", data.synthetic_val_pairs_per_fold, 1),
                ("data.num_workers", data.num_workers, 0), ("optim.warmup_steps", optim.warmup_steps, 0),
                ("train.seed", train.seed, 0), ("train.threads", train.threads, 0),
                ("train.log_every", train.log_every, 1), ("train.val_every", train.val_every, 0),
                ("train.checkpoint_every", train.checkpoint_every, 1),
                ("train.keep_checkpoints", train.keep_checkpoints, 0),
                ("train.max_nonfinite_steps", train.max_nonfinite_steps, 0),
                ("train.sync_every", train.sync_every, 0),
                ("train.scaler_growth_interval", train.scaler_growth_interval, 1)]
    for name, value, minimum in at_least:
        if value < minimum:
            raise ConfigError(f"{name} must be ≥ {minimum}, got {value}")
    if config.model.embed_dim > MAX_EMBED_DIM:
        raise ConfigError(f"model.embed_dim must be ≤ {MAX_EMBED_DIM}, got {config.model.embed_dim}")
    if len(data.image_size) != 2:
        raise ConfigError(f"data.image_size must be [H, W], got {data.image_size}")
    height, width = data.image_size
    if height < 1 or width < 1 or height * width > limits.MAX_IMAGE_PIXELS:
        raise ConfigError(f"data.image_size must be two positive sides of at most {limits.MAX_IMAGE_PIXELS} pixels "
                          f"in all, got {data.image_size}")
    _number("data.pixel_std", data.pixel_std, low=0, low_open=True)
    _number("data.synthetic_difficulty", data.synthetic_difficulty, low=0)
    _number("data.synthetic_identity_spread", data.synthetic_identity_spread, low=0)
    _number("data.synthetic_label_noise", data.synthetic_label_noise, low=0, high=1)
    _number("data.max_bad_fraction", data.max_bad_fraction, low=0, high=1)
    _number("optim.lr", optim.lr, low=0, low_open=True)
    _number("optim.head_lr", optim.head_lr, low=0, low_open=True, none=True)
    _number("optim.weight_decay", optim.weight_decay, low=0)
    _number("optim.momentum", optim.momentum, low=0, high=1)
    _number("optim.gamma", optim.gamma, low=0, low_open=True)
    _number("optim.power", optim.power, low=0)
    _number("optim.min_lr", optim.min_lr, low=0)
    _number("optim.clip_grad_norm", optim.clip_grad_norm, low=0)
    if len(optim.betas) != 2:
        raise ConfigError(f"optim.betas must be [beta1, beta2], got {optim.betas}")
    for i, beta in enumerate(optim.betas):
        _number(f"optim.betas[{i}]", beta, low=0, high=1, high_open=True)
    for i, milestone in enumerate(optim.milestones):
        _number(f"optim.milestones[{i}]", milestone, low=0)
    _number("train.ddp_bucket_cap_mb", train.ddp_bucket_cap_mb, low=0, low_open=True, high=4096)
    if not 0 < head.partial_fc_rate <= 1:
        raise ConfigError(f"head.partial_fc_rate must be in (0, 1], got {head.partial_fc_rate}")
    for section, options in (("head", head.options), ("model", config.model.options)):
        for key, value in options.items():
            if isinstance(value, float):
                _number(f"{section}.{key}", value)
    for key in ("s", "r"):
        if key in head.options and head.options[key] is not None:
            _number(f"head.{key}", head.options[key], low=0, low_open=True, high=MAX_HEAD_SCALE)


def validate(config: Config, source: str | None = None) -> Config:
    """Check choices, ranges and the head / backbone options against their registries (types from the defaults).

    ``source`` (the file, or ``"command line"``) starts every message that does not name its origin already."""
    try:
        return _validate(config)
    except ConfigError as error:
        message = str(error)
        if source and not message.startswith(source):
            raise ConfigError(f"{source}: {message}") from None
        raise


def _validate(config: Config) -> Config:
    for (section_name, field_name), valid in CHOICES.items():
        value = getattr(getattr(config, section_name), field_name)
        if value not in valid:
            raise ConfigError(f"{section_name}.{field_name}={value!r} is not valid; choose one of {', '.join(valid)}")
    try:
        HEADS[config.head.name]
        BACKBONES[config.model.backbone]
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    try:
        config.head.options = resolve_aliases(config.head.name, config.head.options)
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    _check_registry_options("head", config.head.name, config.head.options, head_options(config.head.name), HeadConfig)
    _check_registry_options("model", config.model.backbone, config.model.options,
                            backbone_options(config.model.backbone), ModelConfig)
    # spell every option out (published defaults included): the saved config rebuilds the same model later
    config.head.options = resolved_options(config.head.name, config.head.options)
    config.model.options = {**backbone_options(config.model.backbone), **config.model.options}
    try:
        Augmentation.from_config(config.data)
    except InvalidOptionError as error:
        raise ConfigError(str(error)) from None
    _check_ranges(config)
    try:  # the head checks the rest of its options itself (a tiny one: 2 classes of 4-d)
        build_head(config.head.name, embed_dim=4, num_classes=2, **config.head.options)
    except (InvalidOptionError, UnknownNameError, TypeError, ValueError) as error:
        raise ConfigError(f"head {config.head.name!r}: {error}") from None
    return config


def _read_config_file(path: Path) -> Any:
    """The YAML content of a config file: at most :data:`~facesphere.data.limits.MAX_CONFIG_BYTES`, UTF-8, plain YAML
    (no Python tags: ``yaml.safe_load``); every failure a ConfigError naming the file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limits.MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config: {error.strerror or error}") from None
    if len(raw) > limits.MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {limits.MAX_CONFIG_BYTES} bytes; not a facesphere config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}: {raw[error.start:error.start + 1]!r}); a "
                          "config is a UTF-8 YAML file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    except (RecursionError, ValueError, TypeError, OverflowError, MemoryError) as error:
        raise ConfigError(f"{path}: not valid YAML ({type(error).__name__}: {str(error)[:200]})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | list[tuple[str, str]] | None = None) -> Config:
    """Defaults ← YAML file ← dotted overrides, validated."""
    config = Config()
    if path is not None:
        path = Path(path)
        mapping = _read_config_file(path)
        apply_mapping(config, {} if mapping is None else mapping, str(path))
    pairs = parse_overrides(overrides) if overrides and isinstance(overrides[0], str) else (overrides or [])
    # head.name / model.backbone first, so their options validate against the chosen entry
    pairs = sorted(pairs, key=lambda kv: kv[0] not in ("head.name", "model.backbone"))
    for key, value in pairs:
        _set(config, key, value, "command line")
    if path is not None and pairs:
        source = f"{path} + command line"
    else:
        source = str(path) if path is not None else "command line"
    return validate(config, source)


def config_to_dict(config: Config) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    return json.loads(json.dumps(data, default=list))  # tuples -> lists, plain YAML types


def config_from_dict(mapping: dict[str, Any], source: str = "config") -> Config:
    config = Config()
    apply_mapping(config, mapping, source)
    return validate(config, source)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False), what="config")


__all__ = [
    "Config", "DataConfig", "ModelConfig", "HeadConfig", "OptimConfig", "TrainConfig", "ConfigError",
    "load_config", "save_config", "config_to_dict", "config_from_dict", "parse_overrides",
]
