"""Seeded mutation fuzzing of every reader that takes a user's file (docs/security.md, "How it is tested").

A *reader* here is one of facesphere's entry points for a file format, with a small valid sample of that format.
A *mutant* is the sample with one to four seeded mutations (bit flips, "interesting" 32-bit integers and floats,
inserted, deleted, duplicated or truncated bytes; for text files also tokens such as ``-1``, ``1e309``, ``nan``,
``../x``, YAML anchors and tags, and shuffled lines). Every mutant must end in one of two outcomes:

* ``read`` -- the reader returned something of the right shape (and, where the format allows a check, the right
  labels: a RecordIO record silently moved to another class is a failure, ``relabelled``);
* ``refused`` -- a :class:`~facesphere.errors.FaceSphereError` whose message names the file;

never ``unnamed`` (a FaceSphereError that does not name the file), ``raw`` (any other exception), a signal, a hang or
a huge allocation. ``data verify`` is documented never to raise: for it any exception is a failure (``raised``), and a
report of "OK" on a relabelled set too (``verify_ok_relabelled``).

The readers run in a child process (``python -m tests.fuzzing READER SEED COUNT WORKDIR``, which prints one JSON line
of counts), started by :func:`fuzz` under a memory limit and a timeout, so that a native crash, a hang or an
allocation beyond the limit fails the run instead of the caller. The suite runs a few hundred mutants per reader
(``tests/*/test_fuzz*.py``); ``benchmarks/fuzz.py`` runs thousands and prints the counts.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

GOOD = ("read", "refused")

INTERESTING_INTS = [0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x1FFFFFFF, 0x20000000, 0x7FFFFFFF,
                    0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
INTERESTING_FLOATS = [math.nan, math.inf, -math.inf, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 7.0, 1e30, -1e30, 2.0 ** 24 + 1,
                      2.0 ** 31, 2.0 ** 62, 1e-30]
TEXT_TOKENS = ["-1", "0", "1", "2", "7", "1e309", "-1e309", "nan", "inf", "-inf", "1e6", "5e-4", "0.5",
               "99999999999999999999999", "9223372036854775807", "-9223372036854775809", "0x10", "1_0", "",
               " ", "\t", "\n", "\r\n", "../x", "../../x", "/etc/passwd", "x/../../x", "..", ".", "é", "\x00", "\xff",
               "[", "]", "{", "}", ",", ":", ": ", "- ", "&a", "*a", "&a [1, *a]", "!!python/object/apply:os.system",
               "!!binary", "'", '"', "~", "null", "true", "false", "2023-13-45", "<<: *a", "#", "%YAML 1.1",
               "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "a" * 300]


# ------------------------------------------------------------------------------------------------------------------
# mutations


def _bytes_mutation(data: bytearray, rng: random.Random) -> None:
    n = len(data)
    op = rng.randrange(9)
    if n == 0 or op == 0:  # insert random bytes
        at = rng.randint(0, n)
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 2, 4, 8, 32))))
    elif op == 1:  # flip a bit
        at = rng.randrange(n)
        data[at] ^= 1 << rng.randrange(8)
    elif op == 2:  # an interesting byte
        data[rng.randrange(n)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
    elif op in (3, 4) and n >= 4:  # an interesting 32-bit integer or float, little or big endian, often aligned
        at = rng.randrange(n - 3)
        if rng.random() < 0.7:
            at -= at % 4
        order = rng.choice("<>")
        value = (struct.pack(order + "I", rng.choice(INTERESTING_INTS)) if op == 3
                 else struct.pack(order + "f", rng.choice(INTERESTING_FLOATS)))
        data[at:at + 4] = value
    elif op == 5:  # delete a range
        at = rng.randrange(n)
        del data[at:at + rng.choice((1, 2, 4, 8, 64, n))]
    elif op == 6:  # duplicate a range
        at = rng.randrange(n)
        chunk = data[at:at + rng.choice((1, 4, 16, 256))]
        where = rng.randint(0, n)
        data[where:where] = chunk
    elif op == 7:  # truncate
        del data[rng.randrange(n):]
    else:  # a random byte
        data[rng.randrange(n)] = rng.randrange(256)


def _text_mutation(data: bytearray, rng: random.Random) -> None:
    text = data.decode("utf-8", errors="surrogateescape")
    lines = text.split("\n")
    op = rng.randrange(6)
    if op == 0 and text:  # replace a token
        tokens = [(m_start, m_end) for m_start, m_end in _token_spans(text)]
        if tokens:
            start, end = rng.choice(tokens)
            text = text[:start] + rng.choice(TEXT_TOKENS) + text[end:]
    elif op == 1:  # insert a token
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(TEXT_TOKENS) + text[at:]
    elif op == 2 and len(lines) > 1:  # delete a line
        del lines[rng.randrange(len(lines))]
        text = "\n".join(lines)
    elif op == 3 and lines:  # duplicate a line
        at = rng.randrange(len(lines))
        lines.insert(rng.randrange(len(lines) + 1), lines[at])
        text = "\n".join(lines)
    elif op == 4 and len(lines) > 1:  # swap two lines
        a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[a], lines[b] = lines[b], lines[a]
        text = "\n".join(lines)
    else:
        raw = bytearray(text.encode("utf-8", errors="surrogateescape"))
        _bytes_mutation(raw, rng)
        data[:] = raw
        return
    data[:] = text.encode("utf-8", errors="surrogateescape")


def _token_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, ch in enumerate(text + " "):
        if ch.isspace() or ch in ",:[]{}":
            if start is not None:
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    return spans


def mutate(data: bytes, rng: random.Random, *, text: bool = False) -> bytes:
    """One to four seeded mutations of ``data`` (text-aware ones too when ``text``)."""
    out = bytearray(data)
    for _ in range(1 if rng.random() < 0.6 else rng.randint(2, 4)):
        (_text_mutation if text and rng.random() < 0.7 else _bytes_mutation)(out, rng)
    return bytes(out)


# ------------------------------------------------------------------------------------------------------------------
# small valid samples


def _png(seed: int, size: tuple[int, int] = (12, 10), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode).save(buffer, format=fmt)
    return buffer.getvalue()


class Raised(Exception):
    """A reader documented never to raise (``data verify``) raised ``original``."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original


