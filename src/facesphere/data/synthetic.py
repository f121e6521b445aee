"""Procedural face-like identities: the built-in training and evaluation data (no download needed).

Every *identity* is a fixed random parameter vector drawn from ``np.random.default_rng`` keyed by
``(seed, identity)``: face shape (ellipse axes, jaw taper, chin), ears, skin tone and a low-frequency skin texture with
freckles and moles, eye / iris / brow / nose / mouth geometry and colours, hair colour, style and hairline, and an
optional beard.  Every *image* of an identity adds nuisances drawn from a generator keyed by
``(seed, identity, image_index)``: pose (in-plane rotation, shift, scale and a yaw-like horizontal remap), expression
(smile, open mouth, brow raise, gaze, blinks), illumination (direction, strength, exposure, colour cast), background,
occluders (glasses, sunglasses, face masks, hats), blur, low resolution, sensor noise and optionally JPEG artefacts.
All nuisance magnitudes are multiplied by one knob, :attr:`SyntheticConfig.difficulty` (see ``docs/synthetic.md``).

Images are ``image_size x image_size`` RGB ``uint8`` arrays laid out like ArcFace crops: before nuisances the eyes,
nose tip and mouth corners sit near the ArcFace 112x112 five-point template (METHODS §9) scaled by
``image_size / 112``.

How it is fast (~1,000 images/s a core): each identity's canonical layers (skin, texture, ears, nose, hair, beard) are
drawn once on a 2x super-sampled RGBA canvas and cached together with its pre-computed feature geometry; per image
only the expression-dependent parts (eyes, brows, mouth) and the occluders are drawn on a copy with Pillow (C), the
canvas is sampled through the inverse pose map with two ``np.take`` gathers (2-tap super-sampling), and shading,
background, blur and noise are a handful of planar numpy operations on the output grid.

Training identities are ``0 .. num_identities - 1``; held-out evaluation identities are
``EVAL_IDENTITY_OFFSET + k`` -- other generator keys, so evaluation people never appear in training.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import InvalidOptionError

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "EVAL_IDENTITY_OFFSET",
    "IDENTIFICATION_OFFSET",
    "NUISANCE_MAGNITUDES",
    "SyntheticConfig",
    "SyntheticFaces",
    "SyntheticFaceDataset",
    "synthetic_pairs",
    "synthetic_identification",
    "write_synthetic_folder",
    "contact_sheet",
    "pixel_baseline_accuracy",
    "noisy_labels",
    "identity_name",
]

#: ArcFace 112x112 five-point template (METHODS §9): left eye, right eye, nose tip, left / right mouth corner (x, y).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: Evaluation identity ``k`` is generator identity ``EVAL_IDENTITY_OFFSET + k``; training identities stay below it.
EVAL_IDENTITY_OFFSET = 1_000_000_000
#: :func:`synthetic_identification` uses evaluation identities from here on, so it never shares people with the pairs.
IDENTIFICATION_OFFSET = 500_000_000

# Leading words of the generator keys: distinct tags keep the identity, image, label-noise and pair streams apart
# (a fixed-length key with the tag first, so no two streams can produce the same seed material).
_TAG_IDENTITY, _TAG_IMAGE, _TAG_NOISE, _TAG_PAIRS = 0x1D, 0x1A, 0x0E, 0x9A

_SS = 2  # super-sampling factor of the canonical canvas
_MARGIN = 16.0  # canonical units of canvas beyond each side of the 112 x 112 frame
_CANVAS = int(round((112 + 2 * _MARGIN) * _SS))  # 288 pixels
_POSE_CENTRE = (56.0, 60.0)  # rotation / scaling centre of the pose (canonical units)
_MAX_SEED = 2**32
_MAX_IDENTITY = 2**31


# ----------------------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class SyntheticConfig:
    """What the synthetic data looks like (frozen; validated on construction).

    * ``seed``: selects the whole population (identities and images); ``0 <= seed < 2**32``.
    * ``num_identities`` / ``images_per_identity``: size of the training split (the ``"eval"`` split of
      :class:`SyntheticFaceDataset` has the same sizes over held-out identities).
    * ``difficulty``: one knob in ``[0, 4]`` multiplying every per-image nuisance magnitude and probability -- pose,
      expression, lighting, background, occluders, blur, low resolution, noise (exact table in
      ``docs/synthetic.md``).  ``0`` renders each identity's canonical, frontal, neutral, evenly lit face on grey.
    * ``identity_spread``: in ``[0, 4]``, multiplies the spread of every continuous identity parameter around the
      average face (geometry, colours, texture); smaller makes people look more alike (harder), larger more distinct.
      Categorical traits (hair colour family, hair style, beard type, freckles) do not depend on it.
    * ``label_noise``: fraction of *training* images whose label is replaced by another, different, random identity;
      the true labels stay available (:attr:`SyntheticFaceDataset.true_labels`).
    * ``image_size``: output side in pixels; the five-point template scales by ``image_size / 112``.
    * ``jpeg_prob``: probability that an image is re-encoded as JPEG at a random quality in [30, 90] (~0.3 ms each).
    * ``cache_size``: identities whose canonical canvas (~0.35 MB each) each process keeps (LRU).
    """

    seed: int = 0
    num_identities: int = 256
    images_per_identity: int = 32
    difficulty: float = 1.0
    label_noise: float = 0.0
    image_size: int = 112
    identity_spread: float = 1.0
    jpeg_prob: float = 0.0
    cache_size: int = 512

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> InvalidOptionError:
            return InvalidOptionError(f"SyntheticConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("seed", "num_identities", "images_per_identity", "image_size", "cache_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise bad(name, "must be an integer")
        if not 0 <= self.seed < _MAX_SEED:
            raise bad("seed", "must be in [0, 2**32)")
        if not 1 <= self.num_identities <= IDENTIFICATION_OFFSET:
            raise bad("num_identities", f"must be in [1, {IDENTIFICATION_OFFSET}]")
        if self.images_per_identity < 1:
            raise bad("images_per_identity", "must be >= 1")
        if not 16 <= self.image_size <= 1024:
            raise bad("image_size", "must be in [16, 1024] (112 is the ArcFace crop)")
        if self.cache_size < 0:
            raise bad("cache_size", "must be >= 0")
        for name, hi in (("difficulty", 4.0), ("identity_spread", 4.0), ("label_noise", 1.0), ("jpeg_prob", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise bad(name, "must be a number")
            if not 0.0 <= float(value) <= hi:
                raise bad(name, f"must be in [0, {hi:g}]")
        if self.label_noise > 0 and self.num_identities < 2:
            raise bad("label_noise", "needs num_identities >= 2 (a wrong label must exist)")


def identity_name(index: int, num_identities: int) -> str:
    """Folder name of training identity ``index``: ``id_00000`` (zero-padded wider past 100,000 identities)."""
    width = max(5, len(str(max(num_identities - 1, 0))))
    return f"id_{index:0{width}d}"


def _check_nonneg_int(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidOptionError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------------------------------
# shared per-process tables (deterministic, built lazily, identical in every worker)

_POOLS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _pools(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(sensor noise (3, P, P) ~ N(0, 1), smooth background texture (3, P, P) ~ unit std) for outputs of ``size``."""
    side = max(256, 2 * size)
    if side not in _POOLS:
        rng = np.random.default_rng([0x5EED, side])
        sensor = rng.standard_normal((3, side, side), dtype=np.float32)
        coarse = rng.standard_normal((3, 12, 12)).astype(np.float32)
        smooth = np.stack(
            [np.asarray(Image.fromarray(c, mode="F").resize((side, side), Image.BICUBIC)) for c in coarse]
        ).astype(np.float32)
        smooth /= max(float(smooth.std()), 1e-6)
        _POOLS[side] = (sensor, smooth)
    return _POOLS[side]


