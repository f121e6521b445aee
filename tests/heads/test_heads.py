"""Every registered head: spec toy vectors, a slow per-sample fp64 reference, gradients, numerics, invariances."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import facesphere as fs
from facesphere.heads import HEADS, head_options
from facesphere.heads.objectives import (
    SFaceLoss,
    SphereFace2Loss,
    hyperspherical_energy,
)

HEAD_NAMES = fs.list_heads()
B, D, C = 6, 8, 7


def make_batch(dtype=torch.float64, seed=0, batch=B, classes=C, dim=D):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=gen, dtype=dtype) * 3
    y = torch.randint(0, classes, (batch,), generator=gen)
    return x, y


def build(name, classes=C, dim=D, dtype=torch.float64, seed=0, **options):
    torch.manual_seed(seed)
    head = fs.build_head(name, embed_dim=dim, num_classes=classes, **options)
    return head.to(dtype)


# ----------------------------------------------------------------------------------------------------------------
# Slow per-sample fp64 reference: every method's loss written out with ``math`` from docs/methods.md, one sample at a time.


def _ce(z, y):
    top = max(z)
    return -z[y] + top + math.log(sum(math.exp(v - top) for v in z))


def _softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _psi_sphereface(c, m):
    theta = math.acos(c)
    k = math.floor(m * theta / math.pi)
    k = min(k, math.ceil(m) - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def reference_loss(name, head, x, y, step):
    """Loss of ``head`` (with its options) on (x, y), computed one sample at a time in fp64 Python floats."""
    margin = head.margin
    weight = head.weight.detach().double().tolist()
    k_sub = head.subcenters
    total, extra = 0.0, 0.0
    batch = x.shape[0]
    for i in range(batch):
        xi = x[i].tolist()
        r = math.sqrt(sum(v * v for v in xi))
        if name == "softmax":
            z = [sum(a * b for a, b in zip(xi, w)) for w in weight]
            total += _ce(z, int(y[i]))
            continue
        cos = []
        for j in range(head.num_classes):
            best = -2.0
            for k in range(k_sub):
                w = weight[j * k_sub + k]
                wn = math.sqrt(sum(v * v for v in w))
                best = max(best, sum(a * b for a, b in zip(xi, w)) / (r * wn))
            cos.append(best)
        yi = int(y[i])
        scale = head.s if head.feature_norm == "hard" else r
        phi = list(cos)
        if name in ("normface",):
            pass
        elif name == "cosface":
            phi[yi] = cos[yi] - margin.m
        elif name in ("arcface", "subcenter_arcface"):
            phi[yi] = math.cos(min(math.acos(cos[yi]) + margin.m, math.pi))
        elif name == "combined":
            phi[yi] = math.cos(min(max(margin.m1 * math.acos(cos[yi]) + margin.m2, 0), math.pi)) - margin.m3
        elif name in ("sphereface", "sphereface_plus"):
            psi = _psi_sphereface(cos[yi], margin.m)
            lam = margin.lam(step)
            phi[yi] = cos[yi] + (psi - cos[yi]) / (1 + lam)
        elif name == "sphereface_r":
            m = margin.m
            if margin.margin == "v2":
                phi = [math.cos(math.acos(c) / m) for c in cos]
                phi[yi] = cos[yi]
            elif margin.margin == "v1":
                phi[yi] = math.cos(min(m * math.acos(cos[yi]), math.pi))
            else:
                phi[yi] = _psi_sphereface(cos[yi], m)
        elif name == "sphereface2":
            g = lambda c: 2 * ((c + 1) / 2) ** margin.t - 1  # noqa: E731
            phi = [g(c) + margin.m for c in cos]
            phi[yi] = g(cos[yi]) - margin.m
            bias = float(head.bias.detach())
            zs = [scale * p + bias for p in phi]
            lw, alpha = head.objective.loss_weight, head.objective.alpha
            loss_i = alpha * _softplus(-zs[yi]) + (1 - alpha) * sum(_softplus(z) for j, z in enumerate(zs) if j != yi)
            total += lw / scale * loss_i
            continue
        elif name == "sface":
            theta = [math.acos(c) for c in cos]
            sface = head.objective
            w_intra = 1 / (1 + math.exp(-sface.k * (theta[yi] - sface.a)))
            loss_i = -w_intra * scale * cos[yi]
            for j, t in enumerate(theta):
                if j != yi:
                    loss_i += 1 / (1 + math.exp(sface.k * (t - sface.b))) * scale * cos[j]
            total += loss_i
            continue
        else:
            raise AssertionError(f"no reference for {name}: add one when registering a head")
        z = [scale * p for p in phi]
        ce = _ce(z, yi)
        if head.objective.divide_by_s:
            ce /= head.s
        total += head.objective.loss_weight * ce
        if head.feature_norm == "soft":
            extra += head.objective.norm_penalty * abs(r - head.s) / batch
    loss = total / batch + extra
    if getattr(head.objective, "mhe_weight", 0) > 0:
        classes = sorted(set(int(v) for v in y))
        units = []
        for j in classes:
            w = weight[j]
            n = math.sqrt(sum(v * v for v in w))
            units.append([v / n for v in w])
        pairs = [(a, b) for a in range(len(units)) for b in range(a + 1, len(units))]
        if pairs:
            mhe = sum(
                math.acos(max(-1 + 1e-5, min(1 - 1e-5, sum(p * q for p, q in zip(units[a], units[b]))))) ** -2
                for a, b in pairs
            ) / len(pairs)
            loss += head.objective.mhe_weight * mhe
    return loss


REFERENCE_CASES = [(name, {}) for name in HEAD_NAMES] + [
    ("sphereface_r", {"margin": "v1", "m": 1.5, "s": 30.0}),
    ("sphereface_r", {"margin": "v0", "m": 1.7}),
    ("sphereface_r", {"feature_norm": "soft", "s": 5.0}),
    ("sphereface_r", {"feature_norm": "none"}),
    ("sphereface", {"feature_norm": "hard", "m": 1.5, "lambda_base": 0.0, "lambda_min": 0.0}),
    ("subcenter_arcface", {"subcenters": 2}),
    ("combined", {"m1": 1.35, "m2": 0.0, "m3": 0.0}),
]


@pytest.mark.parametrize("name,options", REFERENCE_CASES, ids=lambda v: str(v))
def test_matches_per_sample_reference(name, options):
    head = build(name, **options)
    x, y = make_batch()
    out = head(x, y)
    expected = reference_loss(name, head, x, y, step=int(head.step))
    assert out.loss.item() == pytest.approx(expected, abs=1e-6, rel=1e-9)


def test_every_head_has_a_reference():
    x, y = make_batch()
    for name in HEAD_NAMES:
        head = build(name)
        head(x, y)
        reference_loss(name, head, x, y, step=1)  # raises for a head without one


# ----------------------------------------------------------------------------------------------------------------
# Toy vectors of docs/methods.md through the whole head: exact cosines c via unit class centres e_j and
# x = [c_0, ..., c_{C-1}, sqrt(1 − Σc²)].


def toy_input(cos, norm=1.0):
    cos = torch.tensor(cos, dtype=torch.float64)
    x = torch.cat([cos, torch.sqrt(1 - (cos**2).sum()).reshape(1)]) * norm
    return x.reshape(1, -1), torch.tensor([0])


def toy_head(name, num_classes, **options):
    head = fs.build_head(name, embed_dim=num_classes + 1, num_classes=num_classes, **options).double()
    with torch.no_grad():
        head.weight.copy_(torch.eye(num_classes, num_classes + 1, dtype=torch.float64))
    return head


def grad_wrt_scaled_cos(head, x, y):
    """Run the head and capture ∂loss/∂(S·c), the gradient reaching the (pooled) logits before the margin."""
    captured = {}
    original = head._pool

    def pool(logits):
        out = original(logits)
        out.register_hook(lambda g: captured.setdefault("grad", g))
        return out * 1  # a fresh tensor for the head's in-place margin

    head._pool = pool
    out = head(x, y)
    out.loss.backward()
    return out, captured["grad"]


def test_sphereface_r_hfn_v2_toy():  # §4.5
    head = toy_head("sphereface_r", 3, margin="v2", s=60.0, m=1.4, loss_weight=50.0)
    x, y = toy_input([0.5, 0.2, -0.1])
    out, grad = grad_wrt_scaled_cos(head, x, y)
    assert out.logits[0].tolist() == pytest.approx([30.0, 33.512471, 22.101959], abs=1e-6)
    assert out.loss.item() == pytest.approx(2.951557, abs=1e-6)
    assert (grad[0] * 60).tolist() == pytest.approx([-48.552042, 48.551504, 0.000538], abs=1e-6)


def test_sphereface_r_hfn_v1_toy():  # §4.5
    head = toy_head("sphereface_r", 3, margin="v1", s=30.0, m=1.5, loss_weight=50.0)
    x, y = toy_input([0.5, 0.2, -0.1])
    out = head(x, y)
    assert out.logits[0].tolist() == pytest.approx([0.0, 6.0, -3.0], abs=1e-6)
    assert out.loss.item() == pytest.approx(10.004331, abs=1e-6)


def test_sfn_penalty():  # §4.5: s = 30, t = 0.01, norms [20, 30, 40] -> 0.066667
    head = fs.build_head("sphereface_r", embed_dim=4, num_classes=3, feature_norm="soft", s=30.0,
                         norm_penalty=0.01).double()
    x = torch.zeros(3, 4, dtype=torch.float64)
    x[:, 0] = torch.tensor([20.0, 30.0, 40.0])
    out = head(x, torch.tensor([0, 1, 2]))
    assert float(out.extras["norm_penalty"]) == pytest.approx(0.066667, abs=1e-6)


def test_cosface_toy():  # §5
    head = toy_head("cosface", 2, s=64.0, m=0.35)
    out, grad = grad_wrt_scaled_cos(head, *toy_input([0.5, 0.2]))
    assert out.logits[0].tolist() == pytest.approx([9.6, 12.8], abs=1e-9)
    assert out.loss.item() == pytest.approx(3.239953, abs=1e-6)
    assert (grad[0] * 64).tolist() == pytest.approx([-61.493394, 61.493394], abs=1e-6)


def test_arcface_toy_detached_and_true():  # §6.2
    head = toy_head("arcface", 2)
    out, grad = grad_wrt_scaled_cos(head, *toy_input([0.5, 0.2]))
    assert out.logits[0].tolist() == pytest.approx([1.510181, 12.8], abs=1e-6)
    assert out.loss.item() == pytest.approx(11.289831, abs=1e-6)
    assert (grad[0] * 64).tolist() == pytest.approx([-63.999200, 63.999200], abs=1e-6)
    for variant in ("plain", "fallback"):
        head = toy_head("arcface", 2, variant=variant, gradient="true")
        out, grad = grad_wrt_scaled_cos(head, *toy_input([0.5, 0.2]))
        assert float(grad[0, 0] * 64) == pytest.approx(-73.879334, abs=1e-5)


def test_sphereface_lambda_toy():  # §3.6: two classes, ‖x‖ = 10, λ = 5: logits [1.666667, 2.0], CE 0.873639
    head = toy_head("sphereface", 2, iteration=1658)  # the next training forward is t = 1659 -> λ = 5
    out = head(*toy_input([0.5, 0.2], norm=10.0))
    assert float(out.extras["lambda"]) == 5.0
    assert out.logits[0].tolist() == pytest.approx([1.666667, 2.0], abs=1e-6)
    assert out.loss.item() == pytest.approx(0.873639, abs=1e-6)


def test_sphereface_counter_starts_at_one_and_persists():
    head = toy_head("sphereface", 2)
    head(*toy_input([0.5, 0.2], norm=10.0))
    assert int(head.step) == 1
    state = head.state_dict()
    assert int(state["step"]) == 1
    head.eval()
    out = head(*toy_input([0.5, 0.2], norm=10.0))
    assert int(head.step) == 1 and float(out.extras["lambda"]) == pytest.approx(892.857143, abs=1e-5)


def test_opensphere_sphereface_hfn_vector():  # §3.6: s = 30, m = 1.5, target logits
    for c, expected in ((0.9, 23.392306), (0.5, 0.0), (0.0, -21.213203), (-0.8, -35.334234)):
        head = toy_head("sphereface", 2, feature_norm="hard", s=30.0, m=1.5, lambda_base=0.0, lambda_min=0.0,
                        gradient="detached")
        out = head(*toy_input([c, 0.1]))
        assert out.logits[0, 0].item() == pytest.approx(expected, abs=1e-5)


def test_subcenter_pooling_vector():  # §6.5: sub-centre cosines [0.2, 0.7, 0.4] -> 17.403486
    head = fs.build_head("subcenter_arcface", embed_dim=4, num_classes=1, subcenters=3).double()
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4, dtype=torch.float64))
    x, y = toy_input([0.2, 0.7, 0.4])
    out = head(x, y)
    assert out.logits[0, 0].item() == pytest.approx(17.403486, abs=1e-6)


def test_subcenter_gradient_reaches_argmax_only():
    head = fs.build_head("subcenter_arcface", embed_dim=4, num_classes=2, subcenters=3).double()
    with torch.no_grad():
        head.weight.copy_(torch.cat([torch.eye(3, 4), torch.eye(3, 4).flip(0)]).double())
    x, y = toy_input([0.2, 0.7, 0.4])
    head(x, y).loss.backward()
    norms = head.weight.grad.norm(dim=1)
    assert norms[1] > 0 and norms[0] == 0 and norms[2] == 0  # class 0: only sub-centre 1 (cos 0.7) learns


def test_sface_toy():  # §7.4: C = 3, y = 0, c = [0.7, 0.3, 0.0]
    head = toy_head("sface", 3)
    out, grad = grad_wrt_scaled_cos(head, *toy_input([0.7, 0.3, 0.0]))
    assert out.logits is None
    assert float(out.extras["intra_loss"]) == pytest.approx(-18.323279, abs=1e-5)
    assert float(out.extras["inter_loss"]) == pytest.approx(1.012517, abs=1e-5)
    assert out.loss.item() == pytest.approx(-17.310761, abs=1e-5)
    assert float(grad[0, 0] * 64) == pytest.approx(-26.176113, abs=1e-5)
    assert float(out.extras["cos_target"]) == pytest.approx(0.7)
    assert float(out.extras["cos_nontarget"]) == pytest.approx(0.15)


def test_mhe_orthogonal_centres():  # §4.7: three orthogonal centres -> (π/2)^−2
    head = fs.build_head("sphereface_plus", embed_dim=3, num_classes=3).double()
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, dtype=torch.float64))
    assert hyperspherical_energy(head.weight, torch.tensor([0, 1, 2])).item() == pytest.approx(0.405285, abs=1e-6)
    assert hyperspherical_energy(head.weight, torch.tensor([1, 1])).item() == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Gradients: detached heads follow the CGD formula exactly; true-gradient heads pass gradcheck.


def _detached_cases():
    cases = []
    for name in HEAD_NAMES:
        opts = head_options(name)
        spec = HEADS[name]
        gradient = opts.get("gradient", spec.fixed.get("gradient"))
        if spec.fixed.get("weight_norm") == "none":
            continue
        if "gradient" in opts and gradient != "detached":
            cases.append((name, {"gradient": "detached"}))
        else:
            cases.append((name, {}))
    return cases


@pytest.mark.parametrize("name,options", _detached_cases(), ids=lambda v: str(v))
def test_detached_gradient_formula(name, options):
    head = build(name, **options)
    x, y = make_batch()
    out, grad = grad_wrt_scaled_cos(head, x, y)
    batch = y.shape[0]
    rows = torch.arange(batch)
    if isinstance(head.objective, SFaceLoss):
        cos = head.cosines(x)
        expected = head.objective.inter(cos) / batch
        expected[rows, y] = -head.objective.intra(cos[rows, y]) / batch
    elif isinstance(head.objective, SphereFace2Loss):
        cos = head.cosines(x)
        phi = head.margin.nontarget(cos)
        phi[rows, y] = head.margin.target(cos[rows, y])
        z = head.s * phi + head.bias.detach()
        alpha = head.objective.alpha
        expected = (1 - alpha) * torch.sigmoid(z)
        expected[rows, y] = -alpha * torch.sigmoid(-z[rows, y])
        expected = expected * head.objective.loss_weight / head.s / batch
    else:
        onehot = F.one_hot(y, head.num_classes).double()
        factor = head.objective.loss_weight / (head.s if head.objective.divide_by_s else 1.0)
        expected = factor * (torch.softmax(out.logits.detach(), dim=1) - onehot) / batch
    assert torch.allclose(grad, expected, atol=1e-9, rtol=1e-7)


def _true_gradient_cases():
    cases = [("softmax", {})]
    for name in HEAD_NAMES:
        if "gradient" in head_options(name):
            cases.append((name, {"gradient": "true"}))
    cases += [("arcface", {"gradient": "true", "variant": v}) for v in ("plain", "fallback", "easy")]
    return cases


@pytest.mark.parametrize("name,options", _true_gradient_cases(), ids=lambda v: str(v))
def test_true_gradient_gradcheck(name, options):
    options = dict(options)
    if head_options(name).get("weight_norm") == "inplace":
        options["weight_norm"] = "graph"  # gradcheck perturbs W: an in-place projection would undo the perturbation
    head = build(name, classes=4, dim=5, **options).eval()  # eval: scheduled margins stay put
    x, y = make_batch(batch=3, classes=4, dim=5, seed=1)
    x.requires_grad_(True)
    weight = head.weight
    assert torch.autograd.gradcheck(lambda emb: head(emb, y).loss, (x,), eps=1e-6, atol=1e-5)
    # weights: through torch.func so the parameter itself is the input
    params = {"weight": weight.detach().clone().requires_grad_(True)}
    loss_of_w = lambda w: torch.func.functional_call(head, {"weight": w}, (x.detach(), y)).loss  # noqa: E731
    assert torch.autograd.gradcheck(loss_of_w, (params["weight"],), eps=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Numerics, dtypes, reductions, invariances — over the whole registry.


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_cosines_at_and_next_to_pm1_fp32(name):
    head = build(name, dtype=torch.float32)
    with torch.no_grad():
        w = F.normalize(head.weight[:: head.subcenters][: C].float(), dim=1)
        x = torch.stack([w[0], -w[0], w[1] + 1e-4 * w[2], -w[1] + 1e-4 * w[3], w[2] * 1e-3 + w[0], torch.zeros(D) + w[4]])
    y = torch.tensor([0, 0, 1, 1, 2, 3])
    x = (x * 5).requires_grad_(True)
    out = head(x, y)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    if out.logits is not None:
        assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", HEAD_NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_embeddings(name, dtype):
    head = build(name, dtype=torch.float32)
    x, y = make_batch(dtype=torch.float32)
    x = x.to(dtype).requires_grad_(True)
    out = head(x, y)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_loss_is_fp32_for_fp32_input(name):
    head = build(name, dtype=torch.float32)
    x, y = make_batch(dtype=torch.float32)
    out = head(x, y)
    assert out.loss.dtype == torch.float32 and out.loss.dim() == 0
    if out.logits is not None:
        assert out.logits.shape == (B, C) and out.logits.dtype == torch.float32
    assert head.weight.shape == (C * head.subcenters, D)


ZERO_MARGIN = {
    "cosface": {"m": 0.0},
    "arcface": {"m": 0.0},
    "subcenter_arcface": {"m": 0.0, "subcenters": 1},
    "combined": {"m1": 1.0, "m2": 0.0, "m3": 0.0},
    "sphereface": {"m": 1.0, "feature_norm": "hard", "gradient": "detached"},
    "sphereface_plus": {"m": 1.0, "mhe_weight": 0.0},
    "sphereface_r": {"m": 1.0, "loss_weight": 1.0},
    "normface": {},
}


@pytest.mark.parametrize("name", sorted(ZERO_MARGIN))
def test_zero_margin_is_normalised_softmax(name):
    options = dict(ZERO_MARGIN[name])
    head = build(name, **options)
    x, y = make_batch()
    out = head(x, y)
    cos = head.cosines(x)
    expected_logits = head.s * cos
    assert torch.allclose(out.logits, expected_logits, atol=1e-9)
    ce = F.cross_entropy(expected_logits, y)
    if head.objective.divide_by_s:
        ce = ce / head.s
    assert out.loss.item() == pytest.approx(ce.item(), abs=1e-9)


def test_every_margin_head_has_a_zero_margin_case():
    ce_heads = {n for n in HEAD_NAMES if HEADS[n].objective.softmax and n != "softmax"}
    assert ce_heads == set(ZERO_MARGIN)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_class_and_batch_permutation_equivariance(name):
    head = build(name)
    x, y = make_batch()
    base = head(x, y)
    gen = torch.Generator().manual_seed(3)
    perm = torch.randperm(C, generator=gen)  # new class j = old class perm[j]
    inverse = torch.argsort(perm)
    permuted = build(name)
    k = head.subcenters
    with torch.no_grad():
        rows = (perm.repeat_interleave(k) * k + torch.arange(k).repeat(C))
        permuted.weight.copy_(head.weight[rows])
        if head.bias is not None:
            permuted.bias.copy_(head.bias)
    out = permuted(x, inverse[y])
    assert out.loss.item() == pytest.approx(base.loss.item(), abs=1e-9)
    if base.logits is not None:
        assert torch.allclose(out.logits, base.logits[:, perm], atol=1e-9)
    order = torch.randperm(B, generator=gen)
    again = build(name)
    with torch.no_grad():
        again.weight.copy_(head.weight)
    out = again(x[order], y[order])
    assert out.loss.item() == pytest.approx(base.loss.item(), abs=1e-9)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_unknown_option_lists_valid_ones(name):
    with pytest.raises(fs.UnknownNameError) as info:
        fs.build_head(name, embed_dim=4, num_classes=3, not_an_option=1)
    message = str(info.value)
    assert "not_an_option" in message
    for option in head_options(name):
        assert option in message


def test_unknown_head_lists_valid_ones():
    with pytest.raises(fs.UnknownNameError) as info:
        fs.build_head("arcfaec")
    assert all(name in str(info.value) for name in HEAD_NAMES)
    assert isinstance(info.value, KeyError)


def test_invalid_choice_values():
    with pytest.raises(fs.InvalidOptionError, match="v0, v1, v2"):
        fs.build_head("sphereface_r", margin="v3")
    with pytest.raises(fs.InvalidOptionError, match="hard, none, soft"):
        fs.build_head("sphereface_r", feature_norm="medium")
    with pytest.raises(fs.InvalidOptionError, match="A, C, M"):
        fs.build_head("sphereface2", margin="B")


def test_public_api_example():
    head = fs.build_head("arcface", embed_dim=512, num_classes=10_000, s=64.0, m=0.5)
    emb = torch.randn(4, 512)
    out = head(emb, torch.tensor([1, 2, 3, 4]))
    assert out.loss.dtype == torch.float32 and out.logits.shape == (4, 10_000)
    assert head.weight.shape == (10_000, 512)
    assert fs.list_heads() == sorted(fs.list_heads())


def test_inplace_weight_norm_projects_parameter():
    head = fs.build_head("sphereface_r", embed_dim=4, num_classes=3)
    with torch.no_grad():
        head.weight.mul_(3.0)
    x, y = make_batch(dtype=torch.float32, batch=2, classes=3, dim=4)
    out = head(x, y)
    out.loss.backward()
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(3), atol=1e-6)
    # WN-inplace gradient: ∂c_j/∂W_j = x̂ (no tangent projection), so the gradient is a combination of the x̂ rows
    xhat = F.normalize(x, dim=1)
    coeff = torch.linalg.lstsq(xhat.t(), head.weight.grad.t()).solution
    assert torch.allclose(xhat.t() @ coeff, head.weight.grad.t(), atol=1e-5)


@pytest.mark.parametrize("name", [n for n in HEAD_NAMES if HEADS[n].objective.softmax])
def test_margin_logits_on_a_class_subset(name):
    """Model-parallel entry point: a subset of classes, labels −1 where the class is not in the subset."""
    head = build(name, classes=10)
    x, y = make_batch(classes=10)
    y = torch.tensor([1, 3, 5, 7, 9, 2])
    index = torch.tensor([1, 2, 3, 7])
    local = torch.tensor([0, 2, -1, 3, -1, 1])
    z, norms = head.margin_logits(x, local, index)
    full = build(name, classes=10)
    full.load_state_dict(head.state_dict())
    full.step.zero_()
    ref = full(x, y)
    assert z.shape == (6, 4)
    with_class = local >= 0
    assert torch.allclose(z[with_class], ref.logits[with_class][:, index], atol=1e-9)
    # rows whose class is elsewhere get no margin: plain S·c
    if head.weight_norm != "none":
        cos = head.cosines(x)[:, index]
        scale = head.s if head.feature_norm == "hard" else x.norm(dim=1, keepdim=True)
        expected = (scale * cos)[~with_class]
        if head.margin.nontarget(cos) is not None:
            expected = (scale * head.margin.nontarget(cos))[~with_class]
        assert torch.allclose(z[~with_class], expected, atol=1e-9)
    z.sum().backward()
    untouched = torch.ones(10, dtype=torch.bool)
    untouched[index] = False
    rows = torch.arange(10 * head.subcenters).view(10, head.subcenters)[untouched].reshape(-1)
    assert (head.weight.grad[rows] == 0).all()


def test_option_names_have_one_meaning_and_aliases_map_to_them():
    """``t`` is SphereFace2's similarity exponent; SphereFace-R's soft-normalisation weight is ``norm_penalty`` (its
    opensphere name ``t`` stays accepted as an alias, so older run configs still load)."""
    assert "t" in head_options("sphereface2") and "t" not in head_options("sphereface_r")
    head = fs.build_head("sphereface_r", embed_dim=4, num_classes=3, feature_norm="soft", t=0.02)
    assert head.objective.norm_penalty == 0.02
    with pytest.raises(fs.UnknownNameError, match="another name for 'norm_penalty'"):
        fs.build_head("sphereface_r", embed_dim=4, num_classes=3, t=0.02, norm_penalty=0.01)
    meanings = {}
    for name in HEAD_NAMES:
        spec = HEADS[name]
        for option in spec.options:
            owner = ("margin" if option in {f.name for f in dataclasses.fields(spec.margin)}
                     else "objective" if option in {f.name for f in dataclasses.fields(spec.objective)} else "head")
            meanings.setdefault(option, set()).add(
                (owner, getattr(spec.margin if owner == "margin" else spec.objective, "__name__", "")
                 if owner != "head" else ""))
    # an option shared by several heads means the same thing: the same part of the head takes it
    assert all(len({owner for owner, _ in where}) == 1 for where in meanings.values()), meanings
