"""One image of an identity: per-image nuisances (pose, expression, light, occluders, blur, noise) drawn on a copy of
the identity's canvas; :class:`SyntheticFaces` renders any (identity, image) pair."""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw

from ...errors import InvalidOptionError
from .canvas import (
    CURVE_T,
    GAZE_X,
    GAZE_Y,
    SHARED_DRAW,
    IdentityCanvas,
    canvas_box,
    canvas_polygon,
    rgba,
    to_canvas,
    writable_view,
)
from .identity import (
    CANVAS_MARGIN,
    CANVAS_SIZE,
    MAX_IDENTITY,
    POSE_CENTRE,
    SUPERSAMPLE,
    TAG_IMAGE,
    SyntheticConfig,
    check_nonneg_int,
    identity_params,
    params_vector,
)

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
        yy, xx = np.meshgrid(c - POSE_CENTRE[1], c - POSE_CENTRE[0], indexing="ij")
        _GRIDS[size] = (xx.ravel().astype(np.float32), yy.ravel().astype(np.float32))
    return _GRIDS[size]




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
        "gaze_y": 0.5 * m["gaze_sd_px"] * d * n[9],  # both clipped to the eye (see GAZE_X, GAZE_Y)
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


def _draw_features(d: ImageDraw.ImageDraw, ident: IdentityCanvas, q: dict[str, Any]) -> None:
    """Eyes (gaze, blinks), brows (raise) and mouth (smile, opening) on the identity's canvas copy."""
    p, c, g = ident.p, ident.c, ident.g
    if q["blink"]:  # closed eyes: skin over the (baked-in) eye, then the lash line
        for e in range(2):
            d.polygon(g["sclera"][e], fill=c["skin"])
            d.line(g["blink"][e], fill=c["blink"], width=2)
    else:
        # iris, pupil and glint as plain circles; the caller then restores everything outside the eye openings
        # from the identity's canvas (an exact clip, see IdentityCanvas and _clip_eyes)
        gx = max(-GAZE_X * p["eye_w"], min(GAZE_X * p["eye_w"], q["gaze_x"])) * SUPERSAMPLE
        gy = max(-GAZE_Y * p["eye_h"], min(GAZE_Y * p["eye_h"], q["gaze_y"])) * SUPERSAMPLE
        ri, rp, rg = g["iris_r"], g["pupil_r"], g["glint_r"]
        ycen = to_canvas(p["eye_y"]) + gy
        for ex in (p["le_x"], p["re_x"]):
            xc = to_canvas(ex) + gx
            d.ellipse((xc - ri, ycen - ri, xc + ri, ycen + ri), fill=c["iris"])
            d.ellipse((xc - rp, ycen - rp, xc + rp, ycen + rp), fill=c["pupil"])
            d.ellipse((xc + 1.8 - rg, ycen - 2.0 - rg, xc + 1.8 + rg, ycen - 2.0 + rg), fill=(250, 250, 250, 255))
    # brows
    brows = g["brow_xy"].copy()
    brows[..., 1] -= q["brow_raise"] * g["brow_w"]
    for poly in brows.reshape(2, -1).tolist():
        d.polygon(poly, fill=c["brow"])
    # mouth
    t = CURVE_T
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
        d.polygon(canvas_polygon(xx, np.concatenate([line, lo_top[::-1]])), fill=(55, 18, 22, 255))
        if smile > 0.2:
            teeth = line + np.minimum(gap, 2.6)
            d.polygon(canvas_polygon(np.concatenate([xs[2:-2], xs[-3:1:-1]]), np.concatenate([line[2:-2], teeth[-3:1:-1]])),
                      fill=(232, 228, 214, 255))
    d.polygon(canvas_polygon(xx, np.concatenate([up_top, line[::-1]])), fill=c["lip_up"])
    d.polygon(canvas_polygon(xx, np.concatenate([lo_top, lo_bot[::-1]])), fill=c["lip_low"])
    d.line(canvas_polygon(xs, line), fill=c["lip_line"], width=2)


def _clip_eyes(canvas: np.ndarray, ident: IdentityCanvas) -> None:
    """Restore the pixels around the eyes that lie outside the eye openings (iris overdraw) from the base canvas."""
    base = ident.base
    for ys, xs, outside in ident.g["eye_clip"]:
        np.copyto(canvas[ys, xs], base[ys, xs], where=outside)