class Reader:
    """One reader: its sample files (``setup``), which of them to mutate, and how to read them (``run``)."""

    name = ""
    text_files: tuple[str, ...] = ()  # mutated with text-aware mutations too
    needs_torch = True

    def setup(self, base: Path) -> dict[str, bytes]:
        """Write the sample under ``base`` and return the files to mutate (relative path -> bytes)."""
        raise NotImplementedError

    def targets(self, files: dict[str, bytes]) -> list[str]:
        return sorted(files)

    def run(self, base: Path) -> str:
        """Read the (mutated) sample; return an outcome (``"read"`` or a failure's name) or raise."""
        raise NotImplementedError

    def names(self, base: Path) -> list[str]:
        """Paths an error message may name (any one will do)."""
        return [str(base / name) for name in self.targets(self._files)]

    _files: dict[str, bytes] = {}


class RecordIOReader(Reader):
    """InsightFace RecordIO (``.rec``, ``.idx``, ``property``) through :class:`RecordIOFaceSet`."""

    name = "recordio"
    text_files = ("train.idx", "property")
    needs_torch = False

    def setup(self, base: Path) -> dict[str, bytes]:
        from facesphere.data.recordio import pack_folder

        source = base.parent / f"{base.name}-images"
        for c, count in enumerate((2, 3, 1)):
            for i in range(count):
                (source / f"id{c}").mkdir(parents=True, exist_ok=True)
                (source / f"id{c}" / f"{i}.png").write_bytes(_png(10 * c + i))
        pack_folder(source, base / "train", progress=False)
        self.labels = [0, 0, 1, 1, 1, 2]
        return {name: (base / name).read_bytes() for name in ("train.rec", "train.idx", "property")}

    def targets(self, files: dict[str, bytes]) -> list[str]:
        return ["train.rec"] * 6 + ["train.idx"] * 2 + ["property"]

    def run(self, base: Path) -> str:
        from facesphere.data.recordio import RecordIOFaceSet

        with RecordIOFaceSet(base / "train") as faceset:
            labels = faceset.labels.tolist()
            faceset.num_classes, faceset.image_size, faceset.class_ranges
            read = [faceset.read(i)[0] for i in range(len(faceset))]
        return "read" if labels == read == self.labels else "relabelled"


