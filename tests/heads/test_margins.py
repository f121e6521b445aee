"""The margin functions against the numeric test vectors of docs/methods.md (fp64, 1e-6)."""

import math

import pytest
import torch

from facesphere.heads.margins import (
    ArcFaceMargin,
    CombinedMargin,
    CosFaceMargin,
    SphereFace2Margin,
    SphereFaceMargin,
    SphereFaceRMargin,
    sphereface_lambda,
    sphereface_psi,
)
from facesphere.heads.objectives import SFaceLoss

TOL = 1e-6


def t64(values):
    return torch.tensor(values, dtype=torch.float64)


def close(actual, expected, tol=TOL):
    assert torch.allclose(actual, t64(expected), atol=tol, rtol=0), (actual, expected)


COS = [0.9, 0.5, 0.0, -0.5, -0.8]


def test_sphereface_psi_m4():  # §3.6
    close(sphereface_psi(t64(COS), 4), [-0.231200, -1.5, -3.0, -4.5, -5.156800])


@pytest.mark.parametrize(
    "m,expected",
    [(1.5, [0.779744, 0.0, -0.707107, -1.0, -1.177808]), (1.7, [0.720172, -0.207912, -0.891007, -1.086455, -1.551011])],
)
def test_sphereface_psi_noninteger(m, expected):  # §3.6 (ε-clamp of arccos is far from these points)
    close(sphereface_psi(t64(COS), m), expected)


def test_sphereface_psi_integer_matches_angle_form():
    cos = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    theta = torch.acos(cos)
    for m in (1, 2, 3, 4, 5):
        k = torch.floor(m * theta / math.pi).clamp(max=m - 1)
        expected = (1 - 2 * (k % 2)) * torch.cos(m * theta) - 2 * k
        assert torch.allclose(sphereface_psi(cos, m), expected, atol=1e-9)


def test_sphereface_psi_monotone_and_endpoints():
    cos = torch.linspace(-1, 1, 4001, dtype=torch.float64)
    for m in (1.5, 1.7, 2, 3, 4):
        psi = sphereface_psi(cos, m)
        assert (psi[1:] - psi[:-1] >= -1e-9).all(), m  # non-increasing in θ = non-decreasing in cos
    assert sphereface_psi(t64([1.0, -1.0]), 4).tolist() == pytest.approx([1.0, -7.0])


def test_lambda_schedule():  # §3.2
    lam = [sphereface_lambda(t, 1000, 0.12, 1, 5) for t in (1, 10, 100, 1000, 1658, 1659, 5000)]
    assert lam == pytest.approx([892.857143, 454.545455, 76.923077, 8.264463, 5.001000, 5.0, 5.0], abs=1e-5)


def test_sphereface_lambda_mixed_target():  # §3.6: ‖x‖ = 10, cos 0.5
    margin = SphereFaceMargin(m=4)
    assert float(10 * margin.target(t64([0.5]), step=1)) == pytest.approx(4.977625, abs=1e-6)
    assert float(10 * margin.target(t64([0.5]), step=1659)) == pytest.approx(1.666667, abs=1e-6)


def test_sphereface_r_v1_v2():  # §4.5
    close(SphereFaceRMargin("v1", m=1.5).target(t64([0.9, 0.5, 0.0, -0.8])), [0.779744, 0.0, -0.707107, -1.0])
    v2 = SphereFaceRMargin("v2", m=1.4)
    assert v2.target(t64([0.5])) is None
    close(v2.nontarget(t64(COS)), [0.948553, 0.733052, 0.433884, 0.074730, -0.211935])
    close(60 * v2.nontarget(t64(COS)), [56.913186, 43.983112, 26.033024, 4.483806, -12.716115], 1e-5)


def test_sphereface_r_margin_schedule():
    margin = SphereFaceRMargin("v1", m=1.4, dm=0.5, margin_steps=(10, 20))
    assert [margin.m_at(t) for t in (1, 10, 11, 20, 21)] == pytest.approx([1.0, 1.0, 1.5, 1.5, 2.0])
    assert SphereFaceRMargin("v1", m=1.4).m_at(1000) == 1.4


def test_cosface():  # §5
    close(64 * CosFaceMargin(0.35).target(t64([0.9, 0.5, 0.0])), [35.2, 9.6, -22.4], 1e-9)
    close(64 * CosFaceMargin(0.4).target(t64([0.9, 0.5, 0.0])), [32.0, 6.4, -25.6], 1e-9)


