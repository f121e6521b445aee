"""benchmarks/gpu.py in its smallest CPU form, so that the script waiting for a GPU does not rot: every stage that
can run on the CPU runs (tests, throughput, loop, head, eval / embed), the JSON and the markdown section come out."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_script():
    spec = importlib.util.spec_from_file_location("facesphere_benchmark_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_quick_cpu_run_writes_results_and_table(tmp_path, gpu_script):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n<!-- gpu:start -->\nold\n<!-- gpu:end -->\n\nafter\n")
    out = tmp_path / "gpu.json"
    code = gpu_script.main(["--quick", "--device", "cpu", "--no-compile", "--out", str(out),
                            "--markdown", str(page), "--work", str(tmp_path / "work"), "--threads", "1"])
    results = json.loads(out.read_text())
    stages = results["stages"]
    assert code == 0, {k: v.get("error") for k, v in stages.items()}
    assert stages["tests"]["skipped"].startswith("no CUDA device")
    assert {c["precision"] for c in stages["throughput"]["cases"]} == {"fp32", "bf16"}
    assert all(c["images_per_second"] > 0 for c in stages["throughput"]["cases"])
    assert stages["loop"]["sync_every_1"]["images_per_second"] > 0 and "sync_every_50" in stages["loop"]
    assert [row["rate"] for row in stages["head"]["rows"]] == [1.0, 0.1]
    assert stages["fiw"] == {"skipped": "--quick", "stage_seconds": stages["fiw"]["stage_seconds"]}
    assert stages["eval"]["eval"]["images"] > 0 and stages["eval"]["embed"]["images"] == 8
    text = page.read_text()
    assert "old" not in text and "after" in text and "| precision | channels-last |" in text
    assert "ArcFace head alone" in text and "facesphere embed" in text


def test_a_compile_case_runs_in_a_child_process(gpu_script):
    import argparse

    args = argparse.Namespace(device="cpu", quick=True)
    result = gpu_script._child_case({"precision": "fp32", "channels_last": False, "compile": False}, args, 600)
    assert result["images_per_second"] > 0 and result["compile"] is False


def test_unknown_stage_is_refused(gpu_script, tmp_path):
    with pytest.raises(SystemExit):
        gpu_script.main(["--quick", "--device", "cpu", "--skip", "nonsense", "--out", str(tmp_path / "x.json")])


def test_the_tests_stage_runs_the_cuda_marked_tests(gpu_script, monkeypatch):
    import argparse
    import subprocess

    seen = {}

    def fake_run(command, **kwargs):
        seen["command"], seen["timeout"] = command, kwargs["timeout"]
        return subprocess.CompletedProcess(command, 1, stdout="..F\nFAILED tests/gpu/x.py::y\n1 failed, 2 passed\n",
                                           stderr="")

    monkeypatch.setattr(gpu_script.subprocess, "run", fake_run)
    args = argparse.Namespace(tests=True, tests_timeout=77.0)
    result = gpu_script.cuda_tests(args, gpu_script.torch.device("cpu"))
    assert seen["command"][-4:-1] == ["cuda", "-p", "no:cacheprovider"] and seen["command"][-1].endswith("gpu")
    assert seen["timeout"] == 77.0
    assert result["returncode"] == 1 and result["summary"] == "1 failed, 2 passed"
    assert result["failures"] == ["FAILED tests/gpu/x.py::y"]
