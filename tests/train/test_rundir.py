"""The run directory of a training call: an occupied one refused (unless resumed or overwritten), created only when the
run starts, removed when the run fails before its first step."""

from __future__ import annotations

import pytest

import facesphere.train.loop as loop
from facesphere.errors import InvalidOptionError, RunExistsError
from facesphere.run.checkpoint import list_checkpoints
from facesphere.run.config import load_config
from facesphere.train.loop import train


def _config(tiny_overrides, *extra: str):
    return load_config(None, tiny_overrides + ["--data.val", "[]", *extra])


def test_an_occupied_run_directory_is_refused_and_left_untouched(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    train(_config(tiny_overrides, "--train.steps", "2"), out=run, progress=False)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunExistsError) as info:
        train(_config(tiny_overrides, "--train.steps", "3", "--head.name", "arcface"), out=run, progress=False)
    message = str(info.value)
    assert str(run) in message and f"--resume {run}" in message and "--overwrite" in message
    assert "\n" not in message
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    stranger = tmp_path / "notes"  # any file makes a directory occupied, not only a run
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    with pytest.raises(RunExistsError):
        train(_config(tiny_overrides, "--train.steps", "1"), out=stranger, progress=False)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(_config(tiny_overrides, "--train.steps", "1"), out=empty, progress=False)["steps"] == 1


def test_overwrite_replaces_the_old_runs_files_only(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    train(_config(tiny_overrides, "--train.steps", "4", "--train.checkpoint_every", "2", "--train.keep_checkpoints",
                  "5"), out=run, progress=False)
    (run / "notes.txt").write_text("mine")
    assert [step for step, _ in list_checkpoints(run)] == [2, 4]
    summary = train(_config(tiny_overrides, "--train.steps", "3", "--head.name", "arcface"), out=run, progress=False,
                    overwrite=True)
    assert summary["steps"] == 3
    # the old run's later checkpoint is gone: it would otherwise be "latest" and prune away the new ones
    assert [step for step, _ in list_checkpoints(run)] == [3]
    assert "arcface" in (run / "config.yaml").read_text() and (run / "notes.txt").read_text() == "mine"
    with pytest.raises(InvalidOptionError, match="exclude each other"):
        train(resume=run, overwrite=True, progress=False)


def test_a_failed_overwrite_keeps_the_old_run(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    train(_config(tiny_overrides, "--train.steps", "2"), out=run, progress=False)
    with pytest.raises(Exception, match="not found"):
        train(_config(tiny_overrides, "--data.train", f"folder:{tmp_path / 'nowhere'}"), out=run, progress=False,
              overwrite=True)
    assert [step for step, _ in list_checkpoints(run)] == [2] and (run / "config.yaml").is_file()


def test_a_run_that_cannot_start_leaves_no_directory(tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad_data = _config(tiny_overrides, "--data.train", f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(Exception, match="not found"):
        train(bad_data, progress=False)  # the default runs/<timestamp>-... folder
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    with pytest.raises(Exception, match="not found"):
        train(bad_data, out=tmp_path / "a" / "run", progress=False)
    assert not (tmp_path / "a" / "run").exists()
    bad_val = _config(tiny_overrides, "--data.val", f"[lfw:{tmp_path / 'nowhere'}]")
    with pytest.raises(Exception):
        train(bad_val, out=tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()


def test_a_run_that_fails_in_its_first_step_is_removed_a_later_failure_kept(tmp_path, tiny_overrides, monkeypatch):
    set_learning_rate = loop.set_learning_rate
    fail_at = {"step": 0}

    def failing(optimizer, step, *args, **kwargs):
        if step == fail_at["step"]:
            raise RuntimeError("out of memory (simulated)")
        return set_learning_rate(optimizer, step, *args, **kwargs)

    monkeypatch.setattr(loop, "set_learning_rate", failing)
    config = _config(tiny_overrides, "--train.steps", "4", "--train.checkpoint_every", "1")
    with pytest.raises(RuntimeError, match="simulated"):
        train(config, out=tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()  # an empty directory that was there before stays, empty
    with pytest.raises(RuntimeError, match="simulated"):
        train(config, out=tmp_path / "empty", progress=False)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())

    fail_at["step"] = 2  # after two steps (and their checkpoints): the run is kept, resumable
    with pytest.raises(RuntimeError, match="simulated"):
        train(config, out=tmp_path / "later", progress=False)
    assert [step for step, _ in list_checkpoints(tmp_path / "later")] == [1, 2]
    monkeypatch.setattr(loop, "set_learning_rate", set_learning_rate)
    assert train(resume=tmp_path / "later", progress=False)["steps"] == 4


def test_a_directory_taken_by_another_process_while_starting_is_not_shared(tmp_path, tiny_overrides, monkeypatch):
    run = tmp_path / "run"
    load_val_sets = loop._load_val_sets

    def racing(config):  # another run writes there while this one builds its data and model
        run.mkdir()
        (run / "config.yaml").write_text("theirs")
        return load_val_sets(config)

    monkeypatch.setattr(loop, "_load_val_sets", racing)
    with pytest.raises(RunExistsError, match="another process"):
        train(_config(tiny_overrides, "--train.steps", "1"), out=run, progress=False)
    assert (run / "config.yaml").read_text() == "theirs"
