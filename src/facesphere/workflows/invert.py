"""Faces synthesised from a frozen recogniser with BatchNorm priors (docs/methods.md §6.7); no generator is trained.

The unknowns are the input images themselves, ``x ∈ R^{n×3×H×W}`` in the network's normalised input space
(``(pixel − mean) / std`` in the run's colour order). The network is frozen (``eval()``, ``requires_grad=False``;
both restored afterwards) and ``x`` minimises

    L(x) = L_id(f(x)) + λ_BN · R_BN(x) + λ_TV · TV(x)

* ``L_id`` (default ``cosine``): ``s·(1 − cos(f(x), target))`` with s = 64, the target being the class centre of a
  training class y (its K sub-centres max-pooled), an external embedding e*, or the embedding of a given face.
  ``arcface`` is the paper's form: the ArcFace loss (s = 64, m = 0.5, the margin as a detached delta) of f(x) against
  the head's unit class centres with label y (for e*, e*/‖e*‖ is appended to the centres as an extra class);
  ``arcface+cosine`` is their sum. The ArcFace loss also pushes f(x) away from the neighbouring classes, which caps
  the cosine to the target's own centre (measured in ``docs/invert.md``), hence the cosine default.
* ``R_BN = Σ_l ‖μ_l − running_mean_l‖₂ + ‖σ²_l − running_var_l‖₂`` over every ``BatchNorm2d``, with μ_l and the
  biased σ²_l of the layer's *input* over (n, H, W), collected by forward hooks (:class:`BatchNormPrior`) that are
  removed afterwards. ``BatchNorm1d`` layers after the flatten are skipped.
* ``TV``: mean absolute difference of neighbouring pixels (a mild smoothness prior, not from the paper).

Optimiser (constants chosen on synthetic-identity models, documented in ``docs/invert.md``): Adam, lr 0.1 with
cosine decay, 300 steps, λ_BN = 0.1, λ_TV = 0.1, 4 images, init N(0, 0.5²), a random horizontal flip of each image
and a random shift of up to 1 pixel every step, x clamped to the valid pixel range after every step.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from ..data.image import image_grid, read_image
from ..data.transforms import resize
from ..errors import DataError, InvalidOptionError
from ..run.directory import load_run

__all__ = [
    "BatchNormPrior",
    "InversionTarget",
    "InversionResult",
    "class_target",
    "embedding_target",
    "image_target",
    "identity_loss",
    "total_variation",
    "invert",
    "frozen",
    "to_uint8",
    "save_grid",
    "synthesize",
    "DEFAULTS",
]

#: Identity losses: s·(1 − cos) to the target, the ArcFace loss against the class centres, or both.
ID_LOSSES = ("cosine", "arcface", "arcface+cosine")

#: The constants chosen for ``facesphere invert`` (docs/methods.md §6.7 marks them [RECOMMENDED]; see docs/invert.md).
DEFAULTS: dict[str, Any] = {
    "steps": 300,
    "lr": 0.1,
    "bn_weight": 0.1,
    "tv_weight": 0.1,
    "init_std": 0.5,
    "flip": True,
    "jitter": 1,
    "num_images": 4,
    "arcface_s": 64.0,
    "arcface_m": 0.5,
    "id_loss": "cosine",
}


# ----------------------------------------------------------------------------------------------------------------------
# the BatchNorm prior


class BatchNormPrior:
    """Forward hooks on every ``nn.BatchNorm2d`` of ``module`` that measure how far the statistics of the layer's
    input batch are from the layer's running statistics.

    While :attr:`active`, each forward appends one scalar per layer,
    ``‖μ − running_mean‖₂ + ‖σ² − running_var‖₂`` (``squared=True``: squared norms), with μ, σ² (biased) over
    (n, H, W) of the input; :meth:`pop` returns their sum (R_BN) and clears them. When not active the hooks return
    immediately and change nothing. Use as a context manager (hooks removed on exit) or call :meth:`remove`.
    """

    def __init__(self, module: nn.Module, *, squared: bool = False, active: bool = True) -> None:
        self.squared = bool(squared)
        self.active = bool(active)
        self.layers = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
        self.terms: list[torch.Tensor] = []
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]

    def _hook(self, layer: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not self.active:
            return None
        a = inputs[0].float()
        mean = a.mean(dim=(0, 2, 3))
        var = a.var(dim=(0, 2, 3), unbiased=False)
        running_mean = layer.running_mean if layer.running_mean is not None else torch.zeros_like(mean)
        running_var = layer.running_var if layer.running_var is not None else torch.ones_like(var)
        d_mean = torch.linalg.vector_norm(mean - running_mean.float())
        d_var = torch.linalg.vector_norm(var - running_var.float())
        self.terms.append(d_mean.square() + d_var.square() if self.squared else d_mean + d_var)
        return None

    def pop(self) -> torch.Tensor:
        """R_BN of the forward passes since the last pop (0 when nothing was recorded)."""
        terms, self.terms = self.terms, []
        if not terms:
            return torch.zeros(())
        return torch.stack(terms).sum()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.terms = []

    def __enter__(self) -> "BatchNormPrior":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class frozen:
    """Context manager: ``module`` in eval mode with ``requires_grad=False`` on every parameter; the previous
    training flag of every sub-module and every parameter's ``requires_grad`` are restored on exit."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> nn.Module:
        self._modes = [(m, m.training) for m in self.module.modules()]
        self._grads = [(p, p.requires_grad) for p in self.module.parameters()]
        self.module.eval()
        for p, _ in self._grads:
            p.requires_grad_(False)
        return self.module

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self._modes:
            m.training = mode
        for p, flag in self._grads:
            p.requires_grad_(flag)


