"""Seeded fuzzing of ONNX recognisers (tests/fuzzing.py, docs/security.md): mutated graphs and external-data paths
(``../``, absolute, through a symbolic link) load or are refused naming the file, in a child process."""

from __future__ import annotations

import pytest

from tests.fuzzing import failures, fuzz


def test_fuzzed_onnx_models_load_or_are_refused_by_name(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    summary = fuzz("onnx", 13, 200, tmp_path / "onnx", timeout=240)
    assert not failures(summary), failures(summary)
    assert summary["outcomes"].get("read", 0) and summary["outcomes"].get("refused", 0)
