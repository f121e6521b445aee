"""SFNet's two residual layouts: ``branch`` (the default; OpenSphere's sfnet*_deprecated) and ``post`` (OpenSphere's
sfnet.py), and the renaming of an OpenSphere state dict onto facesphere's modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facesphere.backbones import build_backbone, opensphere_sfnet_state_dict
from facesphere.errors import InvalidOptionError

NARROW = (8, 16, 16, 32)


class _Reference(nn.Module):
    """An SFNet written from the description of OpenSphere's two files (layer names as theirs): stage =
    conv (+BN) + ReLU; unit = conv (+BN), ReLU, conv (+BN), then ReLU after the sum (``post``) or on the branch before
    it (``branch``); flatten, fc, BN1d with ``batchnorm``."""

    def __init__(self, units, channels, batchnorm: bool, post: bool, deprecated_names: bool) -> None:
        super().__init__()
        self.post = post
        norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        in_ch = 3
        for i, (width, count) in enumerate(zip(channels, units), start=1):
            stage = nn.Module()
            name = "conv" if deprecated_names else "conv1"
            setattr(stage, name, nn.Conv2d(in_ch, width, 3, 2, 1, bias=not batchnorm))
            stage.bn1 = norm(width)
            blocks = [stage]
            for _ in range(count):
                block = nn.Module()
                block.conv1 = nn.Conv2d(width, width, 3, 1, 1, bias=not batchnorm)
                block.bn1 = norm(width)
                block.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=not batchnorm)
                block.bn2 = norm(width)
                blocks.append(block)
            setattr(self, f"layer{i}", nn.ModuleList(blocks))
            in_ch = width
        self.fc = nn.Linear(channels[-1] * 7 * 7, 32)
        self.features = nn.BatchNorm1d(32) if batchnorm else nn.Identity()
        self.deprecated_names = deprecated_names

    def forward(self, x):
        for i in range(1, 5):
            stage, *blocks = getattr(self, f"layer{i}")
            conv = stage.conv if self.deprecated_names else stage.conv1
            x = torch.relu(stage.bn1(conv(x)))
            for b in blocks:
                branch = b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x)))))
                x = torch.relu(x + branch) if self.post else x + torch.relu(branch)
        return self.features(self.fc(torch.flatten(x, 1)))


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("residual", ["branch", "post"])
def test_opensphere_weights_give_the_same_embeddings(residual, batchnorm):
    torch.manual_seed(0)
    deprecated = residual == "branch"
    reference = _Reference((0, 1, 2, 0), NARROW, batchnorm, post=residual == "post",
                           deprecated_names=deprecated).eval()
    for module in reference.modules():  # non-trivial BN statistics
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    model = build_backbone("sfnet10", embed_dim=32, channels=NARROW, batchnorm=batchnorm, residual=residual).eval()
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}  # as a DataParallel checkpoint holds it
    model.load_state_dict(opensphere_sfnet_state_dict(state), strict=True)
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_the_two_layouts_differ_on_the_same_weights():
    torch.manual_seed(0)
    branch = build_backbone("sfnet10", embed_dim=32, channels=NARROW).eval()
    post = build_backbone("sfnet10", embed_dim=32, channels=NARROW, residual="post").eval()
    with torch.no_grad():  # (the default init makes units near-identities: give the branches weight)
        for name, p in branch.named_parameters():
            if "body" in name:
                p.normal_(0.0, 0.2)
    post.load_state_dict(branch.state_dict(), strict=True)  # ReLU has no parameters: the same keys
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        cosine = nn.functional.cosine_similarity(branch(x), post(x)).min()
    assert cosine < 0.9999


def test_residual_is_validated_and_prelu_post_has_its_own_slopes():
    with pytest.raises(InvalidOptionError, match="residual must be one of branch, post"):
        build_backbone("sfnet4", residual="pre")
    keys = set(build_backbone("sfnet10", channels=NARROW, activation="prelu", residual="post").state_dict())
    assert "layer2.1.act.weight" in keys and "layer2.1.body.1.2.weight" not in keys
