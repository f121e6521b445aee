"""Train vs eval behaviour: eval is deterministic and leaves BatchNorm statistics alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facesphere.backbones import build_backbone

CASES = [
    ("sfnet4", {"batchnorm": True}),
    ("iresnet18", {"dropout": 0.4}),
    ("mobilefacenet", {}),
]


def _bn_stats(model):
    return {
        n: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


@pytest.mark.parametrize(("name", "options"), CASES, ids=[n for n, _ in CASES])
def test_eval_deterministic_and_bn_stats_frozen(name, options):
    torch.manual_seed(0)
    model = build_backbone(name, embed_dim=16, **options)
    x = torch.randn(2, 3, 112, 112)

    model.eval()
    before = _bn_stats(model)
    assert before, "expected BatchNorm layers"
    with torch.no_grad():
        a = model(x)
        b = model(x)
    assert torch.equal(a, b)
    after = _bn_stats(model)
    for key, (mean, var, count) in before.items():
        assert torch.equal(mean, after[key][0]) and torch.equal(var, after[key][1]) and count == after[key][2]

    model.train()
    with torch.no_grad():
        t = model(x)
    trained = _bn_stats(model)
    assert any(not torch.equal(before[k][0], trained[k][0]) for k in before), "train mode must update BN stats"
    assert not torch.allclose(t, a)


def test_sfnet_without_bn_is_mode_independent():
    torch.manual_seed(0)
    model = build_backbone("sfnet4", embed_dim=16)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert torch.equal(train_out, eval_out)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_iresnet_dropout_only_in_train_mode():
    torch.manual_seed(0)
    model = build_backbone("iresnet18", embed_dim=16, dropout=0.5)
    assert model.dropout.p == 0.5
    assert build_backbone("iresnet18", embed_dim=16).dropout.p == 0.0