def _grids(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Output pixel centres in canonical units relative to the pose centre: (X, Y), each flat (size*size,) float32."""
    if size not in _GRIDS:
        c = (np.arange(size, dtype=np.float64) + 0.5) * (112.0 / size)
        yy, xx = np.meshgrid(c - _POSE_CENTRE[1], c - _POSE_CENTRE[0], indexing="ij")
        _GRIDS[size] = (xx.ravel().astype(np.float32), yy.ravel().astype(np.float32))
    return _GRIDS[size]


# ----------------------------------------------------------------------------------------------------------------------
# identity parameters

_SKIN_T = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_SKIN_RGB = np.array([[78, 50, 36], [138, 94, 68], [190, 140, 110], [224, 178, 148], [246, 212, 192]], np.float64)
_HAIR = [  # (cumulative probability, rgb): black, dark brown, brown, blonde, red, grey, white
    (0.33, (24, 21, 20)),
    (0.58, (58, 40, 30)),
    (0.73, (104, 72, 48)),
    (0.83, (192, 156, 102)),
    (0.88, (142, 64, 34)),
    (0.96, (138, 136, 133)),
    (1.00, (206, 204, 199)),
]
_IRIS = [  # brown, dark brown, blue, green, hazel
    (0.45, (72, 46, 30)), (0.65, (40, 28, 22)), (0.80, (78, 110, 150)), (0.90, (86, 112, 70)), (1.0, (120, 96, 58)),
]
_N_FRECKLES = 40
_N_MOLES = 3
_TEX = 6  # side of the identity's low-frequency skin-texture grid


def _pick(table: list[tuple[float, tuple[int, int, int]]], u: float) -> np.ndarray:
    for cum, rgb in table:
        if u <= cum:
            return np.array(rgb, dtype=np.float64)
    return np.array(table[-1][1], dtype=np.float64)


def _identity_params(seed: int, identity: int, spread: float) -> dict[str, Any]:
    """The parameters of one identity: floats (canonical 112-frame pixels, RGB 0..255) and a few arrays."""
    rng = np.random.default_rng([_TAG_IDENTITY, seed, identity])
    z = np.clip(rng.standard_normal(48), -2.5, 2.5) * spread
    u = rng.random(16)
    tex = np.clip(rng.standard_normal((_TEX, _TEX)), -2.5, 2.5) * spread
    freckles = rng.random((_N_FRECKLES, 3))
    moles = rng.random((_N_MOLES, 4))
    grain = rng.random(4)

    tone = float(np.clip(0.5 + (u[0] - 0.5) * spread, 0.0, 1.0))
    skin = np.array([np.interp(tone, _SKIN_T, _SKIN_RGB[:, c]) for c in range(3)])
    skin = np.clip(skin + np.array([7.0, 1.0, -6.0]) * z[0], 20, 250)  # warmth
    hair = np.clip(_pick(_HAIR, u[1]) * (1.0 + 0.12 * z[1]), 5, 245)
    iris = np.clip(_pick(_IRIS, u[2]) * (1.0 + 0.15 * z[2]), 5, 245)
    lip = np.clip(skin * 0.62 + np.array([150.0, 55.0, 60.0]) * 0.38 + np.array([10.0, -4.0, -2.0]) * z[3], 10, 245)
    style = 0 if u[3] < 0.07 else 1 if u[3] < 0.40 else 2 if u[3] < 0.75 else 3  # bald / short / medium / long
    beard = 0 if u[4] < 0.74 else 1 if u[4] < 0.83 else 2 if u[4] < 0.91 else 3 if u[4] < 0.96 else 4

    tmpl = ARCFACE_TEMPLATE_112
    eye_sep, mouth_w = 2.0 * z[4], 2.4 * z[6]
    p: dict[str, Any] = {
        # face outline, ears, neck
        "face_cx": 56.0 + 1.0 * z[7],
        "face_cy": 57.0 + 2.5 * z[8],
        "face_ax": 41.0 + 3.0 * z[9],
        "face_top": 56.0 + 3.0 * z[10],
        "face_low": 51.0 + 3.0 * z[11],
        "jaw": float(np.clip(0.30 + 0.10 * z[12], 0.05, 0.6)),
        "chin": float(np.clip(1.0 + 0.25 * z[13], 0.5, 1.6)),
        "neck_w": 0.60 + 0.06 * z[14],
        "ear_y": 64.0 + 2.0 * z[15],
        "ear_h": 11.5 + 1.5 * z[16],
        "ear_w": 4.8 + 1.0 * z[17],
        # eyes
        "le_x": tmpl[0, 0] - eye_sep / 2,
        "re_x": tmpl[1, 0] + eye_sep / 2,
        "eye_y": 0.5 * (tmpl[0, 1] + tmpl[1, 1]) + 1.5 * z[5],
        "eye_w": 7.2 + 0.9 * z[18],
        "eye_h": float(np.clip(3.3 + 0.55 * z[19], 1.8, 5.0)),
        "eye_tilt": 0.07 * z[20],
        "iris_radius": 3.0 + 0.3 * z[21],
        # brows
        "brow_gap": 8.5 + 1.6 * z[22],
        "brow_len": 9.8 + 1.4 * z[23],
        "brow_th": float(np.clip(2.5 + 0.7 * z[24], 0.8, 5.0)),
        "brow_arch": 1.8 + 1.1 * z[25],
        "brow_slant": 1.3 * z[26],
        # nose
        "nose_x": tmpl[2, 0] + 1.0 * z[27],
        "nose_y": tmpl[2, 1] + 2.0 * z[28],
        "nose_w": float(np.clip(7.2 + 1.4 * z[29], 4.0, 11.0)),
        "nostril": float(np.clip(1.8 + 0.45 * z[30], 0.8, 3.0)),
        "bridge": 0.5 + 0.3 * z[31],
        # mouth
        "mouth_x": 0.5 * (tmpl[3, 0] + tmpl[4, 0]) + 0.8 * z[32],
        "mouth_y": 0.5 * (tmpl[3, 1] + tmpl[4, 1]) + 2.0 * z[33],
        "mouth_hw": 0.5 * (tmpl[4, 0] - tmpl[3, 0]) + mouth_w / 2,
        "lip_up": float(np.clip(2.5 + 0.7 * z[34], 0.9, 4.5)),
        "lip_low": float(np.clip(3.5 + 0.9 * z[35], 1.2, 6.0)),
        # hair
        "hair_style": float(style),
        "hairline": 23.0 + 4.0 * z[36],
        "recess": max(0.0, 3.0 + 3.0 * z[37]),
        "peak": 2.0 * z[38],
        "part": 10.0 * z[39],
        "volume": max(0.5, 3.5 + 1.5 * z[40]),
        "side_len": 60.0 + 6.0 * z[41],
        "hair_long": 128.0 + 10.0 * z[42],
        # beard, skin marks, texture amplitudes
        "beard": float(beard),
        "beard_density": float(np.clip(0.7 + 0.2 * z[43], 0.3, 1.0)),
        "freckle_amount": float(max(0.0, (u[5] - 0.72) / 0.28)),
        "mole_prob": float(u[6]),
        "blush": 0.5 + 0.4 * z[44],
        "tex_amp": float(np.clip(0.07 + 0.03 * z[45], 0.0, 0.2)),
        "socket": float(np.clip(0.10 + 0.04 * z[46], 0.0, 0.25)),
        "skin_tone": tone,
        "skin_red": skin[0], "skin_green": skin[1], "skin_blue": skin[2],
        "hair_red": hair[0], "hair_green": hair[1], "hair_blue": hair[2],
        "iris_red": iris[0], "iris_green": iris[1], "iris_blue": iris[2],
        "lip_red": lip[0], "lip_green": lip[1], "lip_blue": lip[2],
    }
    p = {k: float(v) for k, v in p.items()}
    p["texture"] = tex
    p["freckles"] = freckles
    p["moles"] = moles
    p["grain"] = grain
    return p


def _params_vector(p: dict[str, Any]) -> np.ndarray:
    scalars = np.asarray([v for v in p.values() if isinstance(v, float)], dtype=np.float64)
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in p.values() if isinstance(v, np.ndarray)]
    return np.concatenate([scalars, *arrays])


# ----------------------------------------------------------------------------------------------------------------------
# drawing helpers: canonical 112-frame coordinates -> canvas pixels


def _cv(x: Any) -> Any:
    return (x + _MARGIN) * _SS


def _poly(xs: Any, ys: Any) -> list[float]:
    xs = np.asarray(xs, dtype=np.float64)
    out = np.empty((xs.shape[0], 2))
    out[:, 0] = xs
    out[:, 1] = ys
    out += _MARGIN
    out *= _SS
    return out.ravel().tolist()


def _rgb(c: Sequence[float], alpha: int = 255) -> tuple[int, int, int, int]:
    return (min(255, max(0, int(c[0]))), min(255, max(0, int(c[1]))), min(255, max(0, int(c[2]))), alpha)


def _box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [_cv(cx - rx), _cv(cy - ry), _cv(cx + rx), _cv(cy + ry)]


def _colour(p: dict[str, Any], name: str) -> np.ndarray:
    return np.array([p[name + "_red"], p[name + "_green"], p[name + "_blue"]])


def _face_half_width(p: dict[str, Any], y: np.ndarray) -> np.ndarray:
    """Half width of the face outline at canonical heights ``y`` (0 outside the face)."""
    up = (p["face_cy"] - y) / p["face_top"]
    lo = (y - p["face_cy"]) / p["face_low"]
    s = np.clip(np.where(y <= p["face_cy"], up, lo), 0.0, 1.0)
    w = p["face_ax"] * np.sqrt(1.0 - s * s)
    return np.where(y <= p["face_cy"], w, w * (1.0 - p["jaw"] * s ** (1.5 * p["chin"])))


def _face_outline(p: dict[str, Any], n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    sl = np.where(s > 0, s, 0.0)
    x = p["face_cx"] + p["face_ax"] * c * (1.0 - p["jaw"] * sl ** (1.5 * p["chin"]))
    y = p["face_cy"] + np.where(s > 0, p["face_low"], p["face_top"]) * s
    return x, y


def _lower_outline(p: dict[str, Any], y_top: float, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Face outline points below ``y_top``, ordered from the right side round the chin to the left side."""
    fx, fy = _face_outline(p, n)
    sel = fy > y_top
    x, y = fx[sel], fy[sel]
    order = np.argsort(np.arctan2(y - y_top, x - p["face_cx"]))
    return x[order], y[order]


def _gauss1d(n: int, centre: float, sigma: float) -> np.ndarray:
    g = (np.arange(n, dtype=np.float32) + np.float32(0.5 - centre)) / np.float32(sigma)
    out = np.exp(np.float32(-0.5) * g * g)
    out[out < 1e-12] = 0.0  # no denormals: products of tiny tails would make every later operation crawl
    return out


class _LowRank:
    """Accumulates a smooth canvas map as a sum of separable terms and evaluates it with one matrix product."""

    def __init__(self) -> None:
        self.cols: list[np.ndarray] = []  # (C, k) factors along y
        self.rows: list[np.ndarray] = []  # (k, C) factors along x

    def bump(self, w: float, cx: float, cy: float, sx: float, sy: float) -> None:
        """Add ``w`` times a Gaussian bump (centre and sigmas in canonical units)."""
        self.cols.append(_gauss1d(_CANVAS, _cv(cy), sy * _SS)[:, None] * np.float32(w))
        self.rows.append(_gauss1d(_CANVAS, _cv(cx), sx * _SS)[None, :])

    def grid(self, values: np.ndarray, sigma_y: float, sigma_x: float) -> None:
        """Add a smooth interpolation of a (gy, gx) grid of values spread evenly over the canvas."""
        gy, gx = values.shape
        by = np.stack([_gauss1d(_CANVAS, (i + 0.5) * _CANVAS / gy, sigma_y) for i in range(gy)], axis=1)
        bx = np.stack([_gauss1d(_CANVAS, (j + 0.5) * _CANVAS / gx, sigma_x) for j in range(gx)], axis=0)
        by /= by.sum(axis=1, keepdims=True)
        bx /= bx.sum(axis=0, keepdims=True)
        self.cols.append(by)
        self.rows.append(values.astype(np.float32) @ bx)

    def evaluate(self) -> np.ndarray:
        # einsum, not BLAS: a k <= 10 inner dimension gains nothing from threads, and BLAS threads spin badly when
        # DataLoader workers already occupy every core
        return np.einsum("ik,kj->ij", np.concatenate(self.cols, axis=1), np.concatenate(self.rows, axis=0))


_GRAIN: list[np.ndarray] = []


def _grain(u: float) -> np.ndarray:
    """A (C, C) uniform [0, 1) grain pattern: a window of a fixed per-process pool chosen by ``u`` in [0, 1)."""
    if not _GRAIN:
        _GRAIN.append(np.random.default_rng(0x6A1A).random((2 * _CANVAS, 2 * _CANVAS), dtype=np.float32))
    o = int(u * _CANVAS)
    return _GRAIN[0][o:o + _CANVAS, _CANVAS - o:2 * _CANVAS - o]


# ----------------------------------------------------------------------------------------------------------------------
# an identity's canonical canvas and pre-computed per-image geometry


def _render_base(p: dict[str, Any]) -> np.ndarray:
    """The identity's canvas without its expression-dependent parts: (C, C, 4) uint8, C = 288 (2x super-sampled).

    Flat-coloured shapes are drawn with Pillow in painter's order together with two masks (skin, hair); one numpy
    pass then multiplies smooth identity texture and shading into the skin, strands into the hair and blends a beard.
    """
    skin, hair = _colour(p, "skin"), _colour(p, "hair")
    cx, cy, ax = p["face_cx"], p["face_cy"], p["face_ax"]
    style, vol, beard = int(p["hair_style"]), p["volume"], int(p["beard"])
    nx, ny, nwid = p["nose_x"], p["nose_y"], p["nose_w"]
    im = Image.new("RGBA", (_CANVAS, _CANVAS), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    skin_m = Image.new("L", (_CANVAS, _CANVAS), 0)
    dsk = ImageDraw.Draw(skin_m)
    hair_m = Image.new("L", (_CANVAS, _CANVAS), 0)
    dh = ImageDraw.Draw(hair_m)

    if style == 3:  # long hair behind the head
        t = np.linspace(np.pi, 2 * np.pi, 24)
        hx = np.concatenate([[cx - ax - vol - 5], cx + (ax + vol + 3) * np.cos(t), [cx + ax + vol + 5]])
        hy = np.concatenate([[p["hair_long"]], cy + (p["face_top"] + vol) * np.sin(t), [p["hair_long"]]])
        pts = _poly(hx, hy)
        d.polygon(pts, fill=_rgb(hair * 0.85))
        dh.polygon(pts, fill=255)

    # skin: neck, ears, face (the skin mask follows), then nose wings, nostrils, freckles and moles
    nw = ax * p["neck_w"]
    neck_top = cy + 0.2 * p["face_low"]
    shapes: list[tuple[str, Any, tuple[int, int, int, int]]] = [
        ("poly", _poly([cx - nw, cx + nw, cx + nw * 1.15, cx - nw * 1.15], [neck_top, neck_top, 140.0, 140.0]),
         _rgb(skin * 0.80)),
    ]
    for side in (-1, 1):
        ex = cx + side * ax * 0.97
        shapes.append(("ellipse", _box(ex + side * p["ear_w"] * 0.45, p["ear_y"], p["ear_w"], p["ear_h"]),
                       _rgb(skin * 0.93)))
        shapes.append(("ellipse", _box(ex + side * p["ear_w"] * 0.55, p["ear_y"], p["ear_w"] * 0.45, p["ear_h"] * 0.6),
                       _rgb(skin * 0.76)))
    fx, fy = _face_outline(p)
    shapes.append(("poly", _poly(fx, fy), _rgb(skin)))
    for kind, geom, col in shapes:
        if kind == "poly":
            d.polygon(geom, fill=col)
            dsk.polygon(geom, fill=255)
            dh.polygon(geom, fill=0)
        else:
            d.ellipse(geom, fill=col)
            dsk.ellipse(geom, fill=255)
            dh.ellipse(geom, fill=0)
    for side in (-1, 1):
        d.arc(_box(nx + side * nwid * 0.5, ny - 0.6, nwid * 0.45, 3.4),
              start=110 if side < 0 else -20, end=200 if side < 0 else 70, fill=_rgb(skin * 0.74), width=2)
        d.ellipse(_box(nx + side * nwid * 0.36, ny + 1.3, p["nostril"], p["nostril"] * 0.6), fill=_rgb(skin * 0.40))
    for i in range(int(round(p["freckle_amount"] * _N_FRECKLES))):
        a, r, s = p["freckles"][i]
        rr = 0.75 + 0.5 * s
        d.ellipse(_box(cx + (a - 0.5) * ax * 1.3, p["eye_y"] + 6 + r * 18, rr, rr), fill=_rgb(skin * (0.80 - 0.08 * s)))
    for i in range(_N_MOLES):
        pr, a, r, s = p["moles"][i]
        if pr < p["mole_prob"] * 0.5:
            rr = 0.6 + 0.8 * s
            d.ellipse(_box(cx + (a - 0.5) * ax * 1.5, 40 + r * 60, rr, rr), fill=_rgb(skin * 0.45))

    # beard region (1 stubble, 2 full beard, 3 moustache + goatee, 4 moustache)
    beard_m = None
    if beard:
        beard_m = Image.new("L", (_CANVAS, _CANVAS), 0)
        db = ImageDraw.Draw(beard_m)
        mx, my, mhw = p["mouth_x"], p["mouth_y"], p["mouth_hw"]
        if beard in (1, 2):
            xr = np.array([-1.1, -0.62, -0.25, 0.0, 0.25, 0.62, 1.1])
            top = np.array([p["ear_y"] - 6, ny + 11, ny + 3.5, ny + 3.0, ny + 3.5, ny + 11, p["ear_y"] - 6])
            lx, ly = _lower_outline(p, ny - 30.0)
            db.polygon(_poly(np.concatenate([cx + xr * ax, lx]), np.concatenate([top, ly + 1.0])), fill=255)
            chin_y = cy + 0.85 * p["face_low"]
            db.polygon(_poly([cx - nw * 0.9, cx + nw * 0.9, cx + nw * 0.8, cx - nw * 0.8], [chin_y, chin_y, 124, 124]),
                       fill=255)
        if beard in (3, 4):
            t = np.linspace(-1.0, 1.0, 11)
            bot = my - p["lip_up"] * (1.0 - t * t) ** 0.6 - 0.3
            topm = bot - (2.6 + 1.6 * (1.0 - t * t))
            xs = mx + (mhw + 2.0) * t
            db.polygon(_poly(np.concatenate([xs, xs[::-1]]), np.concatenate([topm, bot[::-1]])), fill=255)
        if beard == 3:
            chin_y = cy + p["face_low"] - 1.0
            gy0 = my + p["lip_low"] + 1.5
            db.polygon(_poly([mx - 5.5, mx + 5.5, mx + 4.0, mx, mx - 4.0],
                             [gy0, gy0, chin_y - 2, chin_y + 1, chin_y - 2]), fill=255)

    # hair on the top and at the sides, hugging the face outline
    if style > 0:
        hl = p["hairline"]
        y_t = hl + p["recess"] + 1.0
        side_len = max(y_t + 4.0, min(p["side_len"] if style == 1 else p["ear_y"] + 6.0, p["ear_y"] + 10.0))
        ys = np.linspace(side_len, y_t, 8)
        inner = _face_half_width(p, ys) - 0.8
        xr = np.linspace(-1.0, 1.0, 21)
        w_t = float(_face_half_width(p, np.array([y_t]))[0]) - 0.8
        line_x = cx + xr * w_t
        line_y = hl + p["recess"] * xr**2 - p["peak"] * np.exp(-(((xr - p["part"] / ax) / 0.18) ** 2))
        a0 = math.asin(float(np.clip((side_len - cy) / (p["face_top"] + vol), -1.0, 1.0)))
        t = np.linspace(a0, -np.pi - a0, 32)
        ox, oy = cx + (ax + vol) * np.cos(t), cy + (p["face_top"] + vol) * np.sin(t)
        pts = _poly(np.concatenate([ox, cx - inner, line_x, (cx + inner)[::-1]]),
                    np.concatenate([oy, ys, line_y, ys[::-1]]))
        d.polygon(pts, fill=_rgb(hair))
        dh.polygon(pts, fill=255)
        dsk.polygon(pts, fill=0)
        if beard_m is not None:
            ImageDraw.Draw(beard_m).polygon(pts, fill=0)

    # one numpy pass: multiplicative texture / shading on skin and hair, blush, beard
    base = np.asarray(im)
    rgb = base[..., :3].transpose(2, 0, 1).astype(np.float32, order="C")
    sm = np.asarray(skin_m, dtype=np.float32) * np.float32(1.0 / 255.0)
    hm = np.asarray(hair_m, dtype=np.float32) * np.float32(1.0 / 255.0)
    skin_mult = _LowRank()
    skin_mult.grid(p["texture"] * (p["tex_amp"] / 1.5), _CANVAS / _TEX * 0.6, _CANVAS / _TEX * 0.6)
    for ex in (p["le_x"], p["re_x"]):
        skin_mult.bump(-p["socket"], ex, p["eye_y"] - 1.5, 9.0, 5.5)
    skin_mult.bump(-0.10, nx, ny + 4.0, 6.0, 1.6)
    skin_mult.bump(-0.08, p["mouth_x"], p["mouth_y"] + p["lip_low"] + 4.0, 7.0, 2.0)
    skin_mult.bump(-0.07 * p["bridge"], nx - 3.4, ny - 9.0, 1.3, 7.0)
    skin_mult.bump(-0.07 * p["bridge"], nx + 3.4, ny - 9.0, 1.3, 7.0)
    skin_mult.bump(0.05, nx, ny - 2.0, 2.0, 3.0)
    mult = skin_mult.evaluate()
    mult *= sm
    if style > 0:
        g = p["grain"]
        hair_mult = _LowRank()
        streaks = np.random.default_rng([int(g[1] * 1e9)]).standard_normal((3, 80)).astype(np.float32)
        hair_mult.grid(streaks * np.float32(0.16 * math.sqrt(3.0)), _CANVAS / 3 * 0.6, _CANVAS / 80 * 0.5)
        hair_mult.bump(0.35, cx + (g[2] - 0.5) * 20, cy - p["face_top"] + 10, 18, 8)
        hmv = hair_mult.evaluate()
        hmv *= hm
        mult += hmv
    mult += np.float32(1.0)
    rgb *= mult
    blush = _LowRank()
    blush.bump(p["blush"], cx - ax * 0.55, ny + 3, 7, 5)
    blush.bump(p["blush"], cx + ax * 0.55, ny + 3, 7, 5)
    bl = blush.evaluate()
    bl *= sm
    rgb[0] += np.float32(14.0) * bl
    rgb[1] -= np.float32(4.0) * bl
    if beard_m is not None:
        cover = np.asarray(beard_m, dtype=np.float32) * np.float32(1.0 / 255.0)
        if beard in (1, 2):
            cover *= sm
        dens = np.float32(p["beard_density"] * (0.42 if beard == 1 else 0.95))
        gr = _grain(p["grain"][0]) * np.float32(0.9)
        gr += np.float32(0.55)
        gr *= dens
        np.clip(gr, 0.0, 1.0, out=gr)
        cover *= gr
        beard_rgb = hair.astype(np.float32) * np.float32(0.9)
        for c in range(3):
            rgb[c] += (beard_rgb[c] - rgb[c]) * cover
    rgb += np.float32(0.5)
    np.clip(rgb, 0.0, 255.0, out=rgb)
    out = np.empty((_CANVAS, _CANVAS, 4), dtype=np.uint8)
    for c in range(3):
        out[..., c] = rgb[c]
    out[..., 3] = base[..., 3]
    return out


_T13 = np.linspace(-1.0, 1.0, 13)
_GAZE_X, _GAZE_Y = 0.45, 0.3  # the iris centre stays within these fractions of the eye's half width / height


class _Identity:
    """Cached per-identity data: parameters, the canonical canvas, colours and pre-computed draw geometry."""

    __slots__ = ("p", "base", "c", "g")

    def __init__(self, p: dict[str, Any]):
        self.p = p
        self.base = _render_base(p)
        skin, hair, lip = _colour(p, "skin"), _colour(p, "hair"), _colour(p, "lip")
        self.c = {
            "sclera": (236, 232, 226, 255),
            "skin": _rgb(skin * 0.97),
            "iris": _rgb(_colour(p, "iris")),
            "pupil": (12, 10, 10, 255),
            "lid": _rgb(skin * 0.22),
            "lower_lid": _rgb(skin * 0.62),
            "blink": _rgb(skin * 0.35),
            "brow": _rgb(hair * 0.8 + skin * 0.06),
            "lip_up": _rgb(lip * 0.88),
            "lip_low": _rgb(lip),
            "lip_line": _rgb(lip * 0.45),
        }
        g: dict[str, Any] = {}
        t = _T13
        ey, ew, eh, tilt = p["eye_y"], p["eye_w"], p["eye_h"], p["eye_tilt"]
        up_shape, lo_shape = (1.0 - t**2) ** 0.75, (1.0 - t**2) ** 1.1
        g["sclera"], g["lid"], g["lower_lid"], g["blink"] = [], [], [], []
        for side, ex in ((-1, p["le_x"]), (1, p["re_x"])):
            xs = ex + ew * t
            base_y = ey - tilt * ew * t * side  # positive tilt lifts the outer corners
            up, lo = base_y - eh * 1.05 * up_shape, base_y + eh * 0.8 * lo_shape
            g["sclera"].append(_poly(np.concatenate([xs, xs[::-1]]), np.concatenate([up, lo[::-1]])))
            g["lid"].append(_poly(xs, up))
            g["lower_lid"].append(_poly(xs[2:-2], lo[2:-2]))
            g["blink"].append(_poly(xs, base_y + 0.8 * lo_shape))
        # brows: polygon x fixed, y = y0 - raise * w (canvas units)
        bt = np.linspace(0.0, 1.0, 9)
        bxs, bys = [], []
        for side, ex in ((-1, p["le_x"]), (1, p["re_x"])):
            x_in, x_out = ex - side * p["brow_len"] * 0.75, ex + side * p["brow_len"] * 1.05
            bx = x_in + (x_out - x_in) * bt
            by = ey - p["brow_gap"] - p["brow_arch"] * np.sin(np.pi * bt * 0.85) + p["brow_slant"] * bt
            th = p["brow_th"] * (1.0 - 0.55 * bt**1.5)
            bxs.append(_cv(np.concatenate([bx, bx[::-1]])))
            bys.append(_cv(np.concatenate([by - th / 2, (by + th / 2)[::-1]])))
        g["brow_xy"] = np.stack([np.stack(bxs), np.stack(bys)], axis=-1)  # (brow, point, xy) canvas units
        w = 0.6 + 0.4 * bt
        g["brow_w"] = np.concatenate([w, w[::-1]]) * _SS
        # mouth shapes
        g["m_p06"] = (1.0 - t**2) ** 0.6
        g["m_p08"] = (1.0 - t**2) ** 0.8
        g["m_bow"] = 1.0 - 0.35 * np.exp(-((t / 0.18) ** 2))
        g["m_line"] = 1.0 - 3.0 * t**2
        self.g = g
        # the eye whites and lid lines do not change from image to image: bake them into the canvas
        im = _writable_view(self.base)
        d = ImageDraw.Draw(im)
        for e in range(2):
            d.polygon(g["sclera"][e], fill=self.c["sclera"])
            d.line(g["lid"][e], fill=self.c["lid"], width=3)
            d.line(g["lower_lid"][e], fill=self.c["lower_lid"], width=1)
        if not _SHARED_DRAW[0]:
            self.base = np.array(im)
        # per eye: a box around it and the pixels outside the eye opening (lid lines included), which are restored
        # from the canvas after the iris is drawn -- an exact clip of the iris to the opening
        opening = Image.new("L", (_CANVAS, _CANVAS), 0)
        do = ImageDraw.Draw(opening)
        for e in range(2):
            do.polygon(g["sclera"][e], fill=255)
            do.line(g["lid"][e], fill=0, width=3)
        opening_np = np.asarray(opening)
        g["eye_clip"] = []
        r = p["iris_radius"]
        hx = max(ew, _GAZE_X * ew + r) + 2.0  # the iris never leaves these boxes (gaze is clipped to the eye)
        hy = max(eh * 1.6, _GAZE_Y * eh + r) + 2.0
        for ex in (p["le_x"], p["re_x"]):
            x0, x1 = int(_cv(ex - hx)), int(_cv(ex + hx)) + 1
            y0, y1 = int(_cv(ey - hy)), int(_cv(ey + hy)) + 1
            outside = opening_np[y0:y1, x0:x1] == 0
            g["eye_clip"].append((slice(y0, y1), slice(x0, x1), np.ascontiguousarray(outside[..., None])))
        g["iris_r"] = p["iris_radius"] * _SS
        g["pupil_r"] = p["iris_radius"] * 0.45 * _SS
        g["glint_r"] = 0.55 * _SS

    def mask_geometry(self) -> dict[str, Any]:
        g = self.g
        if "mask_poly" not in g:
            p = self.p
            cx, ax = p["face_cx"], p["face_ax"]
            top = p["nose_y"] - 7.0
            lx, ly = _lower_outline(p, top)
            xs = np.concatenate([[cx + ax * 0.95, cx, cx - ax * 0.95], (cx + (lx - cx) * 1.02)[::-1]])
            ys = np.concatenate([[top + 2, top - 1.5, top + 2], (ly + 1.5)[::-1]])
            g["mask_poly"] = _poly(xs, ys)
            bottom = p["face_cy"] + p["face_low"]
            pleats = [top + k * (bottom - top) for k in (0.3, 0.55)]
            g["mask_lines"] = [_poly([cx - ax * 0.6, cx + ax * 0.6], [y, y + 0.5]) for y in pleats]
            g["mask_straps"] = [_poly([cx + s * ax * 0.93, cx + s * ax * 1.02], [top + 3, p["ear_y"] - 4])
                                for s in (-1, 1)]
        return g


# ----------------------------------------------------------------------------------------------------------------------
# per-image nuisances

_MASK_COLOURS = ((150, 192, 218), (236, 236, 236), (36, 36, 42), (120, 124, 130), (90, 130, 180))
_HAT_COLOURS = ((30, 34, 60), (150, 30, 30), (40, 40, 40), (200, 200, 190), (60, 100, 60), (190, 150, 90))
_FRAME_COLOURS = ((20, 20, 22), (90, 60, 40), (160, 160, 165), (40, 40, 90))


#: Per-image nuisance magnitudes at ``difficulty = 1``; every entry is multiplied by the difficulty (probabilities are
#: capped at 0.9, the background colour spread and the yaw at their listed limits).  Documented in docs/synthetic.md.
NUISANCE_MAGNITUDES: Mapping[str, float] = MappingProxyType({
    "roll_sd_deg": 4.5,          # in-plane rotation, normal sd (clipped at 2.5 sd, as every normal draw)
    "yaw_sd_deg": 10.0,          # out-of-plane turn (horizontal remap of a depth bump), normal sd; |yaw| <= 40 deg
    "scale_log_sd": 0.045,       # log scale, normal sd
    "shift_sd_px": 1.8,          # x and y shift in 112-frame pixels, normal sd each
    "smile_mean": 0.18,          # smile (mouth corners up, wider mouth); 1 = broad smile
    "smile_sd": 0.32,
    "mouth_open_sd": 0.30,       # open mouth = max(0, N(-0.25 sd, sd)); 1 = 7 px gap
    "brow_raise_sd_px": 1.0,
    "gaze_sd_px": 0.7,           # iris shift (x; half of it in y)
    "blink_p": 0.03,
    "light_elev_sd_deg": 24.0,   # light direction away from frontal (|normal|, capped at 75 deg), uniform azimuth
    "light_strength": 0.20,      # directional share of the shading: 0.30 + strength * U(0, 1)
    "exposure_log_sd": 0.13,
    "colour_cast_sd": 0.035,     # red and blue gains, normal sd
    "background_colour": 1.0,    # fraction of a random background colour mixed into grey (capped at 1)
    "background_gradient": 30.0,  # linear ramp amplitude (grey levels at the frame edge), times U(0, 1)
    "background_texture": 20.0,  # smooth-noise amplitude, times U(0, 1)
    "glasses_p": 0.12,           # of which 30% sunglasses
    "mask_p": 0.05,
    "hat_p": 0.05,
    "blur_p": 0.25,              # 1-3 passes of a [1 2 1] blur
    "lowres_p": 0.08,            # 2x (60%) or 4x (40%) block down-sampling
    "noise_max": 5.0,            # Gaussian sensor noise sd (grey levels), times U(0, 1)
})


def _image_nuisances(rng: np.random.Generator, d: float) -> dict[str, Any]:
    """Per-image nuisance draws; every magnitude and probability is proportional to the difficulty ``d``."""
    n = np.clip(rng.standard_normal(16), -2.5, 2.5).tolist()
    u = rng.random(32).tolist()
    m = NUISANCE_MAGNITUDES

    def prob(key: str) -> float:
        return min(0.9, m[key] * d)

    yaw_max = math.radians(40.0)
    return {
        "roll": math.radians(m["roll_sd_deg"]) * d * n[0],
        "yaw": max(-yaw_max, min(yaw_max, math.radians(m["yaw_sd_deg"]) * d * n[1])),
        "scale": math.exp(m["scale_log_sd"] * d * n[2]),
        "dx": m["shift_sd_px"] * d * n[3],
        "dy": m["shift_sd_px"] * d * n[4],
        "smile": d * (m["smile_mean"] + m["smile_sd"] * n[5]),
        "open": d * m["mouth_open_sd"] * max(0.0, n[6] - 0.25),
        "brow_raise": m["brow_raise_sd_px"] * d * n[7],
        "gaze_x": m["gaze_sd_px"] * d * n[8],
        "gaze_y": 0.5 * m["gaze_sd_px"] * d * n[9],  # both clipped to the eye (see _GAZE_X, _GAZE_Y)
        "blink": u[0] < prob("blink_p"),
        "light_az": 2.0 * math.pi * u[1],
        "light_el": min(math.radians(75.0), math.radians(m["light_elev_sd_deg"]) * d * abs(n[10])),
        "light_k": 0.30 + m["light_strength"] * d * u[2],
        "exposure": math.exp(m["exposure_log_sd"] * d * n[11]),
        "cast_r": m["colour_cast_sd"] * d * n[12],
        "cast_b": m["colour_cast_sd"] * d * n[13],
        "bg_mix": min(1.0, m["background_colour"] * d),
        "bg_grey": 30.0 + 195.0 * u[3],
        "bg_tint": (u[4] - 0.5, u[5] - 0.5, u[6] - 0.5),
        "bg_sat": 110.0 * u[7],
        "bg_grad": m["background_gradient"] * d * u[8],
        "bg_grad_dir": 2.0 * math.pi * u[9],
        "bg_tex": m["background_texture"] * d * u[10],
        "bg_off": (u[11], u[12]),
        "glasses": u[13] < prob("glasses_p"),
        "sunglasses": u[14] < 0.3,
        "mask": u[15] < prob("mask_p"),
        "hat": u[16] < prob("hat_p"),
        "blur": u[17] < prob("blur_p"),
        "blur_passes": 1 + int(3.0 * u[18]),
        "lowres": u[19] < prob("lowres_p"),
        "lowres_f": 2 if u[20] < 0.6 else 4,
        "noise": m["noise_max"] * d * u[21],
        "noise_off": (u[22], u[23]),
        "jpeg_u": u[24],
        "jpeg_q": 30.0 + 60.0 * u[25],
        "occ": u[26:32],
        "hat_n": n[14],
    }


def _draw_features(d: ImageDraw.ImageDraw, ident: _Identity, q: dict[str, Any]) -> None:
    """Eyes (gaze, blinks), brows (raise) and mouth (smile, opening) on the identity's canvas copy."""
    p, c, g = ident.p, ident.c, ident.g
    if q["blink"]:  # closed eyes: skin over the (baked-in) eye, then the lash line
        for e in range(2):
            d.polygon(g["sclera"][e], fill=c["skin"])
            d.line(g["blink"][e], fill=c["blink"], width=2)
    else:
        # iris, pupil and glint as plain circles; the caller then restores everything outside the eye openings
        # from the identity's canvas (an exact clip, see _Identity and _clip_eyes)
        gx = max(-_GAZE_X * p["eye_w"], min(_GAZE_X * p["eye_w"], q["gaze_x"])) * _SS
        gy = max(-_GAZE_Y * p["eye_h"], min(_GAZE_Y * p["eye_h"], q["gaze_y"])) * _SS
        ri, rp, rg = g["iris_r"], g["pupil_r"], g["glint_r"]
        ycen = _cv(p["eye_y"]) + gy
        for ex in (p["le_x"], p["re_x"]):
            xc = _cv(ex) + gx
            d.ellipse((xc - ri, ycen - ri, xc + ri, ycen + ri), fill=c["iris"])
            d.ellipse((xc - rp, ycen - rp, xc + rp, ycen + rp), fill=c["pupil"])
            d.ellipse((xc + 1.8 - rg, ycen - 2.0 - rg, xc + 1.8 + rg, ycen - 2.0 + rg), fill=(250, 250, 250, 255))
    # brows
    brows = g["brow_xy"].copy()
    brows[..., 1] -= q["brow_raise"] * g["brow_w"]
    for poly in brows.reshape(2, -1).tolist():
        d.polygon(poly, fill=c["brow"])
    # mouth
    t = _T13
    smile = min(1.3, max(-0.5, q["smile"]))
    opn = min(1.2, max(0.0, q["open"]))
    xs = p["mouth_x"] + p["mouth_hw"] * (1.0 + 0.08 * smile) * t
    line = p["mouth_y"] + smile * g["m_line"]
    gap = 7.0 * opn * g["m_p08"]
    up_top = line - p["lip_up"] * g["m_p06"] * g["m_bow"]
    lo_top = line + gap
    lo_bot = lo_top + p["lip_low"] * g["m_p06"]
    xx = np.concatenate([xs, xs[::-1]])
    if opn > 0.05:
        d.polygon(_poly(xx, np.concatenate([line, lo_top[::-1]])), fill=(55, 18, 22, 255))
        if smile > 0.2:
            teeth = line + np.minimum(gap, 2.6)
            d.polygon(_poly(np.concatenate([xs[2:-2], xs[-3:1:-1]]), np.concatenate([line[2:-2], teeth[-3:1:-1]])),
                      fill=(232, 228, 214, 255))
    d.polygon(_poly(xx, np.concatenate([up_top, line[::-1]])), fill=c["lip_up"])
    d.polygon(_poly(xx, np.concatenate([lo_top, lo_bot[::-1]])), fill=c["lip_low"])
    d.line(_poly(xs, line), fill=c["lip_line"], width=2)


def _clip_eyes(canvas: np.ndarray, ident: _Identity) -> None:
    """Restore the pixels around the eyes that lie outside the eye openings (iris overdraw) from the base canvas."""
    base = ident.base
    for ys, xs, outside in ident.g["eye_clip"]:
        np.copyto(canvas[ys, xs], base[ys, xs], where=outside)


def _draw_occluders(d: ImageDraw.ImageDraw, ident: _Identity, q: dict[str, Any]) -> None:
    p = ident.p
    occ = q["occ"]
    cx, ax, ey = p["face_cx"], p["face_ax"], p["eye_y"]
    if q["mask"]:
        g = ident.mask_geometry()
        col = _MASK_COLOURS[int(occ[0] * len(_MASK_COLOURS))]
        d.polygon(g["mask_poly"], fill=_rgb(col))
        for line in g["mask_lines"]:
            d.line(line, fill=_rgb([v * 0.8 for v in col]), width=2)
        for line in g["mask_straps"]:
            d.line(line, fill=(225, 225, 225, 255), width=2)
    if q["glasses"]:
        col = _rgb(_FRAME_COLOURS[int(occ[1] * len(_FRAME_COLOURS))])
        rw, rh = p["eye_w"] + 4.0 + 2.0 * occ[2], p["eye_h"] + 4.0 + 2.0 * occ[3]
        for ex in (p["le_x"], p["re_x"]):
            if q["sunglasses"]:
                d.ellipse(_box(ex, ey + 0.5, rw, rh), fill=(28, 28, 34, 255), outline=col, width=3)
            else:
                d.ellipse(_box(ex, ey + 0.5, rw, rh), outline=col, width=3)
        d.line(_poly([p["le_x"] + rw, p["re_x"] - rw], [ey - 0.5, ey - 0.5]), fill=col, width=3)
        for side, ex in ((-1, p["le_x"]), (1, p["re_x"])):
            d.line(_poly([ex + side * rw, cx + side * ax * 0.99], [ey - 0.5, ey - 1.5]), fill=col, width=3)
    if q["hat"]:
        col = np.array(_HAT_COLOURS[int(occ[4] * len(_HAT_COLOURS))], dtype=np.float64)
        brim = p["hairline"] - 1.0 + 3.0 * q["hat_n"]
        t = np.linspace(np.pi, 2 * np.pi, 20)
        hx = cx + (ax + p["volume"] + 2.5) * np.cos(t)
        hy = p["face_cy"] + (p["face_top"] + p["volume"] + 3.0) * np.sin(t)
        keep = hy <= brim
        d.polygon(_poly(np.concatenate([[cx - ax - 5], hx[keep], [cx + ax + 5]]),
                        np.concatenate([[brim], hy[keep], [brim]])), fill=_rgb(col))
        d.line(_poly([cx - ax - 5, cx + ax + 5], [brim, brim]), fill=_rgb(col * 0.7), width=4)


def _lowres(img: np.ndarray, f: int) -> np.ndarray:
    """Average f x f blocks of a (3, S, S) image (f a power of two dividing S) and blow them up again."""
    _, s, _ = img.shape
    small = img
    k = 1
    while k < f:
        small = (small[:, 0::2, 0::2] + small[:, 1::2, 0::2]) + (small[:, 0::2, 1::2] + small[:, 1::2, 1::2])
        small *= np.float32(0.25)
        k *= 2
    n = s // f
    return np.ascontiguousarray(np.broadcast_to(small[:, :, None, :, None], (3, n, f, n, f))).reshape(3, s, s)


def _blur121(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur of a (3, S, S) float32 image with edge replication."""
    _, s, _ = img.shape
    f = img.reshape(3, -1)
    v = f * np.float32(2.0)
    v[:, s:] += f[:, :-s]
    v[:, :-s] += f[:, s:]
    v[:, :s] += f[:, :s]
    v[:, -s:] += f[:, -s:]
    h = v * np.float32(2.0)
    h[:, 1:] += v[:, :-1]
    h[:, :-1] += v[:, 1:]
    h *= np.float32(1.0 / 16.0)
    h3, v3 = h.reshape(3, s, s), v.reshape(3, s, s)
    h3[:, :, 0] = (v3[:, :, 0] * np.float32(3.0) + v3[:, :, 1]) * np.float32(1.0 / 16.0)
    h3[:, :, -1] = (v3[:, :, -1] * np.float32(3.0) + v3[:, :, -2]) * np.float32(1.0 / 16.0)
    return h3


def _probe_shared_draw() -> bool:
    """Whether Pillow draws straight into a numpy buffer wrapped by ``Image.frombuffer`` (saves two canvas copies)."""
    try:
        arr = np.zeros((4, 4, 4), dtype=np.uint8)
        im = Image.frombuffer("RGBA", (4, 4), arr, "raw", "RGBA", 0, 1)
        im.readonly = 0
        ImageDraw.Draw(im).point((1, 2), fill=(1, 2, 3, 4))
        return bool(arr[2, 1].tolist() == [1, 2, 3, 4])
    except Exception:  # pragma: no cover - depends on the Pillow build
        return False


_SHARED_DRAW = [_probe_shared_draw()]


def _writable_view(arr: np.ndarray) -> Image.Image:
    """An RGBA Pillow image over ``arr`` (C, C, 4) uint8 that draws into ``arr`` where Pillow allows it."""
    if _SHARED_DRAW[0]:
        im = Image.frombuffer("RGBA", (arr.shape[1], arr.shape[0]), arr, "raw", "RGBA", 0, 1)
        im.readonly = 0
        return im
    return Image.fromarray(arr, mode="RGBA")


# ----------------------------------------------------------------------------------------------------------------------
# the renderer


class SyntheticFaces:
    """Deterministic renderer of synthetic identities; ``render(identity, image_index)`` is a pure function.

    ``identity`` is an integer in ``[0, 2**31)``: training identities are ``0 .. num_identities - 1`` and held-out
    evaluation identities ``EVAL_IDENTITY_OFFSET + k``.  The instance keeps an LRU cache of canonical canvases
    (``config.cache_size`` identities); copies in DataLoader workers keep their own cache, and pickling drops it.

    >>> faces = SyntheticFaces(SyntheticConfig(seed=0))
    >>> faces.render(3, 0).shape
    (112, 112, 3)
    """

    def __init__(self, config: SyntheticConfig | None = None, **overrides: Any):
        cfg = config if config is not None else SyntheticConfig()
        if not isinstance(cfg, SyntheticConfig):
            raise InvalidOptionError(f"config must be a SyntheticConfig, got {type(cfg).__name__}")
        if overrides:
            try:
                cfg = replace(cfg, **overrides)
            except TypeError as exc:
                raise InvalidOptionError(f"SyntheticFaces: {exc}") from None
        self.config = cfg
        self._cache: OrderedDict[int, _Identity] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self._cache = OrderedDict()

    def __repr__(self) -> str:
        return f"SyntheticFaces({self.config!r})"

    @staticmethod
    def _check_identity(identity: Any) -> int:
        bad_type = isinstance(identity, bool) or not isinstance(identity, (int, np.integer))
        if bad_type or not 0 <= identity < _MAX_IDENTITY:
            raise InvalidOptionError(f"identity must be an integer in [0, 2**31), got {identity!r}")
        return int(identity)

    def identity_params(self, identity: int) -> dict[str, Any]:
        """Named parameters of ``identity``: floats (canonical 112-frame pixels, RGB 0..255) and texture arrays."""
        identity = self._check_identity(identity)
        return _identity_params(self.config.seed, identity, float(self.config.identity_spread))

    def identity_vector(self, identity: int) -> np.ndarray:
        """:meth:`identity_params` flattened into one float64 vector (the same length for every identity)."""
        return _params_vector(self.identity_params(identity))

    def _identity(self, identity: int) -> _Identity:
        hit = self._cache.get(identity)
        if hit is not None:
            self._cache.move_to_end(identity)
            return hit
        ident = _Identity(_identity_params(self.config.seed, identity, float(self.config.identity_spread)))
        if self.config.cache_size > 0:
            self._cache[identity] = ident
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return ident

    def landmarks(self, identity: int) -> np.ndarray:
        """The identity's canonical five points (before nuisances) in output pixels, (5, 2) -- cf. the template."""
        p = self.identity_params(identity)
        pts = np.array(
            [
                [p["le_x"], p["eye_y"]],
                [p["re_x"], p["eye_y"]],
                [p["nose_x"], p["nose_y"]],
                [p["mouth_x"] - p["mouth_hw"], p["mouth_y"]],
                [p["mouth_x"] + p["mouth_hw"], p["mouth_y"]],
            ]
        )
        return pts * (self.config.image_size / 112.0)

    def render(self, identity: int, image_index: int, *, difficulty: float | None = None) -> np.ndarray:
        """Image ``image_index`` of ``identity``: (S, S, 3) uint8 RGB, S = ``config.image_size``; deterministic.

        ``difficulty`` overrides the config's knob for this call (``0`` renders the canonical face).
        """
        identity = self._check_identity(identity)
        image_index = _check_nonneg_int(image_index, "image_index")
        dval = float(self.config.difficulty if difficulty is None else difficulty)
        if not 0.0 <= dval <= 4.0:
            raise InvalidOptionError(f"difficulty must be in [0, 4], got {difficulty!r}")
        ident = self._identity(identity)
        rng = np.random.default_rng([_TAG_IMAGE, self.config.seed, identity, image_index])
        return self._compose(ident, _image_nuisances(rng, dval), dval)

    def _compose(self, ident: _Identity, q: dict[str, Any], d: float) -> np.ndarray:
        size = self.config.image_size
        p = ident.p
        canvas = ident.base.copy()
        im = _writable_view(canvas)
        draw = ImageDraw.Draw(im)
        _draw_features(draw, ident, q)
        if not _SHARED_DRAW[0]:  # Pillow copied the buffer: fetch the pixels back
            canvas = np.array(im)
        if not q["blink"]:
            _clip_eyes(canvas, ident)
        if q["mask"] or q["glasses"] or q["hat"]:
            if not _SHARED_DRAW[0]:
                im = Image.fromarray(canvas, mode="RGBA")
                draw = ImageDraw.Draw(im)
            _draw_occluders(draw, ident, q)
            if not _SHARED_DRAW[0]:
                canvas = np.array(im)
        flat = canvas.view(np.uint32).reshape(-1)

        # inverse pose map (output pixel -> canonical frame), then canvas pixel coordinates
        X, Y = _grids(size)
        cr, sr = math.cos(q["roll"]), math.sin(q["roll"])
        inv_s = 1.0 / q["scale"]
        a, b = cr * inv_s, sr * inv_s
        cx0 = -(a * q["dx"] + b * q["dy"])
        cy0 = -(a * q["dy"] - b * q["dx"])
        yaw = q["yaw"]
        ss, off = np.float32(_SS), (_MARGIN + _POSE_CENTRE[0]) * _SS
        if abs(yaw) > 1e-4:
            qx = X * np.float32(a) + Y * np.float32(b)
            qx += np.float32(cx0)
            # yaw: a Gaussian depth bump z(x) seen rotated -> a monotone horizontal remap (|yaw| <= 40 deg keeps it so)
            cxr = p["face_cx"] - _POSE_CENTRE[0]
            sig, depth = 0.58 * p["face_ax"], 0.9 * p["face_ax"]
            src = np.linspace(-120.0, 120.0, 241)
            fwd = src * math.cos(yaw) + depth * math.sin(yaw) * (np.exp(-0.5 * ((src - cxr) / sig) ** 2) - 0.6)
            # inverse of the remap tabulated finely (0.05 px steps) on a uniform grid of posed x, directly in canvas
            # pixels; a nearest lookup then costs one gather (the sampling below is nearest-pixel anyway)
            lo, n_tab = -102.4, 4096
            inv = np.interp(lo + (204.8 / n_tab) * np.arange(n_tab), fwd, src)
            lut = (inv * _SS + off).astype(np.float32)
            pos = qx * np.float32(n_tab / 204.8)
            pos += np.float32(-lo * n_tab / 204.8 + 0.5)
            np.clip(pos, 0.0, n_tab - 1, out=pos)
            cu = np.take(lut, pos.astype(np.int32))
        else:
            cu = X * np.float32(a * _SS) + Y * np.float32(b * _SS)
            cu += np.float32(cx0 * _SS + off)
        cv = Y * np.float32(a * _SS) - X * np.float32(b * _SS)
        cv += np.float32(cy0 * _SS + (_MARGIN + _POSE_CENTRE[1]) * _SS)

        # two-tap super-sampled lookup on the 2x canvas: the two diagonal pixels of the 2x2 block around each
        # sample point (edge pixels replicate beyond the canvas)
        hi = np.float32(_CANVAS - 2)
        cu -= np.float32(0.5)
        cv -= np.float32(0.5)
        iu = np.clip(cu, 0.0, hi, out=cu).astype(np.int32)
        idx = np.clip(cv, 0.0, hi, out=cv).astype(np.int32)
        idx *= _CANVAS
        idx += iu
        acc = np.take(flat, idx).view(np.uint8).reshape(-1, 4).astype(np.uint16)
        idx += _CANVAS + 1
        acc += np.take(flat, idx).view(np.uint8).reshape(-1, 4)
        acc = acc.T.astype(np.float32, order="C")  # (4, N) planar: channels at 2x scale (0..510)
        alpha2 = acc[3]

        # illumination: Lambertian on a head ellipsoid at half resolution, light rotated into the canonical frame
        el, az = q["light_el"], q["light_az"]
        lx, ly, lz = math.sin(el) * math.cos(az), math.sin(el) * math.sin(az), math.cos(el)
        lx, ly = lx * cr + ly * sr, ly * cr - lx * sr
        lx, lz = lx * math.cos(yaw) - lz * math.sin(yaw), lz * math.cos(yaw) + lx * math.sin(yaw)
        cu2, cv2 = cu.reshape(size, size)[::2, ::2], cv.reshape(size, size)[::2, ::2]
        kx = 1.0 / (p["face_ax"] * 1.25 * _SS)
        ky = 1.0 / (p["face_top"] * 1.15 * _SS)
        nx = cu2 * np.float32(kx) - np.float32(_cv(p["face_cx"]) * kx)
        ny = cv2 * np.float32(ky) - np.float32(_cv(p["face_cy"]) * ky)
        nz = np.sqrt(np.maximum(np.float32(1.0) - nx * nx - ny * ny, np.float32(0.04)))
        lam = nx * np.float32(lx) + ny * np.float32(ly) + nz * np.float32(lz)
        np.maximum(lam, np.float32(0.0), out=lam)
        k = q["light_k"]
        lam *= np.float32(1.25 * k)
        lam += np.float32(1.0 - k)
        shade = np.repeat(np.repeat(lam, 2, axis=0), 2, axis=1)[:size, :size].reshape(-1)

        # background: colour (grey at difficulty 0), linear gradient, smooth texture
        sensor, smooth = _pools(size)
        side = sensor.shape[1]
        dd = q["bg_mix"]
        col = np.array([128.0, 128.0, 128.0]) + dd * (
            q["bg_grey"] - 128.0 + q["bg_sat"] * np.array(q["bg_tint"]) * 2.0)
        gain = np.array([1.0 + q["cast_r"], 1.0, 1.0 + q["cast_b"]]) * q["exposure"]
        g = q["bg_grad_dir"]
        ramp = X * np.float32(math.cos(g) * q["bg_grad"] / 56.0)
        ramp += Y * np.float32(math.sin(g) * q["bg_grad"] / 56.0)
        oy, ox = int(q["bg_off"][0] * (side - size)), int(q["bg_off"][1] * (side - size))
        bg = np.empty((3, size * size), dtype=np.float32)
        np.multiply(smooth[:, oy:oy + size, ox:ox + size], np.float32(q["bg_tex"]), out=bg.reshape(3, size, size))
        bg += ramp
        bg += col.astype(np.float32)[:, None]

        # composite: img = fg * shade * alpha + bg * (1 - alpha), then exposure / colour cast
        wf = shade * alpha2
        wf *= np.float32(1.0 / 1020.0)
        wb = alpha2 * np.float32(-1.0 / 510.0)
        wb += np.float32(1.0)
        img = acc[:3]
        img *= wf
        bg *= wb
        img += bg
        img *= gain.astype(np.float32)[:, None]
        img = img.reshape(3, size, size)

        # optics: defocus blur, block low resolution, sensor noise
        if q["blur"]:
            for _ in range(q["blur_passes"]):
                img = _blur121(img)
        if q["lowres"] and size % q["lowres_f"] == 0:
            img = _blur121(_lowres(img, q["lowres_f"]))
        if q["noise"] > 0.0:
            a0, b0 = int(q["noise_off"][0] * (side - size)), int(q["noise_off"][1] * (side - size))
            nbuf = np.multiply(sensor[:, a0:a0 + size, b0:b0 + size], np.float32(q["noise"]))
            img += nbuf
        img += np.float32(0.5)
        np.clip(img, 0.0, 255.0, out=img)
        out = np.empty((size, size, 3), dtype=np.uint8)
        out[..., 0] = img[0]
        out[..., 1] = img[1]
        out[..., 2] = img[2]
        if q["jpeg_u"] < self.config.jpeg_prob:
            buf = io.BytesIO()
            Image.fromarray(out).save(buf, format="JPEG", quality=int(q["jpeg_q"]))
            buf.seek(0)
            out = np.array(Image.open(buf).convert("RGB"))
        return out


# ----------------------------------------------------------------------------------------------------------------------
# label noise and the training / evaluation datasets


def noisy_labels(
    seed: int, num_identities: int, images_per_identity: int, fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic label noise: ``(labels, true_labels, noisy_mask)`` for images ordered identity-major.

    Exactly ``round(fraction * N)`` images (N = ``num_identities * images_per_identity``) get the label of another,
    uniformly drawn, *different* identity; the choice depends only on the arguments.
    """
    num_identities = _check_nonneg_int(num_identities, "num_identities", 1)
    images_per_identity = _check_nonneg_int(images_per_identity, "images_per_identity", 1)
    if not 0.0 <= float(fraction) <= 1.0:
        raise InvalidOptionError(f"label_noise must be in [0, 1], got {fraction!r}")
    n = num_identities * images_per_identity
    true = np.repeat(np.arange(num_identities, dtype=np.int64), images_per_identity)
    labels = true.copy()
    mask = np.zeros(n, dtype=bool)
    k = int(round(float(fraction) * n))
    if k:
        if num_identities < 2:
            raise InvalidOptionError("label_noise > 0 needs at least 2 identities")
        rng = np.random.default_rng([_TAG_NOISE, int(seed), num_identities, images_per_identity])
        idx = np.sort(rng.choice(n, size=k, replace=False))
        labels[idx] = (true[idx] + rng.integers(1, num_identities, size=k)) % num_identities
        mask[idx] = True
    return labels, true, mask


class SyntheticFaceDataset(torch.utils.data.Dataset):
    """Synthetic faces as a map-style dataset: ``ds[i] -> (image, label)``.

    Item ``i`` is image ``i % images_per_identity`` of identity ``i // images_per_identity`` (identity-major order).
    By default the image is a float32 tensor (3, S, S) normalised ``(x / 255 - 0.5) / 0.5`` (arcface_torch, RGB);
    with ``transform`` the uint8 (S, S, 3) RGB array is passed to it and its result is returned instead.

    * ``split="train"``: identities ``0 .. num_identities - 1``; ``labels`` carry ``config.label_noise``.
    * ``split="eval"``: as many held-out identities (``EVAL_IDENTITY_OFFSET + k``), never noisy.

    Attributes: ``labels`` (int64, what ``__getitem__`` returns), ``true_labels``, ``noisy_mask`` (bool),
    ``num_classes``, ``identities`` (generator identity of each class).  Rendering is a pure function of the index,
    so DataLoader workers (fork or spawn) produce identical items; each worker keeps its own identity cache.
    """

    def __init__(
        self,
        config: SyntheticConfig | None = None,
        *,
        split: str = "train",
        transform: Callable[[np.ndarray], Any] | None = None,
    ):
        cfg = config if config is not None else SyntheticConfig()
        if not isinstance(cfg, SyntheticConfig):
            raise InvalidOptionError(f"config must be a SyntheticConfig, got {type(cfg).__name__}")
        if split not in ("train", "eval"):
            raise InvalidOptionError(f"split must be 'train' or 'eval', got {split!r}")
        if transform is not None and not callable(transform):
            raise InvalidOptionError(f"transform must be callable, got {type(transform).__name__}")
        self.config = cfg
        self.split = split
        self.transform = transform
        self.faces = SyntheticFaces(cfg)
        self.num_classes = cfg.num_identities
        self.images_per_identity = cfg.images_per_identity
        offset = 0 if split == "train" else EVAL_IDENTITY_OFFSET
        self.identities = offset + np.arange(cfg.num_identities, dtype=np.int64)
        noise = cfg.label_noise if split == "train" else 0.0
        self.labels, self.true_labels, self.noisy_mask = noisy_labels(
            cfg.seed, cfg.num_identities, cfg.images_per_identity, noise
        )

    def __len__(self) -> int:
        return self.num_classes * self.images_per_identity

    def image(self, index: int) -> np.ndarray:
        """The uint8 (S, S, 3) RGB image of item ``index`` (no transform)."""
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise IndexError(f"index {index!r} out of range for a dataset of {n} images")
        index = int(index) % n
        cls, k = divmod(index, self.images_per_identity)
        return self.faces.render(int(self.identities[cls]), k)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = self.image(index)
        label = int(self.labels[int(index) % len(self)])
        if self.transform is not None:
            return self.transform(img), label
        t = torch.from_numpy(img).permute(2, 0, 1).to(torch.float32)
        return t.mul_(2.0 / 255.0).sub_(1.0), label

    def __repr__(self) -> str:
        return (f"SyntheticFaceDataset(split={self.split!r}, classes={self.num_classes}, "
                f"images={len(self)}, noisy={int(self.noisy_mask.sum())})")


# ----------------------------------------------------------------------------------------------------------------------
# evaluation sets over held-out identities


def _render_many(faces: SyntheticFaces, keys: Sequence[tuple[int, int]]) -> np.ndarray:
    s = faces.config.image_size
    out = np.empty((len(keys), s, s, 3), dtype=np.uint8)
    for i, (ident, k) in enumerate(keys):
        out[i] = faces.render(ident, k)
    return out


def synthetic_pairs(
    seed: int = 0,
    num_identities: int = 200,
    images_per_identity: int = 10,
    n_folds: int = 10,
    pairs_per_fold: int = 600,
    *,
    difficulty: float = 1.0,
    identity_spread: float = 1.0,
    image_size: int = 112,
    return_labels: bool = False,
) -> tuple[np.ndarray, ...]:
    """LFW-style verification pairs over held-out identities (View-2 layout, METHODS §8.2).

    Identities are split into ``n_folds`` contiguous groups of ``num_identities // n_folds``; fold ``f`` holds
    ``pairs_per_fold / 2`` same-identity pairs (distinct images) followed by as many different-identity pairs, all
    drawn inside group ``f`` -- so no identity appears in two folds.  Folds are contiguous blocks in pair order.

    Returns ``(images, idx1, idx2, issame, folds)``: the unique images used (N, S, S, 3) uint8 sorted by (identity,
    image index), int64 indices into them, bool same-identity flags, and the int64 fold (0 .. n_folds-1) of each pair.
    With ``return_labels`` a sixth array gives each image's held-out identity index (0 .. num_identities-1).
    Deterministic in the arguments.
    """
    num_identities = _check_nonneg_int(num_identities, "num_identities", 2)
    images_per_identity = _check_nonneg_int(images_per_identity, "images_per_identity", 2)
    n_folds = _check_nonneg_int(n_folds, "n_folds", 1)
    pairs_per_fold = _check_nonneg_int(pairs_per_fold, "pairs_per_fold", 2)
    if pairs_per_fold % 2:
        raise InvalidOptionError(f"pairs_per_fold must be even (half same, half different), got {pairs_per_fold}")
    per_fold = num_identities // n_folds
    if per_fold < 2:
        raise InvalidOptionError(
            f"num_identities={num_identities} gives {per_fold} identities per fold for n_folds={n_folds}; "
            f"need at least 2 (use num_identities >= {2 * n_folds})")
    half = pairs_per_fold // 2
    k = images_per_identity
    n_same = per_fold * k * (k - 1) // 2
    n_diff = (per_fold * (per_fold - 1) // 2) * k * k
    if half > n_same or half > n_diff:
        raise InvalidOptionError(
            f"pairs_per_fold={pairs_per_fold} needs {half} distinct same and different pairs per fold, but "
            f"{per_fold} identities x {k} images give only {n_same} same / {n_diff} different pairs; raise "
            "num_identities or images_per_identity, or lower pairs_per_fold")
    faces = SyntheticFaces(SyntheticConfig(seed=seed, num_identities=num_identities, images_per_identity=k,
                                           difficulty=difficulty, identity_spread=identity_spread,
                                           image_size=image_size, cache_size=per_fold))
    rng = np.random.default_rng([_TAG_PAIRS, int(seed), num_identities, k, n_folds, pairs_per_fold])
    ia, ja = np.triu_indices(k, 1)
    pairs: list[tuple[int, int, int, int]] = []  # (class a, image a, class b, image b)
    issame: list[bool] = []
    folds: list[int] = []
    for f in range(n_folds):
        ids = np.arange(f * per_fold, (f + 1) * per_fold)
        pick = rng.choice(n_same, size=half, replace=False)
        for s in pick:
            c, r = divmod(int(s), len(ia))
            pairs.append((int(ids[c]), int(ia[r]), int(ids[c]), int(ja[r])))
        pick = rng.choice(n_diff, size=half, replace=False)
        ca, cb = np.triu_indices(per_fold, 1)
        for s in pick:
            c, r = divmod(int(s), k * k)
            pairs.append((int(ids[ca[c]]), r // k, int(ids[cb[c]]), r % k))
        issame += [True] * half + [False] * half
        folds += [f] * pairs_per_fold
    keys = sorted({(a, i) for a, i, _, _ in pairs} | {(b, j) for _, _, b, j in pairs})
    where = {key: n for n, key in enumerate(keys)}
    idx1 = np.array([where[(a, i)] for a, i, _, _ in pairs], dtype=np.int64)
    idx2 = np.array([where[(b, j)] for _, _, b, j in pairs], dtype=np.int64)
    images = _render_many(faces, [(EVAL_IDENTITY_OFFSET + c, i) for c, i in keys])
    out = (images, idx1, idx2, np.array(issame, dtype=bool), np.array(folds, dtype=np.int64))
    if return_labels:
        out += (np.array([c for c, _ in keys], dtype=np.int64),)
    return out


def synthetic_identification(
    seed: int = 0,
    num_identities: int = 100,
    gallery_per_identity: int = 1,
    probes_per_identity: int = 4,
    *,
    num_distractors: int = 0,
    difficulty: float = 1.0,
    identity_spread: float = 1.0,
    image_size: int = 112,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 1:N identification set over held-out identities (disjoint from :func:`synthetic_pairs`' people).

    Identity ``c`` (label ``c``) contributes images ``0 .. gallery_per_identity - 1`` to the gallery and the next
    ``probes_per_identity`` images as probes.  ``num_distractors`` extra identities (labels ``num_identities ..``)
    appear in the gallery only.  Returns ``(gallery_images, gallery_labels, probe_images, probe_labels)``.
    """
    num_identities = _check_nonneg_int(num_identities, "num_identities", 1)
    gallery_per_identity = _check_nonneg_int(gallery_per_identity, "gallery_per_identity", 1)
    probes_per_identity = _check_nonneg_int(probes_per_identity, "probes_per_identity", 1)
    num_distractors = _check_nonneg_int(num_distractors, "num_distractors", 0)
    total = num_identities + num_distractors
    faces = SyntheticFaces(SyntheticConfig(seed=seed, difficulty=difficulty, identity_spread=identity_spread,
                                           image_size=image_size, cache_size=1))
    base = EVAL_IDENTITY_OFFSET + IDENTIFICATION_OFFSET
    g_keys = [(c, i) for c in range(total) for i in range(gallery_per_identity)]
    p_keys = [(c, gallery_per_identity + i) for c in range(num_identities) for i in range(probes_per_identity)]
    gallery = _render_many(faces, [(base + c, i) for c, i in g_keys])
    probes = _render_many(faces, [(base + c, i) for c, i in p_keys])
    return (gallery, np.array([c for c, _ in g_keys], dtype=np.int64),
            probes, np.array([c for c, _ in p_keys], dtype=np.int64))


def pixel_baseline_accuracy(
    images: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
    issame: np.ndarray,
    folds: np.ndarray,
    *,
    size: int = 28,
) -> tuple[float, float]:
    """10-fold verification accuracy of a raw-pixel "embedding" (a calibration yardstick, not a model).

    Each image becomes its ``size x size`` grey thumbnail (box filter), mean-centred over all images and
    L2-normalised; score = cosine; per fold the threshold maximising accuracy on the other folds is applied to the
    held-out fold (METHODS §8.2).  Returns (mean, std) of the fold accuracies.
    """
    grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    small = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BOX)) for g in grey])
    feats = small.reshape(len(images), -1).astype(np.float64)
    feats -= feats.mean(axis=0, keepdims=True)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    scores = np.einsum("ij,ij->i", feats[idx1], feats[idx2])
    accs = []
    for f in np.unique(folds):
        test = folds == f
        tr_s, tr_y = scores[~test], issame[~test]
        order = np.argsort(tr_s, kind="stable")
        s_sorted, y_sorted = tr_s[order], tr_y[order]
        # candidate thresholds: midpoints between neighbouring training scores (and both ends); "same" iff score > t.
        # With t between s_sorted[i-1] and s_sorted[i], the i lowest scores are called "different".
        cand = np.concatenate([[s_sorted[0] - 1.0], (s_sorted[1:] + s_sorted[:-1]) / 2.0, [s_sorted[-1] + 1.0]])
        below_pos = np.concatenate([[0], np.cumsum(y_sorted)])
        below_neg = np.concatenate([[0], np.cumsum(~y_sorted)])
        correct = (int(y_sorted.sum()) - below_pos) + below_neg
        valid = np.concatenate([[True], s_sorted[1:] > s_sorted[:-1], [True]])  # skip splits inside ties
        correct = np.where(valid, correct, -1)
        t = cand[int(np.argmax(correct))]
        accs.append(float(np.mean((scores[test] > t) == issame[test])))
    return float(np.mean(accs)), float(np.std(accs))


