"""What tests share besides fixtures: where the shared real data lives, skipping cleanly without it, tiny configs.

The real data and public models sit beside the checkout in ``../shared`` (not in a user's clone); the environment
variable ``FACESPHERE_SHARED`` points elsewhere (``FACESPHERE_SHARED=/nonexistent`` runs the suite as a user would,
every test that needs the data skipping). Tests reach it only through :data:`SHARED` / :func:`require`.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facesphere
from facesphere.data.image import read_image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESPHERE_SHARED") or REPO.parent / "shared")
DATA = SHARED / "data"
MODELS = SHARED / "models"

#: the facesphere package under test (the one this process imported), for child processes
PACKAGE = Path(facesphere.__file__).resolve().parent

#: Starts a child's code: imports ``facesphere.<sub>`` modules without running ``facesphere/__init__.py`` (which
#: imports torch, seconds per process), for children that need only the data readers.
LIGHT = (
    "import sys, types\n"
    "_package = types.ModuleType('facesphere')\n"
    f"_package.__path__ = [{str(PACKAGE)!r}]\n"
    "sys.modules['facesphere'] = _package\n"
)


def run_isolated(code: str, *args: str, light: bool = False, timeout: float = 120,
                 memory_mb: int | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` (with ``args`` as ``sys.argv[1:]``) in a fresh Python process: a native crash, a hang or a huge
    allocation then fails the calling test instead of killing the suite. ``memory_mb`` caps the child's address
    space (``RLIMIT_AS``): an allocation beyond it is a ``MemoryError`` there. ``light`` starts with :data:`LIGHT`.
    A child still running after ``timeout`` seconds fails the test."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent),
                                                                      os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}

    # the child caps itself first thing (no preexec_fn: it is not safe in a parent that runs threads)
    limit = "" if memory_mb is None else (
        f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({memory_mb << 20}, {memory_mb << 20}))\n")
    try:
        return subprocess.run([sys.executable, "-c", limit + (LIGHT if light else "") + code, *args],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the child process was still running after {timeout} s (a hang?):\n"
                    f"{(error.stderr or b'')[-2000:]!r}")


class _FullDiskFile:
    """A file opened for writing on a disk with no space left: every write fails with ``ENOSPC``."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    writelines = write

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)


def simulate_full_disk(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """From now on (until ``monkeypatch`` undoes it), every file opened for writing under ``folder`` through Python's
    ``open`` / ``io.open`` / ``Path.open`` fails at its first write with ``ENOSPC`` ("No space left on device"), as
    on a full disk. Opening itself succeeds (and truncates, as on a real disk)."""
    import builtins
    import io

    real_open = io.open
    root = str(Path(folder).resolve())

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        writing = any(flag in mode for flag in "wax+")
        if writing and isinstance(file, (str, os.PathLike)) and os.path.abspath(os.fspath(file)).startswith(root):
            return _FullDiskFile(handle)
        return handle

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)


#: a tiny training config for fast CPU tests (sfnet4, 32-d, 12 synthetic classes)
TINY = [
    "--data.synthetic_identities", "12", "--data.synthetic_images_per_identity", "8",
    "--data.synthetic_val_pairs_per_fold", "4", "--data.batch_size", "16", "--data.num_workers", "0",
    "--model.backbone", "sfnet4", "--model.embed_dim", "32", "--model.channels", "[8, 16, 16, 32]",
    "--optim.warmup_steps", "2", "--train.log_every", "2", "--train.threads", "1", "--train.plots", "false",
]


def require(*paths: Path, modules: tuple[str, ...] = ()) -> None:
    """Skip the calling test unless every module imports and every shared file or folder exists."""
    for module in modules:
        pytest.importorskip(module)
    for path in paths:
        if not Path(path).exists():
            pytest.skip(f"{path} not present (shared data / models)")


def _spread(folder: Path, count: int) -> list[np.ndarray]:
    """``count`` images spread evenly over ``folder/*/*.jpg`` (sorted), as uint8 RGB; skips when absent."""
    require(folder)
    paths = sorted(folder.glob("*/*.jpg"))
    if not paths:
        pytest.skip(f"no images in {folder}")
    step = max(1, len(paths) // count)
    return [read_image(p) for p in paths[::step][:count]]


def glint_crops(count: int) -> list[np.ndarray]:
    """Aligned 112x112 Glint faces from the shared sample (skips the test when absent)."""
    return _spread(DATA / "glint_sample" / "images", count)


def lfw_photos(count: int) -> list[np.ndarray]:
    """Unaligned 250x250 LFW photos from the shared copy (skips the test when absent)."""
    return _spread(DATA / "lfw" / "images", count)


def pad_image(image: np.ndarray, margin: int) -> np.ndarray:
    """``image`` on a black canvas with ``margin`` pixels on every side."""
    out = np.zeros((image.shape[0] + 2 * margin, image.shape[1] + 2 * margin, 3), np.uint8)
    out[margin:margin + image.shape[0], margin:margin + image.shape[1]] = image
    return out


#: LFW people whose first photos make the group photo of :func:`group_photo` (one face each, central crop)
GROUP_PEOPLE = ("Aaron_Peirsol", "Aaron_Sorkin", "Abdullah_Gul", "Adrien_Brody", "Ali_Naimi", "Abdoulaye_Wade")


def group_photo(people: tuple[str, ...] = GROUP_PEOPLE) -> np.ndarray:
    """A group photo: the middle of each person's first LFW photo (150x130, one face) pasted on a grey canvas, three
    to a row (uint8 RGB). Skips the test when the shared LFW copy is absent."""
    lfw = DATA / "lfw" / "images"
    require(lfw)
    crops = []
    for name in people:
        photos = sorted((lfw / name).glob("*.jpg"))
        if not photos:
            pytest.skip(f"{lfw / name} not present")
        crops.append(read_image(photos[0])[50:200, 60:190])
    rows = -(-len(crops) // 3)
    canvas = np.full((30 + 200 * rows, 760, 3), 200, np.uint8)
    for number, crop in enumerate(crops):
        row, column = divmod(number, 3)
        canvas[30 + 200 * row:180 + 200 * row, 30 + 250 * column:160 + 250 * column] = crop
    return canvas
