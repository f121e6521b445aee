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
nose tip and mouth corners sit near the ArcFace 112x112 five-point template (docs/methods.md §9) scaled by
``image_size / 112``.

How it is fast (~1,000 images/s a core): each identity's canonical layers (skin, texture, ears, nose, hair, beard) are
drawn once on a 2x super-sampled RGBA canvas and cached together with its pre-computed feature geometry; per image
only the expression-dependent parts (eyes, brows, mouth) and the occluders are drawn on a copy with Pillow (C), the
canvas is sampled through the inverse pose map with two ``np.take`` gathers (2-tap super-sampling), and shading,
background, blur and noise are a handful of planar numpy operations on the output grid.

Training identities are ``0 .. num_identities - 1``; held-out evaluation identities are
``EVAL_IDENTITY_OFFSET + k`` -- other generator keys, so evaluation people never appear in training.
"""

from .dataset import SyntheticFaceDataset, noisy_labels
from .evalsets import pixel_baseline_accuracy, synthetic_identification, synthetic_pairs
from .folder import contact_sheet, write_synthetic_folder
from .identity import (
    ARCFACE_TEMPLATE_112,
    EVAL_IDENTITY_OFFSET,
    IDENTIFICATION_OFFSET,
    SyntheticConfig,
    identity_name,
)
from .render import NUISANCE_MAGNITUDES, SyntheticFaces

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
