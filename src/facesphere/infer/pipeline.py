"""Embedding many files at the speed the model allows: decoding and detection run in a small thread pool ahead of
the model, crops are embedded ``batch_size`` at a time, and results come back per file, in input order, as soon as
the batch holding them is done (so a caller can print or search as it goes).

Decoding (Pillow), onnxruntime and OpenCV release the GIL, so ``workers`` threads prepare the next images while the
main thread runs the recogniser; ``benchmarks/embed_folder.py`` measures the gain (docs/benchmarks.md).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ..errors import DataError, InvalidOptionError, NoFaceError
from .crops import Prepared
from .faces import Face, FileFaces

__all__ = ["iter_file_faces", "embedding_dim", "DEFAULT_WORKERS"]

#: threads decoding and detecting ahead of the model
DEFAULT_WORKERS = 2


def _to_faces(prepared: list[Prepared]) -> list[Face]:
    faces = []
    for item in prepared:
        detection = item.detection
        faces.append(Face(box=None if detection is None else detection.box,
                          score=None if detection is None else float(detection.score),
                          landmarks=None if detection is None else detection.landmarks,
                          crop=item.crop, how=item.how))
    return faces


def iter_file_faces(paths: Sequence[str | Path], prepare: Callable[[Path], list[Prepared]],
                    embed: Callable[[list[np.ndarray]], np.ndarray], *, batch_size: int = 32,
                    workers: int = DEFAULT_WORKERS, skip_unreadable: bool = True, progress: bool = False,
                    desc: str = "embed", keep_crops: bool = False) -> Iterator[FileFaces]:
    """One :class:`FileFaces` per path, in input order, with every face's embedding set.

    ``prepare(path)`` reads a file and returns its crops (:class:`~facesphere.infer.crops.Prepared`; an empty list:
    no face, skipped); a :class:`~facesphere.errors.DataError` marks the file ``unreadable`` (raised instead when
    ``skip_unreadable`` is False), a :class:`~facesphere.errors.NoFaceError` (the ``fail`` policy) always stops.
    ``embed(crops)`` returns their L2-normalised embeddings ``(N, D)``. ``workers``: preparing threads (0: all in the
    calling thread). ``keep_crops``: leave the aligned crops on the faces (dropped after embedding otherwise).
    """
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise InvalidOptionError(f"batch size must be >= 1, got {batch_size!r}")
    if isinstance(workers, bool) or int(workers) < 0:
        raise InvalidOptionError(f"workers must be >= 0, got {workers!r}")
    files = [Path(p) for p in paths]
    bar = tqdm(total=len(files), desc=desc, unit="img", dynamic_ncols=True, leave=False,
               disable=not progress or len(files) < 2)
    waiting: list[FileFaces] = []
    count = 0

    def run(path: Path) -> FileFaces:
        try:
            prepared = prepare(path)
        except NoFaceError:
            raise
        except DataError as error:
            if not skip_unreadable:
                raise
            return FileFaces(path, status="unreadable", message=str(error))
        if not prepared:
            return FileFaces(path, status="no_face")
        return FileFaces(path, faces=_to_faces(prepared))

    def flush() -> Iterator[FileFaces]:
        nonlocal count
        crops = [face.crop for item in waiting for face in item.faces]
        if crops:
            features = embed(crops)
            row = 0
            for item in waiting:
                for face in item.faces:
                    face.embedding = features[row]
                    if not keep_crops:
                        face.crop = None
                    row += 1
        done = list(waiting)
        waiting.clear()
        count = 0
        for item in done:
            bar.update(1)
            yield item

    def consume(item: FileFaces) -> Iterator[FileFaces]:
        nonlocal count
        waiting.append(item)
        count += len(item.faces)
        if count >= int(batch_size):
            yield from flush()

    try:
        if int(workers) == 0:
            for path in files:
                yield from consume(run(path))
        else:
            window = max(int(batch_size), 1) + 2 * int(workers)
            with ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="facesphere-prepare") as pool:
                queue: deque[Future[FileFaces]] = deque()
                position = 0
                try:
                    while queue or position < len(files):
                        while position < len(files) and len(queue) < window:
                            queue.append(pool.submit(run, files[position]))
                            position += 1
                        yield from consume(queue.popleft().result())
                finally:
                    for future in queue:
                        future.cancel()
        yield from flush()
    finally:
        bar.close()


def embedding_dim(items: list[FileFaces]) -> int:
    """The embedding size seen in ``items`` (0 when none was embedded)."""
    for item in items:
        for face in item.faces:
            if face.embedding is not None:
                return int(np.asarray(face.embedding).shape[-1])
    return 0