def _draw_occluders(d: ImageDraw.ImageDraw, ident: IdentityCanvas, q: dict[str, Any]) -> None:
    p = ident.p
    occ = q["occ"]
    cx, ax, ey = p["face_cx"], p["face_ax"], p["eye_y"]
    if q["mask"]:
        g = ident.mask_geometry()
        col = _MASK_COLOURS[int(occ[0] * len(_MASK_COLOURS))]
        d.polygon(g["mask_poly"], fill=rgba(col))
        for line in g["mask_lines"]:
            d.line(line, fill=rgba([v * 0.8 for v in col]), width=2)
        for line in g["mask_straps"]:
            d.line(line, fill=(225, 225, 225, 255), width=2)
    if q["glasses"]:
        col = rgba(_FRAME_COLOURS[int(occ[1] * len(_FRAME_COLOURS))])
        rw, rh = p["eye_w"] + 4.0 + 2.0 * occ[2], p["eye_h"] + 4.0 + 2.0 * occ[3]
        for ex in (p["le_x"], p["re_x"]):
            if q["sunglasses"]:
                d.ellipse(canvas_box(ex, ey + 0.5, rw, rh), fill=(28, 28, 34, 255), outline=col, width=3)
            else:
                d.ellipse(canvas_box(ex, ey + 0.5, rw, rh), outline=col, width=3)
        d.line(canvas_polygon([p["le_x"] + rw, p["re_x"] - rw], [ey - 0.5, ey - 0.5]), fill=col, width=3)
        for side, ex in ((-1, p["le_x"]), (1, p["re_x"])):
            d.line(canvas_polygon([ex + side * rw, cx + side * ax * 0.99], [ey - 0.5, ey - 1.5]), fill=col, width=3)
    if q["hat"]:
        col = np.array(_HAT_COLOURS[int(occ[4] * len(_HAT_COLOURS))], dtype=np.float64)
        brim = p["hairline"] - 1.0 + 3.0 * q["hat_n"]
        t = np.linspace(np.pi, 2 * np.pi, 20)
        hx = cx + (ax + p["volume"] + 2.5) * np.cos(t)
        hy = p["face_cy"] + (p["face_top"] + p["volume"] + 3.0) * np.sin(t)
        keep = hy <= brim
        d.polygon(canvas_polygon(np.concatenate([[cx - ax - 5], hx[keep], [cx + ax + 5]]),
                        np.concatenate([[brim], hy[keep], [brim]])), fill=rgba(col))
        d.line(canvas_polygon([cx - ax - 5, cx + ax + 5], [brim, brim]), fill=rgba(col * 0.7), width=4)


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
        self._cache: OrderedDict[int, IdentityCanvas] = OrderedDict()

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
        if bad_type or not 0 <= identity < MAX_IDENTITY:
            raise InvalidOptionError(f"identity must be an integer in [0, 2**31), got {identity!r}")
        return int(identity)

    def identity_params(self, identity: int) -> dict[str, Any]:
        """Named parameters of ``identity``: floats (canonical 112-frame pixels, RGB 0..255) and texture arrays."""
        identity = self._check_identity(identity)
        return identity_params(self.config.seed, identity, float(self.config.identity_spread))

    def identity_vector(self, identity: int) -> np.ndarray:
        """:meth:`identity_params` flattened into one float64 vector (the same length for every identity)."""
        return params_vector(self.identity_params(identity))

    def _identity(self, identity: int) -> IdentityCanvas:
        hit = self._cache.get(identity)
        if hit is not None:
            self._cache.move_to_end(identity)
            return hit
        ident = IdentityCanvas(identity_params(self.config.seed, identity, float(self.config.identity_spread)))
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
        image_index = check_nonneg_int(image_index, "image_index")
        dval = float(self.config.difficulty if difficulty is None else difficulty)
        if not 0.0 <= dval <= 4.0:
            raise InvalidOptionError(f"difficulty must be in [0, 4], got {difficulty!r}")
        ident = self._identity(identity)
        rng = np.random.default_rng([TAG_IMAGE, self.config.seed, identity, image_index])
        return self._compose(ident, _image_nuisances(rng, dval), dval)

    def _compose(self, ident: IdentityCanvas, q: dict[str, Any], d: float) -> np.ndarray:
        size = self.config.image_size
        p = ident.p
        canvas = ident.base.copy()
        im = writable_view(canvas)
        draw = ImageDraw.Draw(im)
        _draw_features(draw, ident, q)
        if not SHARED_DRAW[0]:  # Pillow copied the buffer: fetch the pixels back
            canvas = np.array(im)
        if not q["blink"]:
            _clip_eyes(canvas, ident)
        if q["mask"] or q["glasses"] or q["hat"]:
            if not SHARED_DRAW[0]:
                im = Image.fromarray(canvas, mode="RGBA")
                draw = ImageDraw.Draw(im)
            _draw_occluders(draw, ident, q)
            if not SHARED_DRAW[0]:
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
        off = (CANVAS_MARGIN + POSE_CENTRE[0]) * SUPERSAMPLE
        if abs(yaw) > 1e-4:
            qx = X * np.float32(a) + Y * np.float32(b)
            qx += np.float32(cx0)
            # yaw: a Gaussian depth bump z(x) seen rotated -> a monotone horizontal remap (|yaw| <= 40 deg keeps it so)
            cxr = p["face_cx"] - POSE_CENTRE[0]
            sig, depth = 0.58 * p["face_ax"], 0.9 * p["face_ax"]
            src = np.linspace(-120.0, 120.0, 241)
            fwd = src * math.cos(yaw) + depth * math.sin(yaw) * (np.exp(-0.5 * ((src - cxr) / sig) ** 2) - 0.6)
            # inverse of the remap tabulated finely (0.05 px steps) on a uniform grid of posed x, directly in canvas
            # pixels; a nearest lookup then costs one gather (the sampling below is nearest-pixel anyway)
            lo, n_tab = -102.4, 4096
            inv = np.interp(lo + (204.8 / n_tab) * np.arange(n_tab), fwd, src)
            lut = (inv * SUPERSAMPLE + off).astype(np.float32)
            pos = qx * np.float32(n_tab / 204.8)
            pos += np.float32(-lo * n_tab / 204.8 + 0.5)
            np.clip(pos, 0.0, n_tab - 1, out=pos)
            cu = np.take(lut, pos.astype(np.int32))
        else:
            cu = X * np.float32(a * SUPERSAMPLE) + Y * np.float32(b * SUPERSAMPLE)
            cu += np.float32(cx0 * SUPERSAMPLE + off)
        cv = Y * np.float32(a * SUPERSAMPLE) - X * np.float32(b * SUPERSAMPLE)
        cv += np.float32(cy0 * SUPERSAMPLE + (CANVAS_MARGIN + POSE_CENTRE[1]) * SUPERSAMPLE)

        # two-tap super-sampled lookup on the 2x canvas: the two diagonal pixels of the 2x2 block around each
        # sample point (edge pixels replicate beyond the canvas)
        hi = np.float32(CANVAS_SIZE - 2)
        cu -= np.float32(0.5)
        cv -= np.float32(0.5)
        iu = np.clip(cu, 0.0, hi, out=cu).astype(np.int32)
        idx = np.clip(cv, 0.0, hi, out=cv).astype(np.int32)
        idx *= CANVAS_SIZE
        idx += iu
        acc = np.take(flat, idx).view(np.uint8).reshape(-1, 4).astype(np.uint16)
        idx += CANVAS_SIZE + 1
        acc += np.take(flat, idx).view(np.uint8).reshape(-1, 4)
        acc = acc.T.astype(np.float32, order="C")  # (4, N) planar: channels at 2x scale (0..510)
        alpha2 = acc[3]

        # illumination: Lambertian on a head ellipsoid at half resolution, light rotated into the canonical frame
        el, az = q["light_el"], q["light_az"]
        lx, ly, lz = math.sin(el) * math.cos(az), math.sin(el) * math.sin(az), math.cos(el)
        lx, ly = lx * cr + ly * sr, ly * cr - lx * sr
        lx, lz = lx * math.cos(yaw) - lz * math.sin(yaw), lz * math.cos(yaw) + lx * math.sin(yaw)
        cu2, cv2 = cu.reshape(size, size)[::2, ::2], cv.reshape(size, size)[::2, ::2]
        kx = 1.0 / (p["face_ax"] * 1.25 * SUPERSAMPLE)
        ky = 1.0 / (p["face_top"] * 1.15 * SUPERSAMPLE)
        nx = cu2 * np.float32(kx) - np.float32(to_canvas(p["face_cx"]) * kx)
        ny = cv2 * np.float32(ky) - np.float32(to_canvas(p["face_cy"]) * ky)
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
