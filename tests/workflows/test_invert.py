"""Face synthesis from embeddings with BatchNorm priors (docs/methods.md §6.7): the BN prior, the identity loss, hook hygiene,
and inversion of a tiny sub-center ArcFace model trained on synthetic identities (training class and unseen face)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facesphere import build_backbone
from facesphere.errors import InvalidOptionError
from facesphere.run import load_run
from facesphere.workflows.invert import (
    BatchNormPrior,
    class_target,
    embedding_target,
    frozen,
    identity_loss,
    image_target,
    invert,
    to_uint8,
)
from tests.workflows.test_clean import subcenter_run


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _random_bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_backbone("sfnet4", embed_dim=16, channels=(4, 8, 8, 16), batchnorm=True)
    with torch.no_grad():  # running statistics unlike those of the random input
        for layer in model.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-1.0, 1.0)
                layer.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _layer_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every BatchNorm2d in forward order, captured with forward pre-hooks."""
    captured: list[torch.Tensor] = []
    handles = [m.register_forward_pre_hook(lambda mod, inp: captured.append(inp[0].detach().double()))
               for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return captured


def test_bn_prior_matches_hand_computation_and_is_nonnegative():
    model = _random_bn_model()
    x = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    expected = 0.0
    for a, layer in zip(_layer_inputs(model, x), layers):
        mean = a.mean(dim=(0, 2, 3))
        var = ((a - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
        expected += float(torch.sqrt(((mean - layer.running_mean.double()) ** 2).sum()))
        expected += float(torch.sqrt(((var - layer.running_var.double()) ** 2).sum()))
    with BatchNormPrior(model) as prior, torch.no_grad():
        model(x)
        r_bn = float(prior.pop())
    assert len(prior.layers) == 4
    assert r_bn > 0
    assert r_bn == pytest.approx(expected, rel=1e-5)


def test_bn_prior_is_zero_when_running_stats_are_the_batch_stats():
    model = _random_bn_model(2)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(3))

    def overwrite(layer, inputs):  # set the layer's running stats to its current input's (biased) statistics
        a = inputs[0]
        layer.running_mean.copy_(a.mean(dim=(0, 2, 3)))
        layer.running_var.copy_(a.var(dim=(0, 2, 3), unbiased=False))

    handles = [m.register_forward_pre_hook(overwrite) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    with BatchNormPrior(model) as prior, torch.no_grad():
        model(x)
        assert float(prior.pop()) < 1e-4
        model(x * 1.5)  # another batch: > 0 again
        assert float(prior.pop()) > 1e-2


def test_hooks_leave_the_normal_forward_bit_identical_and_state_restored():
    model = _random_bn_model(4)
    model.train()
    model.layer1[0][1].training = False  # a mixed mode that must come back as it was
    model.fc.weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(5))
    with frozen(model), torch.no_grad():
        before = model(x)
    prior = BatchNormPrior(model, active=False)
    with frozen(model), torch.no_grad():
        registered_inactive = model(x)
        prior.active = True
        registered_active = model(x)
    prior.remove()
    assert torch.equal(before, registered_inactive) and torch.equal(before, registered_active)
    target = embedding_target(torch.randn(16), 16)
    invert(model, target, steps=3, num_images=2, seed=0)
    with frozen(model), torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # running stats untouched
    assert all(not m._forward_hooks for m in model.modules())


def test_identity_loss_decreases_monotonically_with_a_small_lr():
    model = _random_bn_model(6)
    target = embedding_target(torch.randn(16, generator=torch.Generator().manual_seed(7)), 16, loss="cosine")
    result = invert(model, target, steps=25, lr=0.01, num_images=2, seed=11, bn_weight=0.0, tv_weight=0.0,
                    flip=False, jitter=0, cosine_schedule=False)
    losses = [h["id_loss"] for h in result.history]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 1e-3
    again = invert(model, target, steps=25, lr=0.01, num_images=2, seed=11, bn_weight=0.0, tv_weight=0.0,
                   flip=False, jitter=0, cosine_schedule=False)
    assert np.array_equal(again.images, result.images)


def test_arcface_identity_loss_hand_case():
    head = nn.Module()
    head.weight = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    head.subcenters = 1
    target = class_target(head, 0, loss="arcface", s=64.0, m=0.5)
    x = torch.tensor([[0.7, float(np.sqrt(1 - 0.49))]])  # cos 0.7 to class 0, 0.714 to class 1
    phi = float(np.cos(np.arccos(0.7) + 0.5))
    assert phi == pytest.approx(0.271929, abs=1e-6)  # docs/methods.md §6.5 test vector
    logits = np.array([64 * phi, 64 * np.sqrt(1 - 0.49)])
    expected = -logits[0] + np.log(np.exp(logits).sum())
    assert float(identity_loss(x, target)) == pytest.approx(expected, rel=1e-5)
    both = class_target(head, 0, loss="arcface+cosine")
    assert float(identity_loss(x, both)) == pytest.approx(expected + 64 * 0.3, rel=1e-5)
    with pytest.raises(InvalidOptionError, match="class id"):
        class_target(head, 2)
    with pytest.raises(InvalidOptionError, match="shape"):
        embedding_target(np.zeros(3), 16)


def test_inversion_reaches_training_class_and_unseen_identity():
    from facesphere.data.synthetic import (
        EVAL_IDENTITY_OFFSET,
        SyntheticConfig,
        SyntheticFaces,
    )

    config, backbone, head, _ = load_run(subcenter_run())
    options = dict(steps=200, num_images=2, seed=0)
    result = invert(backbone, class_target(head, 3), **options)
    m = result.metrics
    assert m["final_uint8"]["cosine"] >= 0.8, m["final_uint8"]
    assert m["final"]["bn_loss"] < 0.5 * m["initial"]["bn_loss"]
    assert result.images.shape == (2, 112, 112, 3) and result.images.dtype == np.uint8

    face = SyntheticFaces(SyntheticConfig(seed=0, difficulty=0.5)).render(EVAL_IDENTITY_OFFSET + 7, 0)
    target = image_target(backbone, face, mean=127.5, std=127.5, color="rgb", head=head)
    result = invert(backbone, target, **options)
    m = result.metrics
    assert m["final_uint8"]["cosine"] >= 0.8, m["final_uint8"]
    assert m["final_uint8"]["cosine"] > m["initial"]["cosine"] + 0.2
    assert m["final"]["bn_loss"] < 0.5 * m["initial"]["bn_loss"]
    # the reported cosine is the cosine of the saved 8-bit images, measured here independently
    x = torch.from_numpy((result.images.astype(np.float32) - 127.5) / 127.5).permute(0, 3, 1, 2)
    with torch.no_grad():
        e = torch.nn.functional.normalize(backbone(x), dim=1)
        ref = torch.nn.functional.normalize(backbone(torch.from_numpy((face[None].astype(np.float32) - 127.5)
                                                                      / 127.5).permute(0, 3, 1, 2)), dim=1)[0]
    np.testing.assert_allclose((e @ ref).numpy(), m["final_uint8"]["cosines"], atol=1e-5)


def test_to_uint8_inverts_the_normalisation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    for color, mean, std in (("rgb", 127.5, 127.5), ("bgr", 127.5, 128.0)):
        src = images[..., ::-1] if color == "bgr" else images
        x = (torch.from_numpy(np.ascontiguousarray(src)).permute(0, 3, 1, 2).float() - mean) / std
        assert np.array_equal(to_uint8(x, mean=mean, std=std, color=color), images)
