"""Typed config: defaults, YAML, dotted overrides, validation messages, saved resolved config."""

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
    assert set(config.model.options) == {"batchnorm", "input_size", "activation", "channels"}
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
