"""Parameter groups and learning-rate schedules."""

import pytest
import torch

import facesphere as fs
from facesphere.run.config import OptimConfig
from facesphere.train.optim import build_optimizer, lr_factor, param_groups


def test_no_weight_decay_on_norms_and_biases_and_separate_head_lr():
    backbone = fs.build_backbone("sfnet4", embed_dim=16, batchnorm=True, channels=(4, 4, 4, 4))
    head = fs.build_head("sphereface2", embed_dim=16, num_classes=5)
    groups = param_groups(backbone, head, OptimConfig(lr=0.1, head_lr=0.01, weight_decay=5e-4))
    by_tag = {g["tag"]: g for g in groups}
    assert by_tag["backbone"]["weight_decay"] == 5e-4 and all(p.ndim > 1 for p in by_tag["backbone"]["params"])
    assert by_tag["backbone_no_decay"]["weight_decay"] == 0 and all(p.ndim <= 1 for p in by_tag["backbone_no_decay"]["params"])
    assert by_tag["head"]["lr"] == 0.01 and head.weight in by_tag["head"]["params"]
    assert head.bias in by_tag["head_no_decay"]["params"]
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(backbone.parameters())) + len(list(head.parameters()))
    assert isinstance(build_optimizer(backbone, head, OptimConfig(optimizer="adamw")), torch.optim.AdamW)
    sgd = build_optimizer(backbone, head, OptimConfig(nesterov=True))
    assert sgd.defaults["nesterov"]


def test_decay_all_puts_every_parameter_in_a_decaying_group():
    backbone = fs.build_backbone("sfnet4", embed_dim=16, batchnorm=True, channels=(4, 4, 4, 4))
    head = fs.build_head("sphereface2", embed_dim=16, num_classes=5)
    groups = param_groups(backbone, head, OptimConfig(weight_decay=5e-4, decay_all=True))
    assert [g["tag"] for g in groups] == ["backbone", "head"]
    assert all(g["weight_decay"] == 5e-4 for g in groups)
    assert any(p is head.bias for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(backbone.parameters())) + len(list(head.parameters()))


@pytest.mark.parametrize(
    "schedule,expected",
    [
        ("step", [0.25, 1.0, 1.0, 0.1, 0.01]),
        ("constant", [0.25, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_warmup_then_schedule(schedule, expected):
    config = OptimConfig(schedule=schedule, warmup_steps=4, milestones=[0.5, 0.8], gamma=0.1)
    assert [lr_factor(s, 100, config) for s in (0, 3, 10, 50, 80)] == pytest.approx(expected)


def test_poly_and_cosine_reach_the_floor():
    poly = OptimConfig(schedule="poly", warmup_steps=0, power=1.0, lr=0.1, min_lr=0.0)
    assert lr_factor(0, 100, poly) == 1.0 and lr_factor(50, 100, poly) == pytest.approx(0.5)
    assert lr_factor(100, 100, poly) == pytest.approx(0.0)
    cosine = OptimConfig(schedule="cosine", warmup_steps=0, lr=0.1, min_lr=0.01)
    assert lr_factor(50, 100, cosine) == pytest.approx(0.55) and lr_factor(100, 100, cosine) == pytest.approx(0.1)
    steps = OptimConfig(schedule="step", warmup_steps=0, milestones=[16000, 24000])
    assert [lr_factor(s, 28000, steps) for s in (15999, 16000, 24000)] == pytest.approx([1.0, 0.1, 0.01])
