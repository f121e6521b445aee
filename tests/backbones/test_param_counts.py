"""Exact parameter counts (frozen parameters included) at embed_dim=512 and 112x112 input."""

from __future__ import annotations

import pytest

from facesphere.backbones import build_backbone
from facesphere.backbones.common import count_parameters

EXPECTED = [
    ("iresnet18", {}, 24_025_600),
    ("iresnet34", {}, 34_139_328),
    ("iresnet50", {}, 43_590_848),
    ("iresnet100", {}, 65_156_160),
    ("iresnet200", {}, 118_833_920),
    ("mobilefacenet", {}, 2_059_520),
    ("sfnet20", {}, 24_500_992),
    ("sfnet20", {"batchnorm": True}, 24_506_688),
    ("sfnet64", {}, 50_020_864),
    ("sfnet64", {"batchnorm": True}, 50_036_544),
]


@pytest.mark.parametrize(("name", "options", "expected"), EXPECTED, ids=[f"{n}-{o}" for n, o, _ in EXPECTED])
def test_parameter_count(name, options, expected):
    model = build_backbone(name, embed_dim=512, **options)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert count_parameters(model) == expected


def test_sfnet_layout_arithmetic():
    """The derivation behind the SFNet counts, by hand: no model is built here."""
    # SFNet without BN: conv weights + one bias per conv output channel + FC (weight and bias); parameter-free
    # activation. SFNet-BN drops the conv biases, adds BN2d weight+bias per conv channel and a BatchNorm1d (512).
    expected = {20: ((1, 2, 4, 1), 24_500_992, 24_506_688), 64: ((3, 8, 16, 3), 50_020_864, 50_036_544)}
    widths = (64, 128, 256, 512)
    for layout, plain, bn in expected.values():
        conv_w = conv_ch = 0
        in_ch = 3
        for width, count in zip(widths, layout):
            conv_w += 9 * in_ch * width + count * 2 * 9 * width * width
            conv_ch += width * (1 + 2 * count)
            in_ch = width
        fc = 512 * 7 * 7 * 512 + 512
        assert plain == conv_w + conv_ch + fc
        assert bn == conv_w + 2 * conv_ch + fc + 2 * 512


def test_sfnet_prelu_adds_one_slope_per_channel():
    plain = count_parameters(build_backbone("sfnet4"))
    prelu = count_parameters(build_backbone("sfnet4", activation="prelu"))
    assert prelu - plain == 64 + 128 + 256 + 512


def test_iresnet_features_weight_is_frozen_but_counted():
    model = build_backbone("iresnet18")
    assert not model.features.weight.requires_grad
    assert bool((model.features.weight == 1.0).all())
    assert count_parameters(model, trainable_only=True) == 24_025_600 - 512
