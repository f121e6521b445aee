"""Seeded fuzzing of the data readers (tests/fuzzing.py, docs/security.md): a few hundred mutants each, in a child
process under a memory limit and a timeout. Every mutant must be read correctly or refused with a FaceSphereError
naming the file; ``data verify`` must never raise and never call a relabelled set OK."""

from __future__ import annotations

import pytest

from tests.fuzzing import failures, fuzz


@pytest.mark.parametrize("reader, mutants", [("recordio", 300), ("verify_rec", 200), ("bin", 250),
                                             ("lfw_pairs", 250), ("pair_list", 250), ("image", 300)])
def test_fuzzed_files_are_read_or_refused_by_name(reader, mutants, tmp_path):
    summary = fuzz(reader, 13, mutants, tmp_path / reader, timeout=240)
    assert not failures(summary), failures(summary)
    assert summary["outcomes"].get("read", 0) and summary["outcomes"].get("refused", 0)  # both paths exercised
