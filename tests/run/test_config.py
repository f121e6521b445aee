"""Typed config: defaults, YAML, dotted overrides, validation messages, saved resolved config."""

import os
from pathlib import Path

import pytest
import yaml

from facesphere.run.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from facesphere.errors import OutputError
from tests.helpers import run_isolated, simulate_full_disk

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_defaults_are_the_default_run():
    config = load_config()
    assert config.head.name == "sphereface_r" and config.data.train == "synthetic"
    assert config.model.backbone.startswith("sfnet")


def test_dotted_overrides_are_typed():
    config = load_config(None, ["--head.name", "arcface", "--head.m", "0.45", "--optim.lr=0.05",
                                "--train.steps", "7", "--data.val", "[synthetic, bin:x.bin]",
                                "--model.batchnorm", "true"])
    assert config.head.name == "arcface" and config.head.options["m"] == 0.45
    assert config.optim.lr == 0.05 and config.train.steps == 7
    assert config.data.val == ["synthetic", "bin:x.bin"]
    assert config.model.options["batchnorm"] is True and config.model.options["channels"] == (16, 32, 64, 128)


def test_integer_head_option_becomes_float_and_tuple_options():
    config = load_config(None, ["--head.name", "cosface", "--head.m", "1"])
    assert config.head.options["m"] == 1.0 and isinstance(config.head.options["m"], float)
    config = load_config(None, ["--head.margin_steps", "[10, 20]"])
    assert config.head.options["margin_steps"] == (10, 20)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--optim.lrr", "0.1"], "valid keys of [optim]"),
        (["--optimizer.lr", "0.1"], "valid sections"),
        (["--optim.lr", "fast"], "expected a number"),
        (["--train.steps", "1.5"], "expected an integer"),
        (["--data.flip", "maybe"], "expected true or false"),
        (["--head.name", "arcface", "--head.margin", "v2"], "valid: gradient, m, s, variant"),
        (["--head.name", "arcfase"], "valid heads"),
        (["--head.m", "large"], "expected a number"),
        (["--model.depth", "3"], "unknown option model.depth"),
        (["--optim.schedule", "exp"], "step, poly, cosine, constant"),
        (["--train.amp", "fp8"], "none, fp16, bf16"),
        (["--head.m"], "needs a value"),
        (["head.m", "1"], "overrides look like"),
    ],
)
def test_bad_overrides_are_rejected_with_the_valid_choices(overrides, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("head: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("optim:\n  lrate: 0.1\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml.*optim.lrate"):
        load_config(wrong)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["--head.name", "sface", "--head.a", "0.87", "--train.steps", "3"])
    save_config(config, tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert config_to_dict(again) == config_to_dict(config)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["lr"] == config.optim.lr


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_recipes_parse(path):
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.train.steps > 1000  # a real paper schedule, not a toy


def test_resolved_config_spells_out_every_head_and_backbone_option(tmp_path):
    config = load_config(None, ["--head.name", "arcface", "--head.m", "0.45"])
    assert config.head.options == {"s": 64.0, "m": 0.45, "variant": "clamped", "weight_norm": "graph",
                                   "gradient": "detached"}
    assert set(config.model.options) == {"batchnorm", "input_size", "activation", "channels", "residual"}
    # defaults that depend on other options are recorded as the head will use them
    nfn = load_config(None, ["--head.feature_norm", "none"])
    assert nfn.head.options["loss_weight"] == 1.0 and nfn.head.options["feature_norm"] == "none"
    save_config(config, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["head"]["options"]["m"] == 0.45 and saved["head"]["options"]["variant"] == "clamped"
    assert config_from_dict(saved).head.options == config.head.options


def test_a_run_config_written_before_options_were_spelled_out_still_loads():
    old = {"head": {"name": "sphereface_r", "options": {"t": 0.02, "feature_norm": "soft"}},
           "model": {"backbone": "sfnet4", "options": {}}}
    config = config_from_dict(old)
    assert config.head.options["norm_penalty"] == 0.02 and "t" not in config.head.options
    assert config.model.options["activation"] == "relu"  # the backbone's own default, now written down


# ------------------------------------------------------------------------------------------------------------------
# untrusted config files and absurd values (issue 13)


def _alias_bomb(levels: int = 9) -> str:
    """A "billion laughs" value: 9 levels of 9 aliases of the level below (9**9 strings once expanded)."""
    parts = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    parts += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


CHILD_LOAD_CONFIG = r"""
import sys, time
from facesphere.run.config import load_config
from facesphere.errors import ConfigError
start = time.perf_counter()
for arguments in ([sys.argv[1], None], [None, ["--data.val", sys.argv[2]]], [sys.argv[3], None], [sys.argv[4], None]):
    try:
        load_config(*arguments)
        print("loaded")
    except ConfigError as error:
        print("ConfigError " + " ".join(str(error).split()))
print(f"seconds {time.perf_counter() - start:.1f}")
"""


def test_yaml_alias_bombs_self_references_and_tags_are_refused_quickly(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"data:\n  val: {_alias_bomb()}\n")
    assert len(bomb.read_bytes()) < 800
    loop = tmp_path / "loop.yaml"
    loop.write_text("data:\n  val: &a [synthetic, *a]\n")
    tagged = tmp_path / "tagged.yaml"  # a Python tag that would run a command under yaml.load / unsafe_load
    tagged.write_text(f"data:\n  val: !!python/object/apply:os.system ['touch {tmp_path / 'ran'}']\n")
    child = run_isolated(CHILD_LOAD_CONFIG, str(bomb), _alias_bomb(), str(loop), str(tagged), timeout=120,
                         memory_mb=3072)
    assert child.returncode == 0, child.stderr[-2000:]
    lines = child.stdout.splitlines()
    assert lines[0].startswith(f"ConfigError {bomb}: holds more than 100000 values")
    assert lines[1].startswith("ConfigError command line: data.val: holds more than 100000 values")
    assert lines[2].startswith(f"ConfigError {loop}: holds more than 100000 values")
    assert lines[3].startswith(f"ConfigError {tagged}: not valid YAML") and not (tmp_path / "ran").exists()
    assert float(lines[4].split()[1]) < 20


def test_a_config_that_is_not_utf8_or_too_large_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("optim:\n  lr: 0.1  # réglé\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 21"):
        load_config(path)
    path.write_bytes(b"optim:\n  lr: 0.1\n" + b"#" * (1 << 20))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: larger than 1048576 bytes"):
        load_config(path)
    path.write_text("optim:\n  lr: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not valid YAML"):
        load_config(path)
    path.write_text("data:\n  image_size: [112, 112, 3]\nfoo: 1\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml: unknown section 'foo'"):
        load_config(path)
    path.write_text("data:\n  image_size: [112, 112, 3]\n")  # a cross-field check names the file too
    with pytest.raises(ConfigError, match=r"^.*latin1\.yaml: data\.image_size must be \[H, W\]"):
        load_config(path)
    path.write_text("head:\n  name: sphereface2\n  alpha: 2\n")  # the head's own check, through the file
    with pytest.raises(ConfigError, match=r"^.*latin1\.yaml: head 'sphereface2': invalid alpha=2\.0"):
        load_config(path)
    path.write_text("optim:\n  lr: 2023-13-45\n")  # YAML timestamps that do not exist
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("spelling", ["1e6", "1E6", "1e+06", "5e-4", "5E-04", ".5", "2.", "1_000.5", "+3", " 7 ",
                                      "0.1", "3"])
def test_every_float_spelling_works_on_the_command_line_and_in_yaml(tmp_path, spelling):
    config = load_config(None, ["--optim.lr", spelling, "--optim.weight_decay", spelling, "--head.s", "6.4e1"])
    assert config.optim.lr == config.optim.weight_decay == float(spelling) and config.head.options["s"] == 64.0
    path = tmp_path / "c.yaml"
    path.write_text(f"optim:\n  lr: {spelling.strip()}\n  weight_decay: '{spelling}'\nhead:\n  s: 6.4e1\n")
    config = load_config(path)
    assert config.optim.lr == config.optim.weight_decay == float(spelling) and config.head.options["s"] == 64.0


def test_integers_written_as_whole_floats_are_integers():
    assert load_config(None, ["--train.steps", "1e4", "--data.batch_size", "6.4e1"]).train.steps == 10000
    with pytest.raises(ConfigError, match="train.steps: expected an integer, got 1.5"):
        load_config(None, ["--train.steps", "1.5"])


@pytest.mark.parametrize(
    "override,message",
    [
        (["--optim.lr", "-0.1"], "optim.lr must be in (0, inf], got -0.1"),
        (["--optim.lr", "0"], "optim.lr must be in (0, inf]"),
        (["--optim.lr", "nan"], "optim.lr must be a finite number"),
        (["--optim.lr", "inf"], "optim.lr must be a finite number"),
        (["--optim.lr", "1e999"], "optim.lr must be a finite number"),
        (["--optim.head_lr", "-1"], "optim.head_lr must be in (0, inf]"),
        (["--optim.weight_decay", "-5e-4"], "optim.weight_decay must be in [0, inf]"),
        (["--optim.momentum", "1.5"], "optim.momentum must be in [0, 1]"),
        (["--optim.betas", "[0.9, 1.0]"], "optim.betas[1] must be in [0, 1)"),
        (["--optim.milestones", "[-1]"], "optim.milestones[0] must be in [0, inf]"),
        (["--optim.gamma", "0"], "optim.gamma must be in (0, inf]"),
        (["--optim.clip_grad_norm", "-1"], "optim.clip_grad_norm must be in [0, inf]"),
        (["--head.s", "1e30"], "head.s must be in (0, 1000]"),
        (["--head.s", "0"], "head.s must be in (0, 1000]"),
        (["--head.name", "sphereface2", "--head.r", "-40"], "head.r must be in (0, 1000]"),
        (["--head.m", "nan"], "head.m must be a finite number"),
        (["--train.log_every", "0"], "train.log_every must be ≥ 1"),
        (["--train.checkpoint_every", "0"], "train.checkpoint_every must be ≥ 1"),
        (["--train.seed", "-1"], "train.seed must be ≥ 0"),
        (["--train.steps", "1" + "0" * 30], "train.steps: the integer 1000000000000000000000000000000 is out of"),
        (["--data.image_size", "[0, 112]"], "data.image_size must be two positive sides"),
        (["--data.image_size", "[100000, 100000]"], "data.image_size must be two positive sides"),
        (["--model.embed_dim", "1000000000"], "model.embed_dim must be ≤ 65536"),
        (["--data.pixel_std", "0"], "data.pixel_std must be in (0, inf]"),
        (["--data.synthetic_label_noise", "2"], "data.synthetic_label_noise must be in [0, 1]"),
        (["--data.num_workers", "-2"], "data.num_workers must be ≥ 0"),
    ],
)
def test_absurd_values_are_refused_with_their_range(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    assert str(info.value).startswith("command line: ") and message in str(info.value), str(info.value)


def test_a_full_disk_while_saving_the_config_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    save_config(load_config(), path)
    before = path.read_bytes()
    simulate_full_disk(monkeypatch, tmp_path)
    with pytest.raises(OutputError) as info:
        save_config(load_config(None, ["--optim.lr", "0.2"]), path)
    monkeypatch.undo()
    assert str(info.value) == (f"{path}: cannot write the config (No space left on device); the previous version is "
                               "intact")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["config.yaml"]
