"""Writing synthetic identities as an image folder (``facesphere data synth``) and a contact sheet to look at."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import InvalidOptionError
from ..image import image_grid
from .dataset import noisy_labels
from .identity import SyntheticConfig, check_nonneg_int, identity_name
from .render import SyntheticFaces

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
    workers = check_nonneg_int(workers, "workers", 0)
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
    num_identities = check_nonneg_int(num_identities, "num_identities", 1)
    images_per_identity = check_nonneg_int(images_per_identity, "images_per_identity", 1)
    faces = SyntheticFaces(SyntheticConfig(seed=seed, difficulty=difficulty, cache_size=1))
    sheet = image_grid([([faces.render(r, 0, difficulty=0.0)] if canonical_column else [])
                        + [faces.render(r, k) for k in range(images_per_identity)] for r in range(num_identities)],
                       gap=gap)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out, format="PNG", optimize=True)
    return out
