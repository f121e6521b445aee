"""Seeded fuzzing of YAML configs (tests/fuzzing.py, docs/security.md): every mutant loads or is a ConfigError
naming the file, in a child process under a memory limit and a timeout (alias bombs, hangs)."""

from __future__ import annotations

from tests.fuzzing import failures, fuzz


def test_fuzzed_configs_load_or_are_refused_by_name(tmp_path):
    summary = fuzz("config", 13, 300, tmp_path / "config", timeout=240)
    assert not failures(summary), failures(summary)
    assert summary["outcomes"].get("read", 0) and summary["outcomes"].get("refused", 0)