class VerifyRecordIOReader(RecordIOReader):
    """``data verify rec:`` on the same mutants: never raises; never "OK" on a relabelled set."""

    name = "verify_rec"
    needs_torch = True

    def run(self, base: Path) -> str:
        from facesphere.data.recordio import RecordIOFaceSet
        from facesphere.data.verify import verify_dataset

        try:
            report = verify_dataset(f"rec:{base / 'train'}", progress=False)
        except Exception as error:  # documented never to raise: any exception is the failure
            raise Raised(error) from error
        if not report.ok:
            return "refused"
        try:
            with RecordIOFaceSet(base / "train") as faceset:  # the labels record by record, no cross-checks
                read = [faceset.read(i)[0] for i in range(len(faceset))]
        except Exception:  # noqa: BLE001
            return "verify_ok_unreadable"
        return "read" if read == self.labels else "verify_ok_relabelled"


class BinReader(Reader):
    """Verification ``.bin`` files through :func:`read_bin`, then ``data verify bin:`` (never raises)."""

    name = "bin"

    def setup(self, base: Path) -> dict[str, bytes]:
        import pickle

        import numpy as np

        images = [_png(i, (8, 8)) for i in range(4)]
        flags = [True, False]
        files = {
            "bytes4.bin": pickle.dumps((images, flags), protocol=4),
            "numpy2.bin": pickle.dumps(([np.frombuffer(b, np.uint8) for b in images], np.array(flags)), protocol=2),
            "scalars2.bin": pickle.dumps((images, [np.bool_(True), np.int64(0)]), protocol=2),
            "numpy5.bin": pickle.dumps(([np.frombuffer(b, np.uint8) for b in images], np.array(flags)), protocol=5),
        }
        for name, data in files.items():
            (base / name).write_bytes(data)
        return files

    def run(self, base: Path) -> str:
        import numpy as np

        from facesphere.data.binfile import read_bin
        from facesphere.data.verify import verify_dataset

        path = base / self.current
        try:
            verify_dataset(f"bin:{path}", progress=False)
        except Exception as error:  # documented never to raise: any exception is the failure
            raise Raised(error) from error
        images, issame = read_bin(path)
        ok = (isinstance(images, list) and all(type(b) is bytes for b in images) and isinstance(issame, np.ndarray)
              and issame.dtype == np.bool_ and len(images) == 2 * len(issame))
        return "read" if ok else "wrong_types"

    def names(self, base: Path) -> list[str]:
        return [str(base / self.current)]


class LFWPairsReader(Reader):
    """LFW ``pairs.txt`` through :func:`read_lfw_pairs` (names are confined to the images folder)."""

    name = "lfw_pairs"
    text_files = ("lfw/pairs.txt",)

    def setup(self, base: Path) -> dict[str, bytes]:
        images = base / "lfw" / "images"
        for person, numbers in (("Aa", (1, 2)), ("Bb", (1, 2)), ("Cc", (1,))):
            (images / person).mkdir(parents=True, exist_ok=True)
            for k in numbers:
                (images / person / f"{person}_{k:04d}.jpg").write_bytes(_png(k, (8, 8), fmt="JPEG"))
        for outside in (base / "lfw" / "x_0001.jpg", base / "x_0001.jpg", base / "lfw" / "x_0002.jpg"):
            outside.write_bytes(_png(9, (8, 8), fmt="JPEG"))  # where "../x" would lead
        pairs = b"1\t2\nAa\t1\t2\nBb\t1\t2\nAa\t1\tBb\t1\nCc\t1\tAa\t2\n"
        (base / "lfw" / "pairs.txt").write_bytes(pairs)
        return {"lfw/pairs.txt": pairs}

    def run(self, base: Path) -> str:
        from facesphere.data.pairs import read_lfw_pairs
        from facesphere.data.verify import verify_dataset

        try:
            verify_dataset(f"lfw:{base / 'lfw'}", progress=False)
        except Exception as error:  # documented never to raise: any exception is the failure
            raise Raised(error) from error
        root = base / "lfw" / "images"
        pairs = read_lfw_pairs(base / "lfw" / "pairs.txt", root)
        inside = all(Path(os.path.realpath(p)).is_relative_to(root.resolve()) for p in pairs.paths1 + pairs.paths2)
        return "read" if inside else "escaped"


