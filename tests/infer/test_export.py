"""ONNX export: dynamic batch, conventions carried in the file, onnxruntime == PyTorch, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from facesphere.errors import FaceSphereError, InvalidOptionError, UnknownNameError
from facesphere.infer.models import OnnxRuntimeEmbedder, load_embedder

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_matches_pytorch_at_any_batch_size(tiny_run, tmp_path, exporter):
    from facesphere.infer.export import export_onnx

    out = tmp_path / f"{exporter}.onnx"
    report = export_onnx(tiny_run, out, exporter=exporter, batch_sizes=(1, 3))
    assert out.is_file() and report["max_rel_diff"] <= 1e-4 and report["min_cosine"] > 0.99999
    assert not list(tmp_path.glob("*.tmp*"))
    onnx_model = load_embedder(out)
    assert isinstance(onnx_model, OnnxRuntimeEmbedder)
    torch_model = load_embedder(tiny_run)
    # the run's input convention travelled inside the file
    assert (onnx_model.color, onnx_model.mean, onnx_model.std, onnx_model.input_size) == (
        torch_model.color, torch_model.mean, torch_model.std, torch_model.input_size)
    images = np.random.default_rng(5).integers(0, 256, size=(7, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(onnx_model.embed(images), torch_model.embed(images), atol=1e-4)


def test_failed_check_leaves_the_old_file(tiny_run, tmp_path):
    from facesphere.infer.export import export_onnx

    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous model")
    with pytest.raises(FaceSphereError, match="differs from PyTorch"):
        export_onnx(tiny_run, out, exporter="torchscript", tolerance=-1.0)  # nothing can pass
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_options_are_checked(tiny_run, tmp_path):
    from facesphere.infer.export import export_onnx

    with pytest.raises(UnknownNameError, match="dynamo"):
        export_onnx(tiny_run, tmp_path / "m.onnx", exporter="tf")
    with pytest.raises(InvalidOptionError, match="opset"):
        export_onnx(tiny_run, tmp_path / "m.onnx", opset=11)
