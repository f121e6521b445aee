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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..backbones import BACKBONES, backbone_options
from ..data.transforms import Augmentation
from ..errors import ConfigError, InvalidOptionError, UnknownNameError
from ..files import atomic_write_text
from ..heads import HEADS, head_options, resolve_aliases, resolved_options


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
    ``warmup_steps`` of linear warm-up. Weight decay is not applied to BatchNorm / PReLU parameters and biases.
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
    accumulate: int = 1


@dataclass
class TrainConfig:
    """The run itself."""

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


def _parse_scalar(text: str) -> Any:
    """A command-line value as YAML scalar / list (``0.5`` -> float, ``true`` -> bool, ``[1, 2]`` -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


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
            value = _parse_scalar(value)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            value = [value]
        item_type = args[0] if args else Any
        return [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(value, str) and annotation is not str:
        value = _parse_scalar(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def convert_like(value: Any, default: Any, where: str) -> Any:
    """Convert ``value`` to the type of ``default`` (head / backbone options are typed by their defaults)."""
    if default is None:
        return _parse_scalar(value) if isinstance(value, str) else value
    if isinstance(default, bool):
        return _convert(value, bool, where)
    if isinstance(default, int):
        return _convert(value, int, where)
    if isinstance(default, float):
        return _convert(value, float, where)
    if isinstance(default, str):
        return _convert(value, str, where)
    if isinstance(default, (tuple, list)):
        converted = _convert(value, list, where)
        return tuple(converted) if isinstance(default, tuple) else converted
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
    for section_name, values in mapping.items():
        if section_name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {section_name!r}; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section_name!r} must be a mapping, got {values!r}")
        # the head / backbone name first, so that its options validate against the right registry entry
        ordered = sorted(values.items(), key=lambda kv: kv[0] not in ("name", "backbone"))
        for field_name, value in ordered:
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


def validate(config: Config) -> Config:
    """Check choices and the head / backbone options against their registries (types from the defaults)."""
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
    if len(config.data.image_size) != 2:
        raise ConfigError(f"data.image_size must be [H, W], got {config.data.image_size}")
    positive = [("data.batch_size", config.data.batch_size), ("train.steps", config.train.steps),
                ("optim.accumulate", config.optim.accumulate), ("model.embed_dim", config.model.embed_dim)]
    for name, value in positive:
        if value < 1:
            raise ConfigError(f"{name} must be ≥ 1, got {value}")
    if not 0 < config.head.partial_fc_rate <= 1:
        raise ConfigError(f"head.partial_fc_rate must be in (0, 1], got {config.head.partial_fc_rate}")
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | list[tuple[str, str]] | None = None) -> Config:
    """Defaults ← YAML file ← dotted overrides, validated."""
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            mapping = yaml.safe_load(path.read_text()) or {}
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config: {error.strerror or error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        apply_mapping(config, mapping, str(path))
    pairs = parse_overrides(overrides) if overrides and isinstance(overrides[0], str) else (overrides or [])
    # head.name / model.backbone first, so their options validate against the chosen entry
    pairs = sorted(pairs, key=lambda kv: kv[0] not in ("head.name", "model.backbone"))
    for key, value in pairs:
        _set(config, key, value, "command line")
    return validate(config)


def config_to_dict(config: Config) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    return json.loads(json.dumps(data, default=list))  # tuples -> lists, plain YAML types


def config_from_dict(mapping: dict[str, Any], source: str = "config") -> Config:
    config = Config()
    apply_mapping(config, mapping, source)
    return validate(config)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False), what="config")


__all__ = [
    "Config", "DataConfig", "ModelConfig", "HeadConfig", "OptimConfig", "TrainConfig", "ConfigError",
    "load_config", "save_config", "config_to_dict", "config_from_dict", "parse_overrides",
]
