"""Load a face recogniser from a local file and turn aligned face crops into embeddings.

One entry point, :func:`load_embedder`, for every model source a user brings:

* a facesphere **run directory** (``best.pt`` if present, else the latest checkpoint) or a facesphere **checkpoint**
  file: the backbone and its input convention (size, colour order, pixel mean / std) come from the run's config;
* an InsightFace ``arcface_torch`` **backbone.pth** (``arch="iresnet50"`` …; strict key mapping, see
  :func:`facesphere.backbones.iresnet.load_arcface_torch_state_dict`), input ``(p - 127.5) / 127.5``, RGB;
* an **ONNX** recogniser, run in onnxruntime, or in OpenCV's DNN module where onnxruntime loads the graph but cannot
  run it alone (the block-quantised SFace model of OpenCV Zoo keeps its weights as graph inputs). A file onnxruntime
  refuses (malformed, or unsafe: external data outside the model's folder) is an error with onnxruntime's reason,
  never passed to OpenCV (docs/security.md).
  ONNX models carry no input convention: pass ``input_color`` / ``input_mean`` / ``input_std`` (pixels are fed as
  ``(p - mean) / std``). Models whose conventions are known (:data:`KNOWN_ONNX_MODELS`) get them by default;
* an ``nn.Module`` already in memory.

Every :class:`Embedder` takes **uint8 RGB** crops ``(N, H, W, 3)`` already aligned to its ``input_size`` and returns
float32 features. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..backbones import BACKBONES, build_backbone
from ..backbones.iresnet import load_arcface_torch_state_dict
from ..errors import DataError, FaceSphereError, InvalidOptionError, UnknownNameError, describe_load_error
from ..run.checkpoint import load_state_dict_checked
from ..run.directory import load_run

FLIP_MODES = ("sum", "concat", "none")
COLORS = ("rgb", "bgr")


@dataclass(frozen=True)
class OnnxConvention:
    """The input convention of a known ONNX recogniser (confirmed by experiment, see docs/inference.md)."""

    color: str
    mean: float
    std: float
    size: tuple[int, int] = (112, 112)
    note: str = ""


# File-name prefixes of the recognisers whose input conventions we know. A user's options always win.
KNOWN_ONNX_MODELS: dict[str, OnnxConvention] = {
    # OpenCV Zoo SFace: normalises inside the graph, so it is fed raw 0..255 RGB.
    "face_recognition_sface": OnnxConvention("rgb", 0.0, 1.0, note="OpenCV Zoo SFace (normalises internally)"),
    # MobileFaceNet 128-d export: (p - 127.5) / 128, RGB.
    "mobilefacenet_128d": OnnxConvention("rgb", 127.5, 128.0, note="MobileFaceNet 128-d (ArcFace-style)"),
}


class Embedder:
    """Aligned uint8 RGB crops ``(N, H, W, 3)`` -> features ``(N, D)``.

    Subclasses implement :meth:`embed_batch` on already normalised float32 NCHW input (``_forward``); this class
    handles colour order, pixel normalisation, batching, flip-test fusion and L2 normalisation.
    """

    name: str = "embedder"

    def __init__(self, *, name: str, input_size: Sequence[int], color: str, mean: float, std: float) -> None:
        if color not in COLORS:
            raise UnknownNameError(f"unknown input colour order {color!r}; valid: {', '.join(COLORS)}")
        if not std or not np.isfinite(std):
            raise InvalidOptionError(f"input std must be a non-zero finite number, got {std!r}")
        self.name = name
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.color = color
        self.mean = float(mean)
        self.std = float(std)
        self.embedding_dim: int | None = None

    # --- to implement -------------------------------------------------------------------------------------------
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``(N, 3, H, W)`` normalised input -> float32 ``(N, D)`` raw features."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------------------------
    def _prepare(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim == 4 and images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(f"{self.name}: expected uint8 images (N, H, W, 3), got an array of shape {images.shape}")
        if tuple(images.shape[1:3]) != self.input_size:
            raise DataError(
                f"{self.name}: images are {images.shape[1]}x{images.shape[2]}, the model takes aligned "
                f"{self.input_size[0]}x{self.input_size[1]} crops (align them first: facesphere data align)"
            )
        if self.color == "bgr":
            images = images[..., ::-1]
        batch = images.astype(np.float32).transpose(0, 3, 1, 2)
        return np.ascontiguousarray((batch - np.float32(self.mean)) / np.float32(self.std))

    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(N, H, W, 3)`` -> float32 ``(N, D)`` raw (not normalised) features of the images as given."""
        features = np.asarray(self._forward(self._prepare(images)), dtype=np.float32)
        self.embedding_dim = int(features.shape[1])
        return features

    def embed(self, images: np.ndarray | Sequence[np.ndarray], *, flip: str = "sum", normalize: bool = True,
              batch_size: int = 64) -> np.ndarray:
        """Embeddings of aligned crops: float32 ``(N, D)`` (``(N, 2D)`` for ``flip="concat"``); see
        :func:`embed_images` for the flip modes and ``normalize``."""
        features = embed_images(self, lambda i: np.asarray(images[i]), len(images), batch_size=batch_size, flip=flip,
                                normalize=normalize)
        return features if len(features) else np.zeros((0, self.embedding_dim or 0), dtype=np.float32)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, input {self.input_size[0]}x{self.input_size[1]} "
                f"{self.color.upper()}, (p - {self.mean:g}) / {self.std:g})")


