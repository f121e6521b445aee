"""What a synthetic identity is: the configuration, the generator keys, and each identity's random parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InvalidOptionError
from ..align import ARCFACE_112x112

#: ArcFace 112x112 five-point template (docs/methods.md §9); the one definition is facesphere.data.align's
ARCFACE_TEMPLATE_112 = ARCFACE_112x112

#: Evaluation identity ``k`` is generator identity ``EVAL_IDENTITY_OFFSET + k``; training identities stay below it.
EVAL_IDENTITY_OFFSET = 1_000_000_000
#: :func:`synthetic_identification` uses evaluation identities from here on, so it never shares people with the pairs.
IDENTIFICATION_OFFSET = 500_000_000

# Leading words of the generator keys: distinct tags keep the identity, image, label-noise and pair streams apart
# (a fixed-length key with the tag first, so no two streams can produce the same seed material).
_TAG_IDENTITY, TAG_IMAGE, TAG_NOISE, TAG_PAIRS = 0x1D, 0x1A, 0x0E, 0x9A

SUPERSAMPLE = 2  # super-sampling factor of the canonical canvas
CANVAS_MARGIN = 16.0  # canonical units of canvas beyond each side of the 112 x 112 frame
CANVAS_SIZE = int(round((112 + 2 * CANVAS_MARGIN) * SUPERSAMPLE))  # 288 pixels
POSE_CENTRE = (56.0, 60.0)  # rotation / scaling centre of the pose (canonical units)
_MAX_SEED = 2**32
MAX_IDENTITY = 2**31


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


def check_nonneg_int(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidOptionError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)



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
N_FRECKLES = 40
N_MOLES = 3
TEXTURE_GRID = 6  # side of the identity's low-frequency skin-texture grid


def _pick(table: list[tuple[float, tuple[int, int, int]]], u: float) -> np.ndarray:
    for cum, rgb in table:
        if u <= cum:
            return np.array(rgb, dtype=np.float64)
    return np.array(table[-1][1], dtype=np.float64)


def identity_params(seed: int, identity: int, spread: float) -> dict[str, Any]:
    """The parameters of one identity: floats (canonical 112-frame pixels, RGB 0..255) and a few arrays."""
    rng = np.random.default_rng([_TAG_IDENTITY, seed, identity])
    z = np.clip(rng.standard_normal(48), -2.5, 2.5) * spread
    u = rng.random(16)
    tex = np.clip(rng.standard_normal((TEXTURE_GRID, TEXTURE_GRID)), -2.5, 2.5) * spread
    freckles = rng.random((N_FRECKLES, 3))
    moles = rng.random((N_MOLES, 4))
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


def params_vector(p: dict[str, Any]) -> np.ndarray:
    scalars = np.asarray([v for v in p.values() if isinstance(v, float)], dtype=np.float64)
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in p.values() if isinstance(v, np.ndarray)]
    return np.concatenate([scalars, *arrays])