class PairListReader(Reader):
    """OpenSphere pair lists through :func:`read_pair_list` (paths by design), then ``data verify pairs:``."""

    name = "pair_list"
    text_files = ("pairs.txt",)

    def setup(self, base: Path) -> dict[str, bytes]:
        for name in ("a", "b", "c"):
            (base / "img").mkdir(exist_ok=True)
            (base / "img" / f"{name}.jpg").write_bytes(_png(ord(name), (8, 8), fmt="JPEG"))
        text = b"# label path0 path1\n1 img/a.jpg img/b.jpg\n0 img/a.jpg img/c.jpg\n1 img/b.jpg img/b.jpg\n"
        (base / "pairs.txt").write_bytes(text)
        return {"pairs.txt": text}

    def run(self, base: Path) -> str:
        from facesphere.data.pairs import read_pair_list
        from facesphere.data.verify import verify_dataset

        try:
            verify_dataset(f"pairs:{base / 'pairs.txt'}", progress=False)
        except Exception as error:  # documented never to raise: any exception is the failure
            raise Raised(error) from error
        pairs = read_pair_list(base / "pairs.txt", base)
        return "read" if len(pairs.paths1) == len(pairs.issame) > 0 else "wrong_types"


CONFIG_SAMPLE = b"""# a training config
data:
  train: synthetic
  val: [synthetic]
  image_size: [112, 112]
  batch_size: 64
  flip: true
  crop_scale: 0.9
  exclude: []
model:
  backbone: sfnet4
  embed_dim: 128
  channels: [16, 32, 64, 128]
head:
  name: arcface
  s: 64.0
  m: 0.5
optim:
  lr: 0.1
  weight_decay: 5e-4
  milestones: [0.6, 0.85]
  betas: [0.9, 0.999]
train:
  steps: 600
  seed: 0
  log_every: 20
"""


class ConfigReader(Reader):
    """YAML configs through :func:`load_config`."""

    name = "config"
    text_files = ("config.yaml",)

    def setup(self, base: Path) -> dict[str, bytes]:
        (base / "config.yaml").write_bytes(CONFIG_SAMPLE)
        return {"config.yaml": CONFIG_SAMPLE}

    def run(self, base: Path) -> str:
        from facesphere.run.config import Config, load_config

        return "read" if isinstance(load_config(base / "config.yaml"), Config) else "wrong_types"


class ImageReader(Reader):
    """Encoded images (PNG, JPEG, GIF, BMP, TIFF, WebP, PGM) through :func:`read_image`."""

    name = "image"
    needs_torch = False

    def setup(self, base: Path) -> dict[str, bytes]:
        files = {"a.png": _png(1), "b.jpg": _png(2, fmt="JPEG"), "c.gif": _png(3, fmt="GIF"),
                 "d.bmp": _png(4, fmt="BMP"), "e.tif": _png(5, fmt="TIFF"), "f.webp": _png(6, fmt="WEBP"),
                 "g.pgm": _png(7, mode="L", fmt="PPM"), "h.png": _png(8, mode="L")}
        for name, data in files.items():
            (base / name).write_bytes(data)
        return files

    def run(self, base: Path) -> str:
        import numpy as np

        from facesphere.data.image import read_image

        image = read_image(base / self.current)
        ok = image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        return "read" if ok else "wrong_types"

    def names(self, base: Path) -> list[str]:
        return [str(base / self.current)]