def _fuse(features: np.ndarray, mirrored: np.ndarray | None, flip: str) -> np.ndarray:
    if mirrored is None:
        return features
    return features + mirrored if flip == "sum" else np.concatenate([features, mirrored], axis=1)


def _module_views(module: nn.Module, device: str | torch.device, mean: float, std: float, color: str,
                  flip: str) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
    """uint8 RGB batch -> (features, mirrored features or None) of a backbone fed ``(p - mean) / std``."""

    def views(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if color == "bgr":
            images = images[..., ::-1]
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
        batch = (batch - mean) / std
        features = module(batch).float().cpu().numpy()
        mirrored = module(torch.flip(batch, dims=[3])).float().cpu().numpy() if flip != "none" else None
        return features, mirrored

    return views


@torch.no_grad()
def embed_images(model: Embedder | nn.Module, load: Callable[[int], np.ndarray], num_images: int, *,
                 batch_size: int = 128, flip: str = "sum", normalize: bool = True, progress: Any = None,
                 device: str | torch.device = "cpu", mean: float = 127.5, std: float = 127.5,
                 color: str = "rgb") -> np.ndarray:
    """Embeddings float32 ``(N, D)`` (``(N, 2D)`` for ``flip="concat"``) of the crops ``load(0) .. load(N-1)``.

    The one embedding loop of facesphere (evaluation, training-time validation, cleaning, inference). ``model`` is an
    :class:`Embedder` (uint8 RGB crops in; it applies its own colour order and pixel normalisation) or an
    ``nn.Module`` backbone, fed ``(p - mean) / std`` in ``color`` order on ``device`` (the training loop's path; its
    train / eval mode is restored afterwards). ``load(i)`` returns a uint8 ``(H, W, 3)`` RGB crop of the model's
    input size.

    Flip-test fusion happens before normalisation (docs/methods.md §8.1): ``"sum"`` f(I) + f(mirror I)
    (insightface / opensphere), ``"concat"`` [f(I); f(mirror I)] (SphereFace), ``"none"`` f(I). ``normalize=False``
    keeps the fused feature's norm (IJB pooling uses it as a quality weight). ``progress``: anything with
    ``update(n)`` (a tqdm bar), advanced by the images embedded.
    """
    if flip not in FLIP_MODES:
        raise UnknownNameError(f"unknown flip mode {flip!r}; valid: {', '.join(FLIP_MODES)}")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise InvalidOptionError(f"batch_size must be >= 1, got {batch_size!r}")
    module = model if isinstance(model, nn.Module) else None
    if module is None:
        def views(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            features = np.asarray(model.embed_batch(images), dtype=np.float32)
            if flip == "none":
                return features, None
            return features, np.asarray(model.embed_batch(np.ascontiguousarray(images[:, :, ::-1])), dtype=np.float32)
    else:
        views = _module_views(module, device, mean, std, color, flip)
        was_training = module.training
        module.eval()
    outputs: list[np.ndarray] = []
    try:
        for start in range(0, num_images, int(batch_size)):
            images = np.stack([load(i) for i in range(start, min(start + int(batch_size), num_images))])
            outputs.append(_fuse(*views(images), flip))
            if progress is not None:
                progress.update(len(images))
    finally:
        if module is not None:
            module.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    features = np.concatenate(outputs).astype(np.float32, copy=False)
    if normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", features, features))
        features = features / np.maximum(norms, 1e-12)[:, None]
    return features


class TorchEmbedder(Embedder):
    """A PyTorch backbone. ``fp16`` runs under CUDA autocast (CUDA devices only)."""

    def __init__(self, module: nn.Module, *, name: str, input_size: Sequence[int], color: str, mean: float,
                 std: float, device: str | torch.device = "cpu", fp16: bool = False) -> None:
        super().__init__(name=name, input_size=input_size, color=color, mean=mean, std=std)
        self.device = torch.device(device)
        if fp16 and self.device.type != "cuda":
            raise InvalidOptionError("fp16 inference needs a CUDA device (--device cuda); on the CPU use fp32")
        self.fp16 = bool(fp16)
        self.module = module.to(self.device).eval()

    @torch.no_grad()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.fp16):
            out = self.module(x)
        return out.float().cpu().numpy()


class OnnxRuntimeEmbedder(Embedder):
    """An ONNX recogniser in onnxruntime (CPU, or CUDA when the provider is installed and ``device="cuda"``)."""

    def __init__(self, path: str | Path, session: Any, **convention: Any) -> None:
        super().__init__(**convention)
        self.path = Path(path)
        self.session = session
        inputs = session.get_inputs()
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.output_name = session.get_outputs()[0].name

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch is None:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        step = self.fixed_batch
        parts = [self.session.run([self.output_name], {self.input_name: batch[i:i + step]})[0]
                 for i in range(0, len(batch), step)]
        return np.concatenate(parts).reshape(len(batch), -1)


class OpenCVEmbedder(Embedder):
    """An ONNX recogniser in OpenCV's DNN module (for graphs onnxruntime refuses, such as block-quantised ones)."""

    def __init__(self, path: str | Path, net: Any, **convention: Any) -> None:
        super().__init__(**convention)
        self.path = Path(path)
        self.net = net

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        outputs = []
        for i in range(len(batch)):  # the quantised graphs are exported with batch 1
            self.net.setInput(batch[i:i + 1])
            # a copy: OpenCV reuses its output buffer
            outputs.append(np.array(self.net.forward(), dtype=np.float32).reshape(1, -1))
        return np.concatenate(outputs)


# ------------------------------------------------------------------------------------------------------------------
# the one entry point


def _known_onnx(path: Path) -> OnnxConvention | None:
    for prefix, convention in KNOWN_ONNX_MODELS.items():
        if path.name.startswith(prefix):
            return convention
    return None


def _load_onnx(path: Path, *, color: str | None, mean: float | None, std: float | None,
               size: Sequence[int] | None, device: str, backend: str) -> Embedder:
    known = _known_onnx(path)
    stored = _onnx_metadata(path)  # written by facesphere.infer.export
    if stored is not None:
        known = stored
    convention = {
        "name": path.name,
        "color": color or (known.color if known else "rgb"),
        "mean": mean if mean is not None else (known.mean if known else 127.5),
        "std": std if std is not None else (known.std if known else 127.5),
    }
    if backend not in ("auto", "onnxruntime", "opencv"):
        raise UnknownNameError(f"unknown ONNX backend {backend!r}; valid: auto, onnxruntime, opencv")
    errors: list[str] = []
    if backend in ("auto", "onnxruntime"):
        try:
            import onnxruntime as ort
        except ImportError:
            errors.append('onnxruntime is not installed (pip install "facesphere[onnx]")')
        else:
            providers = ["CPUExecutionProvider"]
            if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            options = ort.SessionOptions()
            options.log_severity_level = 3
            try:
                session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
            except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
                # onnxruntime validated the file and refused it (malformed, unsupported, or unsafe such as external
                # data outside the model's folder): its reason is the answer; no other backend gets the file
                reason = " ".join(str(error).split())[:500] or type(error).__name__
                raise FaceSphereError(f"{path}: cannot load this ONNX model: onnxruntime refused it ({reason})") \
                    from None
            try:
                inputs = session.get_inputs()
                if len(inputs) == 1:
                    shape = inputs[0].shape
                    if len(shape) != 4:
                        raise FaceSphereError(f"{path}: the model's input {inputs[0].name!r} has shape {shape}; a "
                                              "face recogniser takes images (batch, 3, height, width)")
                    in_size = size or (known.size if known else None) or _onnx_input_size(shape) or (112, 112)
                    return OnnxRuntimeEmbedder(path, session, input_size=in_size, **convention)
            except FaceSphereError:
                raise
            except Exception as error:  # noqa: BLE001 - e.g. names that are not UTF-8
                raise FaceSphereError(f"{path}: cannot load this ONNX model: its inputs / outputs cannot be read "
                                      f"({type(error).__name__}: {error})") from None
            # a graph onnxruntime loads and checks but cannot run alone: block-quantised weights stored as graph
            # inputs (OpenCV Zoo's SFace). The one case OpenCV DNN is for.
            errors.append(f"onnxruntime sees {len(inputs)} graph inputs (expected one image input)")
            if backend == "onnxruntime":
                raise FaceSphereError(f"{path}: cannot load this ONNX model: " + "; ".join(errors))
            del session
    if backend in ("auto", "opencv"):
        try:
            import cv2
        except ImportError:
            errors.append('OpenCV is not installed (pip install "facesphere[onnx]")')
        else:
            _check_external_data(path)  # OpenCV does not confine external data: refuse such a file before it reads
            try:
                net = cv2.dnn.readNet(str(path))
            except Exception as error:  # noqa: BLE001 - cv2.error
                errors.append(f"OpenCV DNN cannot load it ({str(error).strip().splitlines()[-1]})")
            else:
                in_size = size or (known.size if known else (112, 112))
                return OpenCVEmbedder(path, net, input_size=in_size, **convention)
    raise FaceSphereError(f"{path}: cannot load this ONNX model: " + "; ".join(errors))


def _check_external_data(path: Path) -> None:
    """Refuse an ONNX file whose tensors keep their data outside the model's folder (onnxruntime's rule, applied
    before a backend that does not check it). Needs the ``onnx`` package; without it, or for a file it cannot
    parse, the backend's own error stands."""
    try:
        import onnx
    except ImportError:
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not parseable: the backend reports it
        return
    folder = path.resolve().parent
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer) + [sparse.values for sparse in graph.sparse_initializer]
        for node in graph.node:
            for attribute in node.attribute:
                tensors += [attribute.t, *attribute.tensors]
                graphs += [attribute.g, *attribute.graphs]
        for tensor in tensors:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
            target = (folder / location).resolve()
            if not location:
                raise DataError(f"{path}: refused: tensor {tensor.name!r} keeps its data outside the file but names "
                                "no file")
            if Path(location).is_absolute() or (target != folder and folder not in target.parents):
                raise DataError(f"{path}: refused: tensor {tensor.name!r} keeps its data in {location!r}, outside "
                                f"the model's folder {folder}")


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata properties of an ONNX file (``{}`` when the ``onnx`` package is missing or the file cannot be
    read: callers fall back to options and defaults)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - no onnx package or an unreadable file
        return {}
    return {entry.key: entry.value for entry in model.metadata_props}


