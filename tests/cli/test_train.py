"""``facesphere train``: an occupied --out refused in one line, --overwrite, --resume; Ctrl-C / SIGTERM print the
--resume command and exit 130 / 143; real faces validated on synthetic faces only warn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

import facesphere.train.loop as loop
from facesphere.cli import main
from facesphere.run.checkpoint import list_checkpoints
from facesphere.run.config import config_to_dict, load_config
from tests.helpers import PACKAGE, REPO, TINY

QUICK = TINY + ["--train.steps", "2", "--data.val", "[]", "--quiet"]


def test_an_occupied_out_is_refused_in_one_line_then_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *QUICK]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), *QUICK]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("facesphere: error:") and "\n" not in error
    assert str(run) in error and f"facesphere train --resume {run}" in error and "--overwrite" in error
    assert main(["train", "--out", str(run), *QUICK, "--train.steps", "3", "--overwrite"]) == 0
    assert [step for step, _ in list_checkpoints(run)] == [3]
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--overwrite"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_sigterm_prints_the_resume_command_and_exits_143(tmp_path, capsys, monkeypatch):
    set_learning_rate = loop.set_learning_rate

    def signalling(optimizer, step, *args, **kwargs):
        if step == 1:
            signal.raise_signal(signal.SIGTERM)
        return set_learning_rate(optimizer, step, *args, **kwargs)

    monkeypatch.setattr(loop, "set_learning_rate", signalling)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *QUICK, "--train.steps", "5"]) == 143
    error = capsys.readouterr().err
    assert f"continue with: facesphere train --resume {run}" in error and "step 2/5" in error
    assert [step for step, _ in list_checkpoints(run)] == [2]
    monkeypatch.setattr(loop, "set_learning_rate", set_learning_rate)
    assert main(["train", "--resume", str(run)]) == 0
    assert [step for step, _ in list_checkpoints(run)][-1] == 5


def test_a_run_that_cannot_start_warns_errs_and_leaves_no_folder(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "facesphere.cli", "train", "--quiet", "--data.train",
                             f"folder:{tmp_path / 'nowhere'}"], capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "facesphere: warning: training on real faces" in result.stderr and "--data.val" in result.stderr
    assert "facesphere data split" in result.stderr and "nowhere" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_run_whose_batchnorm_overflows_exits_non_zero_and_writes_no_broken_model(tmp_path, capsys):
    """Issue 13 §4: with lr 1e6 the loss stays finite but BatchNorm running variances become inf; the run used to exit
    0 with a model whose every embedding was zero. Now no checkpoint holding NaN / inf is written and the run fails."""
    run = tmp_path / "run"
    code = main(["train", "--out", str(run), *QUICK, "--train.steps", "6", "--train.checkpoint_every", "2",
                 "--optim.lr", "1e6"])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert "not saved" in error and "NaN / inf" in error and "optim.lr=1000000.0" in error
    for step, path in list_checkpoints(run):
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(v).all() for part in ("backbone", "head") for v in state[part].values()
                   if v.is_floating_point()), f"step {step} holds NaN / inf"
    assert not (run / "metrics.json").exists()


def test_resume_survives_a_truncated_checkpoint_a_partial_log_line_and_stray_temp_files(tmp_path, recwarn):
    """Issue 13 §6: a truncated newest checkpoint falls back to the previous good one, a half-written last line of
    metrics.jsonl is dropped, and the temporary files killed writers left are cleaned; each is said, none crashes."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *QUICK, "--train.steps", "4", "--train.checkpoint_every", "2",
                 "--train.keep_checkpoints", "3"]) == 0
    newest = run / "checkpoints" / "step_4.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"step": 5, "lo')
    strays = [run / "checkpoints" / ".step_2.pt.k1l2m3.tmp", run / ".best.pt.n4o5p6.tmp"]
    for stray in strays:
        stray.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", str(run), "--train.steps", "6"]) == 0
    said = " ".join(str(w.message) for w in recwarn)
    assert f"{newest}: not a complete checkpoint file" in said and "using the previous one, step_2.pt" in said
    assert "metrics.jsonl: dropped 1 unreadable line(s)" in said
    assert [step for step, _ in list_checkpoints(run)] == [2, 4, 6]
    assert all(torch.load(path, weights_only=True)["state"]["step"] == step for step, path in list_checkpoints(run))
    assert not any(stray.exists() for stray in strays)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def test_resume_keeps_the_saved_config_applies_safe_overrides_and_refuses_the_rest(tmp_path, capsys):
    """Issue 13 §5: ``--resume RUN`` with any override used to reset train.steps to the default 600, ignore the
    override and rewrite config.yaml. Now the run keeps its config, a safe override is applied and recorded, and any
    other is refused naming the key."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *QUICK]) == 0
    saved = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--optim.lr", "0.5", "--head.name", "arcface"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "optim.lr (saved 0.1, asked 0.5)" in error and "head.name" in error
    assert "train.steps" in error and "--out" in error
    assert (run / "config.yaml").read_text() == saved and [s for s, _ in list_checkpoints(run)] == [2]
    assert main(["train", "--resume", str(run), "--config", str(run / "config.yaml")]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--train.log_every", "1", "--quiet"]) == 0  # the length is kept
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"] == 2
    assert main(["train", "--resume", str(run), "--train.steps", "3", "--quiet"]) == 0
    assert "train.steps: 2 -> 3 (recorded in config.yaml)" in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(run)][-1] == 3
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert train["steps"] == 3 and train["log_every"] == 1


def test_a_missing_validation_set_is_one_error_naming_the_key(tmp_path, capsys):
    """Issue 15 §5: a recipe's validation .bin paths (not on this machine) made the README's --data.train override fail
    without saying which setting to change."""
    recipe = REPO / "configs" / "sface_iresnet50_casia.yaml"
    assert main(["train", "--out", str(tmp_path / "a"), "--config", str(recipe), "--data.train", "synthetic"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith(f"facesphere: error: data.val (from {recipe}): bin:/data/lfw.bin")
    assert "--data.val" in error
    assert main(["train", "--out", str(tmp_path / "b"), *TINY, "--data.val", f"[pairs:{tmp_path / 'none.txt'}]"]) == 2
    assert "data.val: " in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_config_show_prints_the_resolved_config(capsys):
    """Issue 15 §5: ``facesphere config show [--config F] [overrides]`` prints what a run would use."""
    assert main(["config", "show", "--head.name", "arcface", "--train.steps", "7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == config_to_dict(load_config(None, ["--head.name", "arcface", "--train.steps", "7"]))
    assert shown["head"]["name"] == "arcface" and shown["train"]["steps"] == 7
    recipe = REPO / "configs" / "sface_iresnet50_casia.yaml"
    assert main(["config", "show", "--config", str(recipe)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["val"] == ["bin:/data/lfw.bin"]
    assert main(["config", "show", "--optim.lr", "fast"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_the_end_of_a_run_says_where_tensorboard_logs_went_or_how_to_get_them(tmp_path, capsys):
    """Issue 15 §5: say where TensorBoard logs went, or that ``pip install tensorboard`` enables them."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *QUICK]) == 0
    out = capsys.readouterr().out
    if (run / "tensorboard").is_dir():
        assert f"TensorBoard logs: {run / 'tensorboard'}" in out
    else:
        assert "pip install tensorboard" in out


def test_help_mentions_overwrite_and_the_interrupt(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--overwrite" in text and "SIGTERM" in text and "--resume" in text
