"""`facesphere eval` end to end on the synthetic set with a tiny freshly trained run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facesphere.cli import main
from tests.helpers import TINY


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A run trained for 2 steps on tiny synthetic data, validated once (best.pt = that step)."""
    from facesphere.run.config import load_config
    from facesphere.train.loop import train

    out = tmp_path_factory.mktemp("eval_run") / "run"
    config = load_config(None, TINY + ["--train.steps", "2", "--train.val_every", "2", "--train.quiet", "true"])
    summary = train(config, out=out, progress=False)
    return out, summary


def test_eval_synthetic_end_to_end(tiny_run, tmp_path, capsys):
    run_dir, summary = tiny_run
    out = tmp_path / "eval"
    code = main(["eval", str(run_dir), "--data", "synthetic", "--out", str(out), "--quiet", "--batch-size", "16"])
    printed = capsys.readouterr().out
    assert code == 0
    assert (out / "roc.png").is_file() and (out / "scores_synthetic.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["datasets"]["synthetic"]
    # the synthetic set follows the run's own validation settings, so the numbers are the training loop's
    val = summary["val"]["synthetic"]
    assert m["synthetic"]["pairs_per_fold"] == 4 and m["pairs"] == val["pairs"] == 40
    assert m["accuracy"] == pytest.approx(val["accuracy"], abs=1e-12)
    assert m["auc"] == pytest.approx(val["auc"], abs=1e-6)
    assert m["threshold"] == pytest.approx(val["threshold"], abs=1e-5)
    assert metrics["model"]["input_size"] == [112, 112]
    assert f"{100 * m['accuracy']:.2f}" in printed and "synthetic" in printed and "metrics.json" in printed


def test_eval_options_reach_the_metrics(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    out = tmp_path / "eval"
    code = main(["eval", str(run_dir / "best.pt"), "--data", "synthetic:pairs_per_fold=2", "--out", str(out),
                 "--quiet", "--flip", "concat", "--accuracy", "insightface", "--tar-method", "nearest", "--no-plots"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["datasets"]["synthetic"]
    assert m["pairs"] == 20 and m["accuracy_method"] == "insightface" and m["threshold_space"] == "distance"
    assert m["tar_method"] == "nearest" and metrics["options"]["flip"] == "concat"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("argv, message", [
    (["--data", "nope:x"], "unknown dataset kind"),
    (["--data", "lfw:/no/such/dir"], "not a directory"),
])
def test_eval_user_errors_exit_2(tiny_run, tmp_path, capsys, argv, message):
    run_dir, _ = tiny_run
    code = main(["eval", str(run_dir), "--out", str(tmp_path / "o"), "--quiet", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_eval_missing_model(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing"), "--data", "synthetic", "--out", str(tmp_path)]) == 2
    assert "no such model" in capsys.readouterr().err