# ----------------------------------------------------------------------------------------------------------------------
# targets and losses


@dataclass
class InversionTarget:
    """What the synthesised faces should be.

    kind:       ``class`` (a training identity: ``class_id`` and the head's ``centres``), ``embedding`` or ``image``.
    embedding:  (D,) unit target embedding; for a class, its (first) unit sub-centre.
    centres:    (C, K, D) unit class (sub-)centres, only for ``class``.
    loss:       ``arcface`` (classes only) or ``cosine``.
    """

    kind: str
    embedding: torch.Tensor
    centres: torch.Tensor | None = None
    class_id: int | None = None
    loss: str = "cosine"
    s: float = DEFAULTS["arcface_s"]
    m: float = DEFAULTS["arcface_m"]
    description: str = ""

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(n,) cosine of each embedding (n, D) to the target (max over the class's sub-centres for a class)."""
        x = F.normalize(embeddings.float(), dim=1)
        if self.centres is not None and self.class_id is not None:
            return (x @ self.centres[self.class_id].t()).max(dim=1).values
        return x @ self.embedding


def class_target(head: nn.Module, class_id: int, *, loss: str = DEFAULTS["id_loss"],
                 s: float = DEFAULTS["arcface_s"], m: float = DEFAULTS["arcface_m"]) -> InversionTarget:
    """Target = training class ``class_id`` of ``head`` (its weight rows ``j·K + k``, normalised)."""
    if loss not in ID_LOSSES:
        raise InvalidOptionError(f"identity loss must be one of {', '.join(ID_LOSSES)}, got {loss!r}")
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise InvalidOptionError("the head has no (C·K, D) class-centre weight")
    k = int(getattr(head, "subcenters", 1))
    centres = F.normalize(weight.detach().float(), dim=1).reshape(-1, k, weight.shape[1])
    num_classes = centres.shape[0]
    if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or not 0 <= class_id < num_classes:
        raise InvalidOptionError(f"--class must be a class id in [0, {num_classes - 1}], got {class_id!r}")
    return InversionTarget("class", centres[int(class_id), 0].clone(), centres, int(class_id), loss, float(s),
                           float(m), f"training class {int(class_id)} of {num_classes}")


def embedding_target(embedding: np.ndarray | torch.Tensor, embed_dim: int, *, source: str = "embedding",
                     head: nn.Module | None = None, loss: str = DEFAULTS["id_loss"], s: float = DEFAULTS["arcface_s"],
                     m: float = DEFAULTS["arcface_m"]) -> InversionTarget:
    """Target = an external embedding (D,) or (1, D).

    With ``head`` and an ``arcface`` loss the unit embedding is appended to the head's class centres as an extra
    class (label C) and L_id is the ArcFace loss against all of them (docs/methods.md §6.7); ``cosine``: ``s·(1 − cos)``.
    """
    if loss not in ID_LOSSES:
        raise InvalidOptionError(f"identity loss must be one of {', '.join(ID_LOSSES)}, got {loss!r}")
    e = torch.as_tensor(np.asarray(embedding, dtype=np.float32) if not isinstance(embedding, torch.Tensor)
                        else embedding.detach().float().cpu())
    if e.dim() == 2 and e.shape[0] == 1:
        e = e[0]
    if e.dim() != 1 or e.shape[0] != embed_dim:
        raise InvalidOptionError(f"{source}: expected an embedding of shape ({embed_dim},), got {tuple(e.shape)}")
    if not bool(torch.isfinite(e).all()) or float(e.norm()) == 0.0:
        raise InvalidOptionError(f"{source}: the embedding must be finite and non-zero")
    unit = F.normalize(e, dim=0)
    target = InversionTarget("embedding", unit, description=f"embedding from {source}")
    if head is not None and "arcface" in loss:
        base = class_target(head, 0)
        k = base.centres.shape[1]
        if base.centres.shape[2] != embed_dim:
            raise InvalidOptionError(f"the head's centres are {base.centres.shape[2]}-d, the embedding {embed_dim}-d")
        extra = unit.to(base.centres.device).expand(1, k, embed_dim)
        target.centres = torch.cat([base.centres, extra], dim=0)
        target.class_id, target.m = base.centres.shape[0], float(m)
    target.loss, target.s = loss, float(s)
    return target


def image_target(backbone: nn.Module, image: np.ndarray, *, mean: float, std: float, color: str,
                 source: str = "image", head: nn.Module | None = None,
                 loss: str = DEFAULTS["id_loss"]) -> InversionTarget:
    """Target = the embedding of an aligned face ``image`` (uint8 (H, W, 3) RGB of the model's input size), used
    as in :func:`embedding_target`."""
    batch = _normalise(image[None], mean, std, color, next(backbone.parameters()).device)
    with frozen(backbone), torch.no_grad():
        e = backbone(batch)[0]
    target = embedding_target(e, e.shape[0], source=source, head=head, loss=loss)
    target.kind, target.description = "image", f"face image {source}"
    return target


def identity_loss(embeddings: torch.Tensor, target: InversionTarget) -> torch.Tensor:
    """L_id of a batch of embeddings (n, D): ``arcface`` = mean ArcFace CE (margin as a detached delta),
    ``cosine`` = mean ``s·(1 − cos)``, ``arcface+cosine`` = their sum."""
    total = torch.zeros((), device=embeddings.device)
    if "cosine" in target.loss or target.centres is None or target.class_id is None:
        total = total + target.s * (1.0 - target.cosines(embeddings)).mean()
    if "arcface" in target.loss and target.centres is not None and target.class_id is not None:
        x = F.normalize(embeddings.float(), dim=1)
        c, k, d = target.centres.shape
        cos = (x @ target.centres.reshape(c * k, d).t()).reshape(-1, c, k).max(dim=2).values  # (n, C)
        y = target.class_id
        with torch.no_grad():
            cos_y = cos[:, y].clamp(-1.0, 1.0)
            phi = torch.cos(torch.clamp(torch.acos(cos_y) + target.m, max=math.pi))
            delta = torch.zeros_like(cos)
            delta[:, y] = phi - cos_y
        logits = target.s * (cos + delta)
        labels = torch.full((x.shape[0],), y, dtype=torch.long, device=x.device)
        total = total + F.cross_entropy(logits, labels)
    return total


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between vertically and horizontally neighbouring pixels of x (n, C, H, W)."""
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


# ----------------------------------------------------------------------------------------------------------------------
# pixels


def _normalise(images: np.ndarray, mean: float, std: float, color: str, device: Any = "cpu") -> torch.Tensor:
    """uint8 (n, H, W, 3) RGB -> float32 (n, 3, H, W) ``(p − mean) / std`` in ``color`` order."""
    if color == "bgr":
        images = images[..., ::-1]
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    return (t - mean) / std


def to_uint8(x: torch.Tensor, *, mean: float, std: float, color: str) -> np.ndarray:
    """Normalised (n, 3, H, W) in ``color`` order -> uint8 (n, H, W, 3) RGB (de-normalised, rounded, clipped)."""
    pixels = (x.detach().float().cpu() * std + mean).round().clamp(0, 255).to(torch.uint8)
    out = pixels.permute(0, 2, 3, 1).numpy()
    if color == "bgr":
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def save_grid(images: np.ndarray, path: str | os.PathLike[str], *, columns: int | None = None, gap: int = 2) -> Path:
    """Write uint8 (n, H, W, 3) images as one PNG grid (white gaps)."""
    cols = columns or min(len(images), 8)
    sheet = image_grid([list(images[start:start + cols]) for start in range(0, len(images), cols)], gap=gap)
    out = Path(path)
    Image.fromarray(sheet).save(out, format="PNG")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# the optimisation


@dataclass
class InversionResult:
    """images: uint8 (n, H, W, 3) RGB; x: the optimised normalised tensor (n, 3, H, W); metrics: initial and final
    values (see :func:`invert`); history: one dict per step (``loss``, ``id_loss``, ``bn_loss``, ``cosine``)."""

    images: np.ndarray
    x: torch.Tensor
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def _evaluate(backbone: nn.Module, prior: BatchNormPrior, x: torch.Tensor, target: InversionTarget) -> dict[str, Any]:
    with torch.no_grad():
        prior.active = True
        embeddings = backbone(x)
        prior.active = False
        bn = float(prior.pop())
        cos = target.cosines(embeddings)
        return {"id_loss": float(identity_loss(embeddings, target)), "bn_loss": bn,
                "cosine": float(cos.mean()), "cosines": [float(c) for c in cos]}


def invert(backbone: nn.Module, target: InversionTarget, *, input_size: tuple[int, int] = (112, 112),
           mean: float = 127.5, std: float = 127.5, color: str = "rgb", steps: int = DEFAULTS["steps"],
           lr: float = DEFAULTS["lr"], bn_weight: float = DEFAULTS["bn_weight"],
           tv_weight: float = DEFAULTS["tv_weight"], num_images: int = DEFAULTS["num_images"], seed: int = 0,
           init_std: float = DEFAULTS["init_std"], flip: bool = DEFAULTS["flip"], jitter: int = DEFAULTS["jitter"],
           cosine_schedule: bool = True, squared_bn: bool = False, progress: bool = False,
           callback: Callable[[int, dict[str, float]], None] | None = None) -> InversionResult:
    """Optimise ``num_images`` input images so that the frozen ``backbone`` maps them to ``target``.

    Deterministic for a given ``seed`` on the CPU. The backbone's modes and ``requires_grad`` flags are restored and
    its hooks removed on return. ``metrics``: ``initial`` and ``final`` (``id_loss``, ``bn_loss``, ``cosine`` = mean
    identity cosine, ``cosines`` per image; ``final`` is measured without augmentation), ``final_uint8`` (the same for
    the saved 8-bit images), ``steps`` and every setting.
    """
    for name, value in (("steps", steps), ("num_images", num_images), ("jitter", jitter)):
        minimum = 0 if name == "jitter" else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise InvalidOptionError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")
    for name, value in (("lr", lr), ("init_std", init_std)):
        if not value > 0:
            raise InvalidOptionError(f"--{name.replace('_', '-')} must be positive, got {value!r}")
    for name, value in (("bn_weight", bn_weight), ("tv_weight", tv_weight)):
        if not value >= 0:
            raise InvalidOptionError(f"--{name.replace('_', '-')} must be >= 0, got {value!r}")
    h, w = int(input_size[0]), int(input_size[1])
    device = next(backbone.parameters()).device
    target = _target_to(target, device)
    low, high = (0.0 - mean) / std, (255.0 - mean) / std
    lo, hi = min(low, high), max(low, high)
    generator = torch.Generator().manual_seed(int(seed))
    x0 = (torch.randn(num_images, 3, h, w, generator=generator) * init_std).clamp_(lo, hi).to(device)
    x = x0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    settings = {"steps": int(steps), "lr": float(lr), "bn_weight": float(bn_weight), "tv_weight": float(tv_weight),
                "num_images": int(num_images), "seed": int(seed), "init_std": float(init_std), "flip": bool(flip),
                "jitter": int(jitter), "cosine_schedule": bool(cosine_schedule), "squared_bn": bool(squared_bn),
                "identity_loss": target.loss}
    history: list[dict[str, float]] = []
    bar = None
    if progress:
        bar = tqdm(total=int(steps), unit="step", desc="invert", dynamic_ncols=True)
    with frozen(backbone), BatchNormPrior(backbone, squared=squared_bn, active=False) as prior:
        if not prior.layers and bn_weight > 0:
            settings["note"] = "the backbone has no BatchNorm2d layer: no BN prior"
        initial = _evaluate(backbone, prior, x.detach(), target)
        try:
            for step in range(int(steps)):
                if cosine_schedule:
                    for group in optimizer.param_groups:
                        group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / int(steps)))
                view = x
                if flip:
                    mirror = torch.rand(num_images, generator=generator) < 0.5
                    view = torch.where(mirror.to(device)[:, None, None, None], view.flip(3), view)
                if jitter:
                    dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
                    view = torch.roll(view, shifts=(dy, dx), dims=(2, 3))
                prior.active = True
                embeddings = backbone(view)
                prior.active = False
                l_id = identity_loss(embeddings, target)
                r_bn = prior.pop().to(device)
                loss = l_id + bn_weight * r_bn
                if tv_weight > 0:
                    loss = loss + tv_weight * total_variation(x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    x.clamp_(lo, hi)
                    cos = float(target.cosines(embeddings.detach()).mean())
                record = {"loss": float(loss.detach()), "id_loss": float(l_id.detach()),
                          "bn_loss": float(r_bn.detach()), "cosine": cos}
                history.append(record)
                if callback is not None:
                    callback(step, record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(cos=f"{cos:.3f}", bn=f"{record['bn_loss']:.3g}")
        finally:
            if bar is not None:
                bar.close()
        final = _evaluate(backbone, prior, x.detach(), target)
        images = to_uint8(x.detach(), mean=mean, std=std, color=color)
        final_uint8 = _evaluate(backbone, prior, _normalise(images, mean, std, color, device), target)
    metrics = {"target": target.description, "kind": target.kind, "class_id": target.class_id,
               "initial": initial, "final": final, "final_uint8": final_uint8, **settings}
    return InversionResult(images, x.detach(), metrics, history)


def _target_to(target: InversionTarget, device: Any) -> InversionTarget:
    target.embedding = target.embedding.to(device)
    if target.centres is not None:
        target.centres = target.centres.to(device)
    return target


# ----------------------------------------------------------------------------------------------------------------------
# the command


def synthesize(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, class_id: int | None = None,
               embedding: str | os.PathLike[str] | None = None, image: str | os.PathLike[str] | None = None,
               id_loss: str = DEFAULTS["id_loss"], device: str = "cpu", progress: bool = True,
               **options: Any) -> dict[str, Any]:
    """``facesphere invert``: synthesise faces for one target of a run; writes ``grid.png``, ``face_NN.png``,
    ``metrics.json`` (and ``target.png`` for ``image``) into ``out_dir``; returns the metrics.

    Exactly one of ``class_id`` (a training class of the run's head), ``embedding`` (a ``.npy`` file of shape (D,)
    or (1, D)) or ``image`` (an aligned face of the model's input size; resized otherwise) is given; ``options`` go
    to :func:`invert`.
    """

    given = [v is not None for v in (class_id, embedding, image)]
    if sum(given) != 1:
        raise InvalidOptionError("give exactly one target: --class ID, --embedding FILE.npy or --image FACE.jpg")
    config, backbone, head, _ = load_run(run_dir, device=device)
    data = config.data
    size = (int(data.image_size[0]), int(data.image_size[1]))
    reference = None
    if class_id is not None:
        target = class_target(head, class_id, loss=id_loss)
    elif embedding is not None:
        path = Path(embedding)
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path}: embedding file not found") from None
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: not a readable .npy array ({error})") from None
        target = embedding_target(array, config.model.embed_dim, source=str(path), head=head, loss=id_loss)
    else:

        reference = read_image(image)
        if reference.shape[:2] != size:
            reference = resize(reference, size)
        target = image_target(backbone, reference, mean=data.pixel_mean, std=data.pixel_std, color=data.color,
                              source=str(image), head=head, loss=id_loss)
    result = invert(backbone, target, input_size=size, mean=data.pixel_mean, std=data.pixel_std, color=data.color,
                    progress=progress, **options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiles = result.images if reference is None else np.concatenate([reference[None], result.images])
    save_grid(tiles, out / "grid.png")
    for i, img in enumerate(result.images):
        Image.fromarray(img).save(out / f"face_{i:02d}.png")
    if reference is not None:
        Image.fromarray(reference).save(out / "target.png")
    metrics = {"run": str(run_dir), **result.metrics,
               "grid": "the target face, then the synthesised faces" if reference is not None else
               "the synthesised faces",
               "history": {"every": max(1, len(result.history) // 50),
                           "records": result.history[:: max(1, len(result.history) // 50)]}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