class OnnxReader(Reader):
    """ONNX recognisers through :func:`load_embedder`: the graph mutated, and the external-data path it names."""

    name = "onnx"

    def setup(self, base: Path) -> dict[str, bytes]:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        def model(weight: TensorProto) -> bytes:
            graph = helper.make_graph(
                [helper.make_node("Conv", ["input", "W"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
                 helper.make_node("Flatten", ["p"], ["embedding"])], "g",
                [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
                [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 2])], [weight])
            proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            proto.ir_version = 8
            return proto.SerializeToString()

        def external(location: str) -> bytes:
            tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2, 3, 1, 1],
                                 data_location=TensorProto.EXTERNAL)
            for key, value in {"location": location, "offset": "0", "length": "24"}.items():
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            return model(tensor)

        weights = np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1)
        (base / "model").mkdir()
        (base / "model" / "w.bin").write_bytes(weights.tobytes())
        (base / "secret.bin").write_bytes(weights.tobytes())
        (base / "model" / "link.bin").symlink_to(base / "secret.bin")
        # the external-data path itself, each a whole valid model: inside the folder, out of it with ../, absolute,
        # through a symbolic link, a device, missing
        locations = ["w.bin", "../secret.bin", "link.bin", str(base / "secret.bin"), "sub/../w.bin",
                     "sub/../../secret.bin", "..", "", "missing.bin", "/dev/zero", "./w.bin", "model/../w.bin",
                     "w.bin/../../secret.bin", "../model/w.bin", "/etc/passwd"]
        self.variants = [external(location) for location in locations]
        files = {"model/plain.onnx": model(numpy_helper.from_array(weights, "W")),
                 "model/external.onnx": self.variants[0]}
        for name, data in files.items():
            (base / name).write_bytes(data)
        return files

    def mutate(self, name: str, data: bytes, rng: random.Random) -> bytes:
        if name.endswith("external.onnx") and rng.random() < 0.5:
            return rng.choice(self.variants)
        return mutate(data, rng)

    def run(self, base: Path) -> str:
        from facesphere.infer.embedders import Embedder, load_embedder

        embedder = load_embedder(base / self.current, input_size=(4, 4), backend=self.backend)
        return "read" if isinstance(embedder, Embedder) else "wrong_types"

    def names(self, base: Path) -> list[str]:
        return [str(base / self.current)]

    backend = "auto"


READERS: dict[str, Callable[[], Reader]] = {
    cls.name: cls for cls in (RecordIOReader, VerifyRecordIOReader, BinReader, LFWPairsReader, PairListReader,
                              ConfigReader, ImageReader, OnnxReader)
}


# ------------------------------------------------------------------------------------------------------------------
# the child: run COUNT mutants of READER


def child(reader_name: str, seed: int, count: int, workdir: Path) -> dict[str, Any]:
    import resource
    import warnings

    from facesphere.errors import FaceSphereError

    memory_mb = int(os.environ.get("FACESPHERE_FUZZ_MEMORY_MB", "0"))
    if memory_mb:  # set here, not by the parent's preexec_fn (unsafe in a parent that runs threads)
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))

    warnings.simplefilter("ignore")  # Pillow's and onnxruntime's warnings about the mutants
    reader = READERS[reader_name]()
    base = workdir / "sample"
    base.mkdir(parents=True, exist_ok=True)
    files = reader.setup(base)
    reader._files = files
    targets = reader.targets(files)
    counts: Counter[str] = Counter()
    examples: dict[str, dict[str, Any]] = {}
    progress = workdir / "progress"
    previous: str | None = None
    for index in range(count):
        rng = random.Random(f"{reader_name}:{seed}:{index}")
        name = rng.choice(targets)
        reader.current = name
        if hasattr(reader, "mutate"):
            mutated = reader.mutate(name, files[name], rng)
        else:
            mutated = mutate(files[name], rng, text=name in reader.text_files)
        if previous is not None and previous != name:
            (base / previous).write_bytes(files[previous])  # the last mutant's file back to the sample
        (base / name).write_bytes(mutated)
        previous = name
        progress.write_text(f"{index} {name}\n")
        error: BaseException | None = None
        try:
            outcome = reader.run(base)
        except Raised as exc:
            error = exc.original
            outcome = "raised"
        except FaceSphereError as exc:
            error = exc
            outcome = "refused" if any(n in str(exc) for n in reader.names(base)) else "unnamed"
        except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
            error = exc
            outcome = "raw"
        counts[outcome] += 1
        if outcome not in GOOD and outcome not in examples:
            where = workdir / f"failing-{outcome}-{index}-{Path(name).name}"
            where.write_bytes(mutated)
            examples[outcome] = {"mutant": index, "file": name, "kept": str(where),
                                 "error": (f"{type(error).__name__}: {error}"[:500] if error else ""),
                                 "traceback": "".join(traceback.format_exception(error))[-1500:] if error else ""}
    return {"reader": reader_name, "seed": seed, "mutants": count, "outcomes": dict(counts), "failures": examples}


