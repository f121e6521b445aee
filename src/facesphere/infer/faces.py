"""Every face in a photo: :class:`Face` (box, score, 5 landmarks, aligned crop, embedding, identity) and the
per-file results of embedding a folder (:class:`FileFaces`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Face", "FileFaces"]


def _round(values: Any, digits: int = 2) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


@dataclass(eq=False)
class Face:
    """One face of a photo.

    ``box``: float64 ``(4,)`` x1, y1, x2, y2 in the photo's pixels and ``score`` the detector's confidence, and
    ``landmarks`` float64 ``(5, 2)`` (left eye, right eye, nose, left and right mouth corner as seen in the image) —
    ``None`` when the face was not detected (an aligned crop given as such, or the no-face policy's crop; ``how``
    says which: ``aligned``, ``detected``, ``crop``, ``resize``). ``crop``: the aligned uint8 RGB model input.
    ``embedding``: float32 ``(D,)`` L2-normalised, when asked for. ``identity`` / ``match_score``: set by a gallery
    search (``identity`` None: unknown, the best score under the threshold).
    """

    box: np.ndarray | None
    score: float | None
    landmarks: np.ndarray | None
    crop: np.ndarray | None = field(default=None, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)
    how: str = "detected"
    identity: str | None = None
    match_score: float | None = None
    best_match: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: box, score, landmarks (2 decimals), how; identity and scores after a search."""
        out: dict[str, Any] = {
            "box": None if self.box is None else _round(self.box),
            "score": None if self.score is None else round(float(self.score), 4),
            "landmarks": None if self.landmarks is None else _round(self.landmarks),
        }
        if self.how != "detected":
            out["how"] = self.how
        if self.match_score is not None:
            out["identity"] = self.identity
            out["match_score"] = round(float(self.match_score), 6)
            if self.identity is None and self.best_match is not None:
                out["best_match"] = self.best_match
        return out


@dataclass
class FileFaces:
    """What embedding one file gave, in input order: ``faces`` (one for a single-face choice, every face with
    ``all_faces``; embeddings set), or ``status`` ``no_face`` (nothing found and the no-face policy skipped it) /
    ``unreadable`` (``message`` says why)."""

    path: Path
    faces: list[Face] = field(default_factory=list)
    status: str = "ok"
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"
