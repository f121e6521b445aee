"""The BACKBONES registry: names, options and the errors a user can cause."""

from __future__ import annotations

import pytest

import facesphere
from facesphere.backbones import BACKBONES, build_backbone, list_backbones
from facesphere.errors import FaceSphereError, InvalidOptionError, UnknownNameError

EXPECTED_NAMES = {
    "sfnet4", "sfnet10", "sfnet20", "sfnet36", "sfnet64",
    "iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200",
    "mobilefacenet",
}


def test_list_backbones_sorted_and_complete():
    names = list_backbones()
    assert names == sorted(names)
    assert EXPECTED_NAMES <= set(names)
    assert names == BACKBONES.names()


def test_public_api_reexports():
    assert facesphere.build_backbone is build_backbone
    assert facesphere.list_backbones is list_backbones


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        build_backbone("resnet50")
    message = str(info.value)
    assert "resnet50" in message
    for name in EXPECTED_NAMES:
        assert name in message
    assert isinstance(info.value, FaceSphereError)


def test_unknown_option_lists_valid_options():
    with pytest.raises(UnknownNameError) as info:
        build_backbone("sfnet4", batch_norm=True)
    message = str(info.value)
    assert "batch_norm" in message and "batchnorm" in message and "input_size" in message

    with pytest.raises(UnknownNameError) as info:
        build_backbone("iresnet18", input_size=(112, 96))
    assert "dropout" in str(info.value)

    with pytest.raises(UnknownNameError, match="blocks"):
        build_backbone("mobilefacenet", dropout=0.1)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("sfnet4", {"input_size": (112, 100)}),
        ("sfnet4", {"input_size": "big"}),
        ("sfnet4", {"batchnorm": "yes"}),
        ("sfnet4", {"activation": "gelu"}),
        ("sfnet4", {"embed_dim": 0}),
        ("iresnet18", {"dropout": 1.5}),
        ("iresnet18", {"embed_dim": 2.5}),
        ("mobilefacenet", {"blocks": (1, 2, 3)}),
        ("mobilefacenet", {"scale": 0}),
    ],
)
def test_invalid_option_values(name, options):
    with pytest.raises(InvalidOptionError) as info:
        build_backbone(name, **options)
    assert name in str(info.value)


def test_sfnet_accepts_input_size_forms():
    assert build_backbone("sfnet4", input_size=112).input_size == (112, 112)
    assert build_backbone("sfnet4", input_size=[112, 96]).fc.in_features == 512 * 7 * 6
    assert build_backbone("sfnet4").fc.in_features == 512 * 7 * 7