# ------------------------------------------------------------------------------------------------------------------
# the parent


def fuzz(reader: str, seed: int, count: int, workdir: Path, *, timeout: float = 120,
         memory_mb: int | None = None) -> dict[str, Any]:
    """Run ``count`` mutants of ``reader`` in a child process; returns its summary (counts of outcomes, the first
    failure of each kind). A crash (signal), a hang past ``timeout`` or a ``MemoryError`` under ``memory_mb`` of
    address space (default: 1 GiB without torch, 4 GiB with) ends the child and is reported as the failure
    ``crashed`` / ``hung`` with the mutant being read and a copy of it."""
    needs_torch = READERS[reader]().needs_torch
    memory_mb = memory_mb or (4096 if needs_torch else 1024)
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    package = Path(__file__).resolve().parents[1]
    import facesphere

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONFAULTHANDLER": "1", "FACESPHERE_FUZZ_MEMORY_MB": str(memory_mb),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(facesphere.__file__).resolve().parents[1]),
                                                       str(package), os.environ.get("PYTHONPATH")]))}

    command = [sys.executable, "-m", "tests.fuzzing", reader, str(seed), str(count), str(workdir)]
    if not needs_torch:
        command[1:3] = ["-c", _LIGHT_MAIN]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=package)
    except subprocess.TimeoutExpired:
        return _died(reader, seed, count, workdir, "hung", f"still running after {timeout} s")
    if done.returncode != 0 or not done.stdout.strip():
        return _died(reader, seed, count, workdir, "crashed",
                     f"exit status {done.returncode}; stderr: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _died(reader: str, seed: int, count: int, workdir: Path, how: str, detail: str) -> dict[str, Any]:
    progress = (workdir / "progress").read_text().split() if (workdir / "progress").exists() else ["?", "?"]
    index, name = progress[0], progress[1] if len(progress) > 1 else "?"
    kept = workdir / f"{how}-{index}-{Path(name).name}"
    if (workdir / "sample" / name).exists():
        shutil.copyfile(workdir / "sample" / name, kept)
    return {"reader": reader, "seed": seed, "mutants": count, "outcomes": {how: 1},
            "failures": {how: {"mutant": index, "file": name, "kept": str(kept), "error": detail, "traceback": ""}}}


def failures(summary: dict[str, Any]) -> str:
    """A readable account of a summary's failures ('' when every outcome was read or refused)."""
    bad = {k: v for k, v in summary["outcomes"].items() if k not in GOOD}
    if not bad:
        return ""
    lines = [f"{summary['reader']} (seed {summary['seed']}): {bad} of {summary['mutants']} mutants"]
    for outcome, example in summary["failures"].items():
        lines.append(f"  {outcome}: mutant {example['mutant']} of {example['file']} (kept: {example['kept']}): "
                     f"{example['error']}\n{example['traceback']}")
    return "\n".join(lines)


# a child that does not import facesphere/__init__.py (torch): for the readers that need only numpy and Pillow
_LIGHT_MAIN = (
    "import sys, types, json, importlib.util\n"
    "spec = importlib.util.find_spec('facesphere')\n"
    "package = types.ModuleType('facesphere')\n"
    "package.__path__ = list(spec.submodule_search_locations)\n"
    "sys.modules['facesphere'] = package\n"
    "from tests.fuzzing import child\n"
    "from pathlib import Path\n"
    "print(json.dumps(child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))))\n"
)


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))))
