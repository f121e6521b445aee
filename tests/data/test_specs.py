"""facesphere.data.specs: the one dataset-spec grammar of training, validation, evaluation and data verify."""

from __future__ import annotations

import pytest

from facesphere.data.specs import (
    EVAL_KINDS,
    PAIR_KINDS,
    TRAIN_KINDS,
    VERIFY_KINDS,
    parse_data_spec,
)
from facesphere.errors import DataError, InvalidOptionError, UnknownNameError


def test_parse_spec_kinds(tmp_path):
    (tmp_path / "lfw").mkdir()
    (tmp_path / "lfw" / "pairs.txt").write_text("")
    (tmp_path / "x.bin").write_bytes(b"")
    (tmp_path / "list.txt").write_text("")
    s = parse_data_spec("synthetic", EVAL_KINDS)
    assert (s.kind, s.path, s.name, s.options) == ("synthetic", None, "synthetic", {})
    s = parse_data_spec("synthetic:pairs_per_fold=6, seed=3,difficulty=1.5", EVAL_KINDS)
    assert s.options == {"pairs_per_fold": 6, "seed": 3, "difficulty": 1.5}
    assert str(s) == "synthetic:pairs_per_fold=6,seed=3,difficulty=1.5"
    assert parse_data_spec(f"bin:{tmp_path / 'x.bin'}", EVAL_KINDS).name == "x"
    assert parse_data_spec(f"lfw:{tmp_path / 'lfw'}", EVAL_KINDS).name == "lfw"
    assert parse_data_spec(f"pairs:{tmp_path / 'list.txt'}", EVAL_KINDS).kind == "pairs"
    assert parse_data_spec(f"ijb:{tmp_path / 'lfw'}", EVAL_KINDS).kind == "ijb"
    assert parse_data_spec(f"ident:{tmp_path / 'lfw'}/", EVAL_KINDS).name == "lfw"
    # bare paths: a .bin, a folder holding pairs.txt (LFW layout), a folder of identities, a list file
    assert parse_data_spec(str(tmp_path / "x.bin"), PAIR_KINDS).kind == "bin"
    assert parse_data_spec(str(tmp_path / "lfw"), PAIR_KINDS).kind == "lfw"
    assert parse_data_spec(str(tmp_path / "lfw"), TRAIN_KINDS).kind == "folder"
    assert parse_data_spec(str(tmp_path / "list.txt"), TRAIN_KINDS).kind == "list"
    # data verify's old spelling of an LFW folder
    assert parse_data_spec(f"pairs:{tmp_path / 'lfw'}", VERIFY_KINDS).kind == "lfw"


@pytest.mark.parametrize("spec, kinds, error, match", [
    ("megaface:/x", EVAL_KINDS, UnknownNameError, "valid: synthetic, bin:FILE.bin"),
    ("bin:/x.bin", TRAIN_KINDS, UnknownNameError, "cannot be used here; valid: folder:DIR, list:FILE, rec:PREFIX"),
    ("lfw", EVAL_KINDS, DataError, "no such file or folder"),
    ("bin:/no/such/file.bin", EVAL_KINDS, DataError, "not a file"),
    ("ident:/no/such/dir", EVAL_KINDS, DataError, "not a directory"),
    ("synthetic:pairs=3", EVAL_KINDS, InvalidOptionError, "pairs_per_fold"),
    ("synthetic:seed=x", EVAL_KINDS, InvalidOptionError, "must be a number"),
    ("", EVAL_KINDS, InvalidOptionError, "non-empty"),
    ("folder:", TRAIN_KINDS, DataError, "names no path"),
])
def test_parse_spec_errors(spec, kinds, error, match):
    with pytest.raises(error, match=match):
        parse_data_spec(spec, kinds)
