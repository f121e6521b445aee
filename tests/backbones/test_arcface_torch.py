"""Loading arcface_torch ``backbone.pth`` state dicts into our IResNet (docs/backbones.md)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from facesphere.backbones import build_backbone
from facesphere.backbones.iresnet import load_arcface_torch_state_dict
from facesphere.errors import FaceSphereError

# Keys of an arcface_torch iresnet checkpoint.
DOCUMENTED_KEYS = [
    "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "prelu.weight",
    "layer1.0.bn1.weight", "layer1.0.conv1.weight", "layer1.0.bn2.weight", "layer1.0.conv2.weight",
    "layer1.0.bn3.weight", "layer1.0.prelu.weight", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight",
    "layer4.1.bn3.running_var", "bn2.weight", "bn2.running_mean", "fc.weight", "fc.bias",
    "features.weight", "features.bias", "features.running_mean", "features.running_var",
]


@pytest.fixture(scope="module")
def trained_state():
    """An iresnet18 state dict with non-default values everywhere (as a trained checkpoint would have)."""
    torch.manual_seed(0)
    model = build_backbone("iresnet18", embed_dim=8)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.01)
    return OrderedDict((k, v.clone()) for k, v in model.state_dict().items())


def test_layout_matches_documented_keys():
    keys = set(build_backbone("iresnet18", embed_dim=8).state_dict())
    assert set(DOCUMENTED_KEYS) <= keys
    assert "layer1.1.downsample.0.weight" not in keys  # only the first block of a stage has a shortcut conv
    assert all(k.split(".")[0] in {"conv1", "bn1", "prelu", "layer1", "layer2", "layer3", "layer4", "bn2", "fc",
                                   "features"} for k in keys)


def test_roundtrip_through_file_strict(tmp_path, trained_state):
    path = tmp_path / "backbone.pth"
    torch.save(trained_state, path)
    model = build_backbone("iresnet18", embed_dim=8)
    assert load_arcface_torch_state_dict(model, path) is model
    # the plain file also loads with PyTorch's own strict loader: the key mapping is the identity
    fresh = build_backbone("iresnet18", embed_dim=8)
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    for key, value in trained_state.items():
        assert torch.equal(model.state_dict()[key], value), key
        assert torch.equal(fresh.state_dict()[key], value), key
    assert not model.features.weight.requires_grad
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), fresh.eval()(x))


def test_ddp_module_prefix_and_wrapper_are_stripped(tmp_path, trained_state):
    prefixed = OrderedDict(("module." + k, v) for k, v in trained_state.items())
    model = build_backbone("iresnet18", embed_dim=8)
    load_arcface_torch_state_dict(model, prefixed)
    assert torch.equal(model.state_dict()["layer2.0.conv1.weight"], trained_state["layer2.0.conv1.weight"])

    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": prefixed, "epoch": 3}, path)
    other = build_backbone("iresnet18", embed_dim=8)
    load_arcface_torch_state_dict(other, str(path))
    assert torch.equal(other.state_dict()["fc.weight"], trained_state["fc.weight"])


def test_mismatching_checkpoint_names_file_and_keys(tmp_path, trained_state):
    # an iresnet18 checkpoint loaded into an iresnet34 of another embedding size
    path = tmp_path / "r18_backbone.pth"
    torch.save(trained_state, path)
    target = build_backbone("iresnet34", embed_dim=16)
    before = target.state_dict()["conv1.weight"].clone()
    with pytest.raises(FaceSphereError) as info:
        load_arcface_torch_state_dict(target, path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys" in message and "layer1.2.conv1.weight" in message
    assert "shape mismatches" in message and "fc.weight" in message and "(8, 25088)" in message
    assert torch.equal(target.state_dict()["conv1.weight"], before)  # nothing half-loaded

    extra = OrderedDict(trained_state)
    extra["head.weight"] = torch.zeros(3)
    with pytest.raises(FaceSphereError, match="unexpected keys: head.weight"):
        load_arcface_torch_state_dict(build_backbone("iresnet18", embed_dim=8), extra)


def test_unreadable_inputs(tmp_path):
    model = build_backbone("iresnet18", embed_dim=8)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FaceSphereError, match="nope.pth"):
        load_arcface_torch_state_dict(model, missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(FaceSphereError, match="garbage.pth"):
        load_arcface_torch_state_dict(model, garbage)
    with pytest.raises(FaceSphereError, match="not a state dict"):
        load_arcface_torch_state_dict(model, {"conv1.weight": "text"})
