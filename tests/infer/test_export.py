"""ONNX export: dynamic batch, conventions carried in the file, onnxruntime == PyTorch, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from facesphere.errors import FaceSphereError, InvalidOptionError, UnknownNameError
from facesphere.infer.embedders import OnnxRuntimeEmbedder, load_embedder
from tests.helpers import glint_crops

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


def test_export_matches_pytorch_on_real_aligned_faces(tiny_run, tmp_path):
    """The acceptance check on real faces: Glint crops (aligned 112x112) through the exported run."""
    from facesphere.infer.export import export_onnx

    faces = np.stack(glint_crops(24))
    out = tmp_path / "model.onnx"
    report = export_onnx(tiny_run, out, exporter="torchscript", check_images=faces, batch_sizes=(1,))
    assert report["checked_batches"] == [1, len(faces)] and report["max_rel_diff"] <= 1e-4
    torch_features = load_embedder(tiny_run).embed(faces)
    onnx_features = load_embedder(out).embed(faces)
    np.testing.assert_allclose(onnx_features, torch_features, atol=1e-4)
    # and the ranking a user sees does not change: the same nearest neighbour for every face
    sim_torch, sim_onnx = torch_features @ torch_features.T, onnx_features @ onnx_features.T
    np.fill_diagonal(sim_torch, -2), np.fill_diagonal(sim_onnx, -2)
    assert (sim_torch.argmax(1) == sim_onnx.argmax(1)).all()


@pytest.mark.parametrize("backbone", ["mobilefacenet", "iresnet18"])
def test_paper_backbones_export_within_tolerance_on_real_faces(backbone, tmp_path):
    """The deployment backbones (depthwise convs, PReLU, BN-in-the-head) export to 1e-4 on real faces; BN
    statistics are set from the faces first so the check does not run through identity BN layers."""
    import torch

    from facesphere.backbones import build_backbone
    from facesphere.infer.embedders import TorchEmbedder
    from facesphere.infer.export import export_onnx

    faces = np.stack(glint_crops(16))
    torch.manual_seed(0)
    module = build_backbone(backbone, embed_dim=128)
    module.train()
    with torch.no_grad():  # give every BatchNorm real running statistics
        module(torch.from_numpy((faces.astype(np.float32) - 127.5) / 128).permute(0, 3, 1, 2))
    embedder = TorchEmbedder(module, name=backbone, input_size=(112, 112), color="rgb", mean=127.5, std=128.0)
    report = export_onnx(embedder, tmp_path / f"{backbone}.onnx", exporter="torchscript", check_images=faces,
                         batch_sizes=(2,))
    assert report["max_rel_diff"] <= 1e-4 and report["min_cosine"] > 0.9999