def _onnx_metadata(path: Path) -> OnnxConvention | None:
    """The input convention stored in a facesphere-exported model's metadata, if any."""
    meta = read_onnx_metadata(path)
    try:
        height, width = (int(v) for v in meta["facesphere.input_size"].split(","))
        return OnnxConvention(meta["facesphere.input_color"], float(meta["facesphere.input_mean"]),
                              float(meta["facesphere.input_std"]), (height, width),
                              note=f"exported by facesphere from {meta.get('facesphere.source', '?')}")
    except (KeyError, ValueError):
        return None


def _onnx_input_size(shape: Sequence[Any]) -> tuple[int, int] | None:
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
        return int(shape[2]), int(shape[3])
    return None


def _load_arcface_torch(path: Path, arch: str, *, device: str, fp16: bool, color: str | None, mean: float | None,
                        std: float | None) -> Embedder:
    if arch not in BACKBONES.names():
        raise UnknownNameError(f"unknown --arch {arch!r}; valid: {', '.join(BACKBONES.names())}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise FaceSphereError(f"{path}: {describe_load_error(error, 'PyTorch state dict')}") from None
    if isinstance(state, dict) and "backbone" in state and "config" in state:
        raise FaceSphereError(f"{path}: this is a facesphere checkpoint; drop --arch to load it with its config")
    weights = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(weights, dict):
        raise FaceSphereError(f"{path}: expected a state dict, found {type(weights).__name__}")
    fc = {k.removeprefix("module."): v for k, v in weights.items()}.get("fc.weight")
    embed_dim = int(fc.shape[0]) if isinstance(fc, torch.Tensor) else 512
    model = build_backbone(arch, embed_dim=embed_dim)
    if arch.startswith("iresnet"):
        try:
            load_arcface_torch_state_dict(model, weights)
        except FaceSphereError as error:  # name the file, not "<state dict>"
            raise FaceSphereError(str(error).replace("<state dict>", f"{path} (--arch {arch})", 1)) from None
    else:
        load_state_dict_checked(model, {k.removeprefix("module."): v for k, v in weights.items()}, str(path),
                                f"{arch} backbone")
    return TorchEmbedder(model, name=f"{path.name} ({arch})", input_size=(112, 112), color=color or "rgb",
                         mean=127.5 if mean is None else mean, std=127.5 if std is None else std, device=device,
                         fp16=fp16)


def load_embedder(source: str | os.PathLike | nn.Module, *, arch: str | None = None, input_color: str | None = None,
                  input_mean: float | None = None, input_std: float | None = None,
                  input_size: Sequence[int] | None = None, device: str = "cpu", fp16: bool = False,
                  backend: str = "auto") -> Embedder:
    """Open a recogniser from a local file (see the module docstring for every source).

    ``input_color`` / ``input_mean`` / ``input_std`` / ``input_size`` override the convention the source implies;
    ``backend`` (ONNX only): ``auto`` (onnxruntime, then OpenCV DNN), ``onnxruntime`` or ``opencv``.
    """
    if isinstance(source, nn.Module):
        return TorchEmbedder(source, name=type(source).__name__, input_size=input_size or (112, 112),
                             color=input_color or "rgb", mean=127.5 if input_mean is None else input_mean,
                             std=127.5 if input_std is None else input_std, device=device, fp16=fp16)
    path = Path(source)
    if not path.exists():
        raise FaceSphereError(f"{path}: no such model file or run directory")
    if path.is_file() and path.suffix.lower() == ".onnx":
        if fp16:
            raise InvalidOptionError(f"{path}: fp16 applies to PyTorch models; ONNX models run as exported")
        return _load_onnx(path, color=input_color, mean=input_mean, std=input_std, size=input_size,
                          device=device, backend=backend)
    if arch is not None:
        if path.is_dir():
            raise FaceSphereError(f"{path}: --arch is for an arcface_torch backbone.pth file, not a directory")
        return _load_arcface_torch(path, arch, device=device, fp16=fp16, color=input_color, mean=input_mean,
                                   std=input_std)
    config, backbone, _, _ = load_run(path, with_head=False)
    data = config.data
    size = input_size or tuple(data.image_size)
    name = path.name if path.is_dir() else f"{path.parent.name}/{path.name}"
    return TorchEmbedder(backbone, name=name, input_size=size, color=input_color or data.color,
                         mean=data.pixel_mean if input_mean is None else input_mean,
                         std=data.pixel_std if input_std is None else input_std, device=device, fp16=fp16)


__all__ = ["Embedder", "TorchEmbedder", "OnnxRuntimeEmbedder", "OpenCVEmbedder", "KNOWN_ONNX_MODELS",
           "OnnxConvention", "load_embedder", "embed_images", "FLIP_MODES", "read_onnx_metadata"]