ARC_COS = [0.9, 0.5, 0.0, -0.5, -0.8, -0.9, -0.99]


@pytest.mark.parametrize(
    "variant,expected",
    [
        ("plain", [0.580848, 0.023597, -0.479426, -0.853986, -0.989721, -0.998801, -0.936438]),
        ("fallback", [0.580848, 0.023597, -0.479426, -0.853986, -0.989721, -1.139713, -1.229713]),
        ("easy", [0.580848, 0.023597, 0.0, -0.5, -0.8, -0.9, -0.99]),
        ("clamped", [0.580848, 0.023597, -0.479426, -0.853986, -0.989721, -1.0, -1.0]),
    ],
)
def test_arcface_variants(variant, expected):  # §6.2 table
    close(ArcFaceMargin(0.5, variant).target(t64(ARC_COS)), expected, 2e-6)


def test_arcface_fallback_scaled():
    expected = [37.1742, 1.5102, -30.6832, -54.6551, -63.3422, -72.9416, -78.7016]
    close(64 * ArcFaceMargin(0.5, "fallback").target(t64(ARC_COS)), expected, 1e-4)


@pytest.mark.parametrize(
    "ms,expected",
    [
        ((1, 0.3, 0.2), [0.530989, 0.021740, -0.495520]),
        ((0.9, 0.4, 0.15), [0.542445, 0.076340, -0.390538]),
        ((1.35, 0, 0), [0.820286, 0.156434, -0.522499]),
        ((1, 0, 0.35), [0.55, 0.15, -0.35]),
    ],
)
def test_combined(ms, expected):  # §6.3
    close(CombinedMargin(*ms).target(t64([0.9, 0.5, 0.0])), expected)


def test_subcenter_target_vector():  # §6.5: pooled 0.7 -> 0.271929 (×64 = 17.403486)
    assert float(64 * ArcFaceMargin(0.5).target(t64([0.7]))) == pytest.approx(17.403486, abs=1e-6)


def test_sphereface2_similarity_and_bias():  # §4.6
    margin = SphereFace2Margin("C", m=0.4, t=3)
    assert float(margin.g(t64([0.5]))) == pytest.approx(-0.15625, abs=1e-12)
    assert float(margin.target(t64([0.5]))) == pytest.approx(-0.55625, abs=1e-12)
    assert float(margin.nontarget(t64([0.5]))) == pytest.approx(0.24375, abs=1e-12)
    assert margin.initial_bias(8631, 40, 0.7) == pytest.approx(5.784568, abs=1e-6)
    assert SphereFace2Margin("C", m=0.5, t=3).initial_bias(93431, 64, 0.8) == pytest.approx(5.941369, abs=1e-6)


def test_sface_weights():  # §7.4
    w = SFaceLoss(k=80, a=0.8, b=1.23)
    close(w.intra(t64([0.9, 0.7, 0.697, 0.5])), [7.506e-13, 0.409002, 0.491822, 1.0])
    close(w.inter(t64([0.5, 0.334, 0.3, 0.1, 0.0])), [1.0, 0.494956, 0.052735, 4.36e-9, 1.44e-12])


def test_margin_to_angle_mapping():  # §2.2 test vectors, through the margin functions
    theta = math.radians(60)
    # SphereFace: tie angle θ_j* = arccos(ψ(θ_y)) (η = cos) -> Δθ = (m−1)θ_y
    psi = float(sphereface_psi(t64([math.cos(theta)]), 1.5))
    assert math.degrees(math.acos(psi) - theta) == pytest.approx(30.0, abs=1e-6)
    phi = float(CosFaceMargin(0.35).target(t64([math.cos(math.radians(90))])))
    assert math.degrees(math.acos(phi)) - 90 == pytest.approx(20.487, abs=1e-3)


@pytest.mark.parametrize(
    "margin",
    [CosFaceMargin(), ArcFaceMargin(), CombinedMargin(), SphereFaceMargin(lambda_base=0, lambda_min=0),
     SphereFaceRMargin("v0", 1.5), SphereFaceRMargin("v1", 1.5)],
    ids=repr,
)
def test_target_monotone(margin):  # §10 test 4
    cos = torch.linspace(-1, 1, 5001, dtype=torch.float64)
    phi = margin.target(cos)
    assert (phi[1:] - phi[:-1] >= -1e-9).all()
