"""Pictures a person checks at a glance: a photo with every face's box, its 5 landmarks and a label (the identity
and score after a gallery search, else the detector's score).

Colours: green box = a known identity, red = unknown (best score under the threshold), yellow = detected (no
gallery). Landmarks: left eye, right eye (blue / cyan), nose (magenta), mouth corners (orange / yellow).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .faces import Face

__all__ = ["draw_faces", "face_label"]

KNOWN, UNKNOWN, DETECTED = (40, 200, 60), (230, 40, 40), (250, 210, 0)
LANDMARK_COLOURS = ((30, 110, 255), (0, 220, 255), (230, 0, 230), (255, 140, 0), (255, 240, 0))


def face_label(face: Face) -> str:
    """``alice 0.72`` / ``unknown 0.21`` after a search (the best match is in the JSON), else the detector's score
    ``0.98``."""
    if face.match_score is not None:
        return f"{face.identity or 'unknown'} {face.match_score:.2f}"
    return "" if face.score is None else f"{face.score:.2f}"


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def draw_faces(image: np.ndarray, faces: Sequence[Face], labels: Sequence[str] | None = None) -> Image.Image:
    """``image`` (uint8 RGB or grey) as a PIL RGB image with every face's box, landmarks and label drawn
    (``labels``: one per face; default :func:`face_label`). Faces without a box (not detected) are not drawn."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    picture = Image.fromarray(np.ascontiguousarray(array[:, :, :3])).convert("RGB")
    pen = ImageDraw.Draw(picture)
    height, width = array.shape[:2]
    line = max(2, int(round(max(height, width) / 320)))
    font = _font(max(11, int(round(max(height, width) / 45))))
    texts = list(labels) if labels is not None else [face_label(face) for face in faces]
    for face, text in zip(faces, texts):
        if face.box is None:
            continue
        colour = DETECTED if face.match_score is None else (KNOWN if face.identity is not None else UNKNOWN)
        x1, y1, x2, y2 = (float(v) for v in face.box)
        pen.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        if face.landmarks is not None:
            radius = max(2.0, line * 1.2)
            for (x, y), dot in zip(np.asarray(face.landmarks, dtype=np.float64), LANDMARK_COLOURS):
                pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=dot)
        if text:
            left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
            text_w, text_h = right - left, bottom - top
            ty = y1 - text_h - 2 * line if y1 - text_h - 2 * line >= 0 else y2 + line
            tx = min(max(0.0, x1), max(0.0, width - text_w - 2 * line))
            pen.rectangle([tx, ty, tx + text_w + 2 * line, ty + text_h + 2 * line], fill=colour)
            pen.text((tx + line - left, ty + line - top), text, fill=(0, 0, 0), font=font)
    return picture