# ----------------------------------------------------------------------------------------------------------------------
# writing an image folder, contact sheet


def _write_identity(task: tuple[SyntheticConfig, int, list[tuple[int, str]], str, int]) -> int:
    cfg, identity, items, root, quality = task
    faces = _worker_faces(cfg)
    for k, rel in items:
        Image.fromarray(faces.render(identity, k)).save(os.path.join(root, rel), format="JPEG", quality=quality)
    return len(items)


_WORKER_FACES: dict[SyntheticConfig, SyntheticFaces] = {}


def _worker_faces(cfg: SyntheticConfig) -> SyntheticFaces:
    faces = _WORKER_FACES.get(cfg)
    if faces is None:
        _WORKER_FACES.clear()
        faces = _WORKER_FACES[cfg] = SyntheticFaces(cfg)
    return faces


def write_synthetic_folder(
    out_dir: str | os.PathLike[str],
    num_identities: int,
    images_per_identity: int,
    seed: int = 0,
    difficulty: float = 1.0,
    label_noise: float = 0.0,
    jpeg_quality: int = 90,
    progress: bool = True,
    workers: int = 2,
    *,
    identity_spread: float = 1.0,
    image_size: int = 112,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the training split as an image folder: ``out_dir/<identity>/<NNNN>.jpg`` (identities ``id_00000`` ..).

    Files follow their (possibly noisy) label: with ``label_noise > 0`` a mislabeled image lands in the folder of its
    wrong identity, and ``noise.json`` / ``noise.csv`` list every such file with its true identity.  Every image is
    the one :class:`SyntheticFaceDataset` (same settings) returns, JPEG-encoded at ``jpeg_quality``.  A
    ``synthetic.json`` records the settings.  ``workers`` processes render in parallel (``0``/``1``: in-process).
    Returns a summary dict (counts, seconds, images per second, paths).
    """
    cfg = SyntheticConfig(seed=seed, num_identities=num_identities, images_per_identity=images_per_identity,
                          difficulty=difficulty, label_noise=label_noise, identity_spread=identity_spread,
                          image_size=image_size, cache_size=1)
    bad_type = isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, (int, np.integer))
    if bad_type or not 1 <= jpeg_quality <= 100:
        raise InvalidOptionError(f"jpeg_quality must be an integer in [1, 100], got {jpeg_quality!r}")
    workers = _check_nonneg_int(workers, "workers", 0)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise InvalidOptionError(f"{root}: exists and is not a directory; choose another --out")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise InvalidOptionError(f"{root}: directory is not empty; choose an empty or new --out (or pass overwrite)")
    root.mkdir(parents=True, exist_ok=True)

    labels, true, mask = noisy_labels(seed, num_identities, images_per_identity, label_noise)
    names = [identity_name(c, num_identities) for c in range(num_identities)]
    counters = np.zeros(num_identities, dtype=np.int64)
    width = max(4, len(str(int(np.bincount(labels, minlength=num_identities).max()) - 1)))
    per_identity: list[list[tuple[int, str]]] = [[] for _ in range(num_identities)]
    noise_rows: list[dict[str, Any]] = []
    for i in range(len(labels)):
        lab, tru, k = int(labels[i]), int(true[i]), i % images_per_identity
        rel = f"{names[lab]}/{int(counters[lab]):0{width}d}.jpg"
        counters[lab] += 1
        per_identity[tru].append((k, rel))
        if mask[i]:
            noise_rows.append({"file": rel, "label": lab, "true_label": tru, "true_identity": names[tru],
                               "source_image": k})
    for name in names:
        (root / name).mkdir(exist_ok=True)

    tasks = [(cfg, c, items, str(root), int(jpeg_quality)) for c, items in enumerate(per_identity)]
    total = len(labels)
    t0 = time.perf_counter()
    bar = _progress(total, progress)
    try:
        if workers <= 1:
            for task in tasks:
                bar.update(_write_identity(task))
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(workers) as pool:
                chunksize = max(1, min(16, len(tasks) // (8 * workers)))
                for n in pool.imap_unordered(_write_identity, tasks, chunksize=chunksize):
                    bar.update(n)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0

    summary: dict[str, Any] = {
        "out_dir": str(root),
        "num_identities": num_identities,
        "images_per_identity": images_per_identity,
        "num_images": total,
        "num_noisy": int(mask.sum()),
        "seed": seed,
        "difficulty": float(difficulty),
        "identity_spread": float(identity_spread),
        "label_noise": float(label_noise),
        "image_size": image_size,
        "jpeg_quality": int(jpeg_quality),
        "seconds": round(seconds, 3),
        "images_per_second": round(total / max(seconds, 1e-9), 1),
    }
    if label_noise > 0:
        (root / "noise.json").write_text(json.dumps({"num_noisy": len(noise_rows), "files": noise_rows}, indent=1))
        with open(root / "noise.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["file", "label", "true_label", "true_identity", "source_image"])
            w.writeheader()
            w.writerows(noise_rows)
        summary["noise_file"] = str(root / "noise.json")
    (root / "synthetic.json").write_text(json.dumps({"config": asdict(cfg), "summary": summary}, indent=1))
    return summary


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return _NoBar()
    return tqdm(total=total, unit="img", desc="synthesising", dynamic_ncols=True)


def contact_sheet(
    path: str | os.PathLike[str],
    num_identities: int = 8,
    images_per_identity: int = 8,
    seed: int = 0,
    *,
    difficulty: float = 1.0,
    canonical_column: bool = True,
    gap: int = 2,
) -> Path:
    """Write a PNG grid of synthetic faces: one row per training identity, its images left to right.

    With ``canonical_column`` the first column is the identity's canonical face (difficulty 0), the rest are
    images ``0 .. images_per_identity - 1`` at ``difficulty``.  Returns the path written.
    """
    num_identities = _check_nonneg_int(num_identities, "num_identities", 1)
    images_per_identity = _check_nonneg_int(images_per_identity, "images_per_identity", 1)
    faces = SyntheticFaces(SyntheticConfig(seed=seed, difficulty=difficulty, cache_size=1))
    s = faces.config.image_size
    cols = images_per_identity + (1 if canonical_column else 0)
    sheet = np.full((num_identities * (s + gap) + gap, cols * (s + gap) + gap, 3), 255, dtype=np.uint8)
    for r in range(num_identities):
        row = ([faces.render(r, 0, difficulty=0.0)] if canonical_column else []) + [
            faces.render(r, k) for k in range(images_per_identity)]
        for c, img in enumerate(row):
            y, x = gap + r * (s + gap), gap + c * (s + gap)
            sheet[y:y + s, x:x + s] = img
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out, format="PNG", optimize=True)
    return out
