"""Drawing an identity once: its canonical layers (skin, texture, ears, nose, hair, beard) on a super-sampled RGBA
canvas, cached with the geometry of its features."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .identity import (
    CANVAS_MARGIN,
    CANVAS_SIZE,
    N_FRECKLES,
    N_MOLES,
    SUPERSAMPLE,
    TEXTURE_GRID,
)

# ----------------------------------------------------------------------------------------------------------------------
# drawing helpers: canonical 112-frame coordinates -> canvas pixels


def to_canvas(x: Any) -> Any:
    return (x + CANVAS_MARGIN) * SUPERSAMPLE


def canvas_polygon(xs: Any, ys: Any) -> list[float]:
    xs = np.asarray(xs, dtype=np.float64)
    out = np.empty((xs.shape[0], 2))
    out[:, 0] = xs
    out[:, 1] = ys
    out += CANVAS_MARGIN
    out *= SUPERSAMPLE
    return out.ravel().tolist()


def rgba(c: Sequence[float], alpha: int = 255) -> tuple[int, int, int, int]:
    return (min(255, max(0, int(c[0]))), min(255, max(0, int(c[1]))), min(255, max(0, int(c[2]))), alpha)


def canvas_box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [to_canvas(cx - rx), to_canvas(cy - ry), to_canvas(cx + rx), to_canvas(cy + ry)]


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
        self.cols.append(_gauss1d(CANVAS_SIZE, to_canvas(cy), sy * SUPERSAMPLE)[:, None] * np.float32(w))
        self.rows.append(_gauss1d(CANVAS_SIZE, to_canvas(cx), sx * SUPERSAMPLE)[None, :])

    def grid(self, values: np.ndarray, sigma_y: float, sigma_x: float) -> None:
        """Add a smooth interpolation of a (gy, gx) grid of values spread evenly over the canvas."""
        gy, gx = values.shape
        by = np.stack([_gauss1d(CANVAS_SIZE, (i + 0.5) * CANVAS_SIZE / gy, sigma_y) for i in range(gy)], axis=1)
        bx = np.stack([_gauss1d(CANVAS_SIZE, (j + 0.5) * CANVAS_SIZE / gx, sigma_x) for j in range(gx)], axis=0)
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
        _GRAIN.append(np.random.default_rng(0x6A1A).random((2 * CANVAS_SIZE, 2 * CANVAS_SIZE), dtype=np.float32))
    o = int(u * CANVAS_SIZE)
    return _GRAIN[0][o:o + CANVAS_SIZE, CANVAS_SIZE - o:2 * CANVAS_SIZE - o]


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
    im = Image.new("RGBA", (CANVAS_SIZE, CANVAS_SIZE), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    skin_m = Image.new("L", (CANVAS_SIZE, CANVAS_SIZE), 0)
    dsk = ImageDraw.Draw(skin_m)
    hair_m = Image.new("L", (CANVAS_SIZE, CANVAS_SIZE), 0)
    dh = ImageDraw.Draw(hair_m)

    if style == 3:  # long hair behind the head
        t = np.linspace(np.pi, 2 * np.pi, 24)
        hx = np.concatenate([[cx - ax - vol - 5], cx + (ax + vol + 3) * np.cos(t), [cx + ax + vol + 5]])
        hy = np.concatenate([[p["hair_long"]], cy + (p["face_top"] + vol) * np.sin(t), [p["hair_long"]]])
        pts = canvas_polygon(hx, hy)
        d.polygon(pts, fill=rgba(hair * 0.85))
        dh.polygon(pts, fill=255)

    # skin: neck, ears, face (the skin mask follows), then nose wings, nostrils, freckles and moles
    nw = ax * p["neck_w"]
    neck_top = cy + 0.2 * p["face_low"]
    shapes: list[tuple[str, Any, tuple[int, int, int, int]]] = [
        ("poly", canvas_polygon([cx - nw, cx + nw, cx + nw * 1.15, cx - nw * 1.15], [neck_top, neck_top, 140.0, 140.0]),
         rgba(skin * 0.80)),
    ]
    for side in (-1, 1):
        ex = cx + side * ax * 0.97
        shapes.append(("ellipse", canvas_box(ex + side * p["ear_w"] * 0.45, p["ear_y"], p["ear_w"], p["ear_h"]),
                       rgba(skin * 0.93)))
        shapes.append(("ellipse", canvas_box(ex + side * p["ear_w"] * 0.55, p["ear_y"], p["ear_w"] * 0.45, p["ear_h"] * 0.6),
                       rgba(skin * 0.76)))
    fx, fy = _face_outline(p)
    shapes.append(("poly", canvas_polygon(fx, fy), rgba(skin)))
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
        d.arc(canvas_box(nx + side * nwid * 0.5, ny - 0.6, nwid * 0.45, 3.4),
              start=110 if side < 0 else -20, end=200 if side < 0 else 70, fill=rgba(skin * 0.74), width=2)
        d.ellipse(canvas_box(nx + side * nwid * 0.36, ny + 1.3, p["nostril"], p["nostril"] * 0.6), fill=rgba(skin * 0.40))
    for i in range(int(round(p["freckle_amount"] * N_FRECKLES))):
        a, r, s = p["freckles"][i]
        rr = 0.75 + 0.5 * s
        d.ellipse(canvas_box(cx + (a - 0.5) * ax * 1.3, p["eye_y"] + 6 + r * 18, rr, rr), fill=rgba(skin * (0.80 - 0.08 * s)))
    for i in range(N_MOLES):
        pr, a, r, s = p["moles"][i]
        if pr < p["mole_prob"] * 0.5:
            rr = 0.6 + 0.8 * s
            d.ellipse(canvas_box(cx + (a - 0.5) * ax * 1.5, 40 + r * 60, rr, rr), fill=rgba(skin * 0.45))

    # beard region (1 stubble, 2 full beard, 3 moustache + goatee, 4 moustache)
    beard_m = None
    if beard:
        beard_m = Image.new("L", (CANVAS_SIZE, CANVAS_SIZE), 0)
        db = ImageDraw.Draw(beard_m)
        mx, my, mhw = p["mouth_x"], p["mouth_y"], p["mouth_hw"]
        if beard in (1, 2):
            xr = np.array([-1.1, -0.62, -0.25, 0.0, 0.25, 0.62, 1.1])
            top = np.array([p["ear_y"] - 6, ny + 11, ny + 3.5, ny + 3.0, ny + 3.5, ny + 11, p["ear_y"] - 6])
            lx, ly = _lower_outline(p, ny - 30.0)
            db.polygon(canvas_polygon(np.concatenate([cx + xr * ax, lx]), np.concatenate([top, ly + 1.0])), fill=255)
            chin_y = cy + 0.85 * p["face_low"]
            db.polygon(canvas_polygon([cx - nw * 0.9, cx + nw * 0.9, cx + nw * 0.8, cx - nw * 0.8], [chin_y, chin_y, 124, 124]),
                       fill=255)
        if beard in (3, 4):
            t = np.linspace(-1.0, 1.0, 11)
            bot = my - p["lip_up"] * (1.0 - t * t) ** 0.6 - 0.3
            topm = bot - (2.6 + 1.6 * (1.0 - t * t))
            xs = mx + (mhw + 2.0) * t
            db.polygon(canvas_polygon(np.concatenate([xs, xs[::-1]]), np.concatenate([topm, bot[::-1]])), fill=255)
        if beard == 3:
            chin_y = cy + p["face_low"] - 1.0
            gy0 = my + p["lip_low"] + 1.5
            db.polygon(canvas_polygon([mx - 5.5, mx + 5.5, mx + 4.0, mx, mx - 4.0],
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
        pts = canvas_polygon(np.concatenate([ox, cx - inner, line_x, (cx + inner)[::-1]]),
                    np.concatenate([oy, ys, line_y, ys[::-1]]))
        d.polygon(pts, fill=rgba(hair))
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
    skin_mult.grid(p["texture"] * (p["tex_amp"] / 1.5), CANVAS_SIZE / TEXTURE_GRID * 0.6, CANVAS_SIZE / TEXTURE_GRID * 0.6)
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
        hair_mult.grid(streaks * np.float32(0.16 * math.sqrt(3.0)), CANVAS_SIZE / 3 * 0.6, CANVAS_SIZE / 80 * 0.5)
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
    out = np.empty((CANVAS_SIZE, CANVAS_SIZE, 4), dtype=np.uint8)
    for c in range(3):
        out[..., c] = rgb[c]
    out[..., 3] = base[..., 3]
    return out


CURVE_T = np.linspace(-1.0, 1.0, 13)
GAZE_X, GAZE_Y = 0.45, 0.3  # the iris centre stays within these fractions of the eye's half width / height


class IdentityCanvas:
    """Cached per-identity data: parameters, the canonical canvas, colours and pre-computed draw geometry."""

    __slots__ = ("p", "base", "c", "g")

    def __init__(self, p: dict[str, Any]):
        self.p = p
        self.base = _render_base(p)
        skin, hair, lip = _colour(p, "skin"), _colour(p, "hair"), _colour(p, "lip")
        self.c = {
            "sclera": (236, 232, 226, 255),
            "skin": rgba(skin * 0.97),
            "iris": rgba(_colour(p, "iris")),
            "pupil": (12, 10, 10, 255),
            "lid": rgba(skin * 0.22),
            "lower_lid": rgba(skin * 0.62),
            "blink": rgba(skin * 0.35),
            "brow": rgba(hair * 0.8 + skin * 0.06),
            "lip_up": rgba(lip * 0.88),
            "lip_low": rgba(lip),
            "lip_line": rgba(lip * 0.45),
        }
        g: dict[str, Any] = {}
        t = CURVE_T
        ey, ew, eh, tilt = p["eye_y"], p["eye_w"], p["eye_h"], p["eye_tilt"]
        up_shape, lo_shape = (1.0 - t**2) ** 0.75, (1.0 - t**2) ** 1.1
        g["sclera"], g["lid"], g["lower_lid"], g["blink"] = [], [], [], []
        for side, ex in ((-1, p["le_x"]), (1, p["re_x"])):
            xs = ex + ew * t
            base_y = ey - tilt * ew * t * side  # positive tilt lifts the outer corners
            up, lo = base_y - eh * 1.05 * up_shape, base_y + eh * 0.8 * lo_shape
            g["sclera"].append(canvas_polygon(np.concatenate([xs, xs[::-1]]), np.concatenate([up, lo[::-1]])))
            g["lid"].append(canvas_polygon(xs, up))
            g["lower_lid"].append(canvas_polygon(xs[2:-2], lo[2:-2]))
            g["blink"].append(canvas_polygon(xs, base_y + 0.8 * lo_shape))
        # brows: polygon x fixed, y = y0 - raise * w (canvas units)
        bt = np.linspace(0.0, 1.0, 9)
        bxs, bys = [], []
        for side, ex in ((-1, p["le_x"]), (1, p["re_x"])):
            x_in, x_out = ex - side * p["brow_len"] * 0.75, ex + side * p["brow_len"] * 1.05
            bx = x_in + (x_out - x_in) * bt
            by = ey - p["brow_gap"] - p["brow_arch"] * np.sin(np.pi * bt * 0.85) + p["brow_slant"] * bt
            th = p["brow_th"] * (1.0 - 0.55 * bt**1.5)
            bxs.append(to_canvas(np.concatenate([bx, bx[::-1]])))
            bys.append(to_canvas(np.concatenate([by - th / 2, (by + th / 2)[::-1]])))
        g["brow_xy"] = np.stack([np.stack(bxs), np.stack(bys)], axis=-1)  # (brow, point, xy) canvas units
        w = 0.6 + 0.4 * bt
        g["brow_w"] = np.concatenate([w, w[::-1]]) * SUPERSAMPLE
        # mouth shapes
        g["m_p06"] = (1.0 - t**2) ** 0.6
        g["m_p08"] = (1.0 - t**2) ** 0.8
        g["m_bow"] = 1.0 - 0.35 * np.exp(-((t / 0.18) ** 2))
        g["m_line"] = 1.0 - 3.0 * t**2
        self.g = g
        # the eye whites and lid lines do not change from image to image: bake them into the canvas
        im = writable_view(self.base)
        d = ImageDraw.Draw(im)
        for e in range(2):
            d.polygon(g["sclera"][e], fill=self.c["sclera"])
            d.line(g["lid"][e], fill=self.c["lid"], width=3)
            d.line(g["lower_lid"][e], fill=self.c["lower_lid"], width=1)
        if not SHARED_DRAW[0]:
            self.base = np.array(im)
        # per eye: a box around it and the pixels outside the eye opening (lid lines included), which are restored
        # from the canvas after the iris is drawn -- an exact clip of the iris to the opening
        opening = Image.new("L", (CANVAS_SIZE, CANVAS_SIZE), 0)
        do = ImageDraw.Draw(opening)
        for e in range(2):
            do.polygon(g["sclera"][e], fill=255)
            do.line(g["lid"][e], fill=0, width=3)
        opening_np = np.asarray(opening)
        g["eye_clip"] = []
        r = p["iris_radius"]
        hx = max(ew, GAZE_X * ew + r) + 2.0  # the iris never leaves these boxes (gaze is clipped to the eye)
        hy = max(eh * 1.6, GAZE_Y * eh + r) + 2.0
        for ex in (p["le_x"], p["re_x"]):
            x0, x1 = int(to_canvas(ex - hx)), int(to_canvas(ex + hx)) + 1
            y0, y1 = int(to_canvas(ey - hy)), int(to_canvas(ey + hy)) + 1
            outside = opening_np[y0:y1, x0:x1] == 0
            g["eye_clip"].append((slice(y0, y1), slice(x0, x1), np.ascontiguousarray(outside[..., None])))
        g["iris_r"] = p["iris_radius"] * SUPERSAMPLE
        g["pupil_r"] = p["iris_radius"] * 0.45 * SUPERSAMPLE
        g["glint_r"] = 0.55 * SUPERSAMPLE

    def mask_geometry(self) -> dict[str, Any]:
        g = self.g
        if "mask_poly" not in g:
            p = self.p
            cx, ax = p["face_cx"], p["face_ax"]
            top = p["nose_y"] - 7.0
            lx, ly = _lower_outline(p, top)
            xs = np.concatenate([[cx + ax * 0.95, cx, cx - ax * 0.95], (cx + (lx - cx) * 1.02)[::-1]])
            ys = np.concatenate([[top + 2, top - 1.5, top + 2], (ly + 1.5)[::-1]])
            g["mask_poly"] = canvas_polygon(xs, ys)
            bottom = p["face_cy"] + p["face_low"]
            pleats = [top + k * (bottom - top) for k in (0.3, 0.55)]
            g["mask_lines"] = [canvas_polygon([cx - ax * 0.6, cx + ax * 0.6], [y, y + 0.5]) for y in pleats]
            g["mask_straps"] = [canvas_polygon([cx + s * ax * 0.93, cx + s * ax * 1.02], [top + 3, p["ear_y"] - 4])
                                for s in (-1, 1)]
        return g



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


SHARED_DRAW = [_probe_shared_draw()]


def writable_view(arr: np.ndarray) -> Image.Image:
    """An RGBA Pillow image over ``arr`` (C, C, 4) uint8 that draws into ``arr`` where Pillow allows it."""
    if SHARED_DRAW[0]:
        im = Image.frombuffer("RGBA", (arr.shape[1], arr.shape[0]), arr, "raw", "RGBA", 0, 1)
        im.readonly = 0
        return im
    return Image.fromarray(arr, mode="RGBA")
