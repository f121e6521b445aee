"""Loading recognisers from every source, input conventions, flip fusion and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import facesphere as fs
from facesphere import build_backbone
from facesphere.data.pairs import open_pair_set
from facesphere.errors import (
    DataError,
    FaceSphereError,
    InvalidOptionError,
    UnknownNameError,
)
from facesphere.evaluate.verification import verify_pairs
from facesphere.infer.embedders import embed_images, load_embedder
from facesphere.run import load_run
from tests.helpers import DATA, MODELS, run_isolated


def _crops(n: int, size=(112, 112), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


def _reference(module: torch.nn.Module, images: np.ndarray, mean: float, std: float, bgr: bool = False) -> np.ndarray:
    """The backbone applied by hand: NHWC uint8 -> NCHW float, (p - mean) / std."""
    if bgr:
        images = images[..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double()
    with torch.no_grad():
        return module.double()((x - mean) / std).numpy()


def test_run_directory_and_checkpoint_load_the_trained_backbone(tiny_run):
    config, backbone, head, checkpoint = load_run(tiny_run)
    assert head is not None and head.weight.shape == (12, 32)
    assert torch.equal(backbone.state_dict()["conv1.weight"] if "conv1.weight" in backbone.state_dict()
                       else next(iter(backbone.state_dict().values())),
                       next(iter(checkpoint["backbone"].values())) if "conv1.weight" not in checkpoint["backbone"]
                       else checkpoint["backbone"]["conv1.weight"])
    embedder = load_embedder(tiny_run)
    assert embedder.input_size == (112, 112) and embedder.color == config.data.color
    images = _crops(3)
    got = embedder.embed_batch(images)
    want = _reference(backbone, images, config.data.pixel_mean, config.data.pixel_std)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the checkpoint file itself gives the same model
    same = load_embedder(tiny_run / "best.pt").embed_batch(images)
    np.testing.assert_array_equal(same, got)


def test_flip_fusion_modes(tiny_run):
    embedder = load_embedder(tiny_run)
    images = _crops(5, seed=1)
    raw = embedder.embed_batch(images)
    mirrored = embedder.embed_batch(np.ascontiguousarray(images[:, :, ::-1]))
    summed = embedder.embed(images, flip="sum", batch_size=2)
    want = (raw + mirrored) / np.linalg.norm(raw + mirrored, axis=1, keepdims=True)
    np.testing.assert_allclose(summed, want, rtol=1e-5, atol=1e-6)
    concat = embedder.embed(images, flip="concat", normalize=False)
    np.testing.assert_allclose(concat, np.concatenate([raw, mirrored], axis=1), rtol=1e-5, atol=1e-6)
    none = embedder.embed(images, flip="none")
    np.testing.assert_allclose(np.linalg.norm(none, axis=1), 1.0, rtol=1e-5)
    unnormalised = embedder.embed(images, flip="sum", normalize=False)
    np.testing.assert_allclose(unnormalised, raw + mirrored, rtol=1e-5, atol=1e-6)
    with pytest.raises(UnknownNameError, match="flip"):
        embedder.embed(images, flip="mirror")


def test_options_override_the_run_convention(tiny_run):
    _, backbone, _, _ = load_run(tiny_run)
    embedder = load_embedder(tiny_run, input_color="bgr", input_mean=100.0, input_std=50.0)
    images = _crops(2, seed=2)
    np.testing.assert_allclose(embedder.embed_batch(images), _reference(backbone, images, 100.0, 50.0, bgr=True),
                               rtol=1e-4, atol=1e-4)


def test_wrong_crop_size_and_grey_input(tiny_run):
    embedder = load_embedder(tiny_run)
    with pytest.raises(DataError, match="align"):
        embedder.embed_batch(np.zeros((1, 100, 100, 3), np.uint8))
    grey = _crops(1)[..., :1]
    np.testing.assert_allclose(embedder.embed_batch(grey), embedder.embed_batch(np.repeat(grey, 3, axis=-1)))


def test_arcface_torch_backbone_pth(tmp_path):
    model = fs.build_backbone("iresnet18", embed_dim=64).eval()
    path = tmp_path / "backbone.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)  # DDP prefixes are stripped
    embedder = load_embedder(path, arch="iresnet18")
    images = _crops(2, seed=3)
    np.testing.assert_allclose(embedder.embed_batch(images), _reference(model, images, 127.5, 127.5),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(FaceSphereError, match="backbone.pth"):
        load_embedder(path, arch="iresnet34")  # another depth: missing keys, named file
    with pytest.raises(UnknownNameError, match="iresnet50"):
        load_embedder(path, arch="resnet")


def test_bad_sources_are_named(tmp_path, tiny_run):
    with pytest.raises(FaceSphereError, match="no such model"):
        load_embedder(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FaceSphereError, match="junk.pt"):
        load_embedder(junk)
    with pytest.raises(FaceSphereError, match="no checkpoint"):
        load_embedder(tmp_path)
    with pytest.raises(FaceSphereError, match="drop --arch"):
        load_embedder(tiny_run / "best.pt", arch="sfnet4")
    with pytest.raises(InvalidOptionError, match="CUDA"):
        load_embedder(tiny_run, fp16=True)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x00garbage")
    with pytest.raises(FaceSphereError, match="bad.onnx"):
        load_embedder(bad_onnx)


def test_checkpoint_of_another_model_is_refused(tiny_run, tmp_path):
    from facesphere.run.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(tiny_run / "best.pt")
    config = json.loads(checkpoint["config"])
    config["model"]["embed_dim"] = 16  # the weights are 32-d
    checkpoint["config"] = json.dumps(config)
    save_checkpoint(checkpoint, tmp_path / "other.pt")
    with pytest.raises(FaceSphereError, match="other.pt.*does not fit"):
        load_embedder(tmp_path / "other.pt")


def _glint_subset(per_identity: int = 5):
    from PIL import Image

    root = DATA / "glint_sample" / "images"
    images, labels = [], []
    for label, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for path in sorted(folder.glob("*.jpg"))[:per_identity]:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def _leave_one_out_rank1(features: np.ndarray, labels: np.ndarray) -> float:
    scores = features @ features.T
    np.fill_diagonal(scores, -np.inf)
    return float(np.mean(labels[scores.argmax(axis=1)] == labels))


@pytest.mark.parametrize("name, backend", [("mobilefacenet_128d.onnx", "OnnxRuntimeEmbedder"),
                                           ("face_recognition_sface_2021dec_int8bq.onnx", "OpenCVEmbedder")])
def test_real_onnx_recognisers_on_aligned_glint_faces(name, backend):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    path = MODELS / name
    if not path.is_file() or not (DATA / "glint_sample").is_dir():
        pytest.skip("shared models / glint sample not present")
    embedder = load_embedder(path)
    assert type(embedder).__name__ == backend  # SFace's block-quantised graph needs OpenCV DNN
    images, labels = _glint_subset()
    features = embedder.embed(images, flip="none")
    assert features.shape == (len(images), 128)
    assert _leave_one_out_rank1(features, labels) >= 0.95


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("sfnet4", embed_dim=16, channels=(4, 8, 8, 16)).eval()


def test_embed_images_module_and_embedder_paths_agree(backbone):
    vset = open_pair_set("synthetic", pairs_per_fold=2)
    embedder = load_embedder(backbone)
    n = 12
    for flip in ("sum", "concat", "none"):
        a = embed_images(backbone, vset.load, n, batch_size=7, flip=flip)
        b = embed_images(embedder, vset.load, n, batch_size=5, flip=flip)
        assert a.shape == (n, 32 if flip == "concat" else 16)
        np.testing.assert_allclose(a, b, atol=1e-5)
    raw = embed_images(embedder, vset.load, n, flip="sum", normalize=False)
    norms = np.linalg.norm(raw, axis=1)
    assert not np.allclose(norms, 1.0)
    np.testing.assert_allclose(raw / norms[:, None], embed_images(embedder, vset.load, n, flip="sum"), atol=1e-6)
    # the training loop's validation takes the nn.Module and returns the same summary as facesphere eval
    metrics, scores = verify_pairs(backbone, vset, batch_size=16)
    assert {"accuracy", "accuracy_std", "auc", "eer", "pairs", "tar_at_far", "definitions"} <= set(metrics)
    assert metrics["protocol"] == "pairs" and scores.shape == (len(vset.issame),)


# ------------------------------------------------------------------------------------------------------------------
# ONNX files onnxruntime refuses: its reason, never a fallback to OpenCV (in a child process: OpenCV may crash)

CHILD_LOAD_ONNX = r"""
import json, os, sys
import cv2
def never(*args, **kwargs):  # a fallback to OpenCV would end the child here
    print(json.dumps({"opencv": True}), flush=True)
    os._exit(3)
cv2.dnn.readNet = cv2.dnn.readNetFromONNX = never
from facesphere import load_embedder
from facesphere.errors import FaceSphereError
out = {}
for path in sys.argv[1:]:
    for backend in ("auto", "onnxruntime", "opencv"):
        try:
            load_embedder(path, backend=backend)
            out[f"{path} {backend}"] = ["loaded", ""]
        except FaceSphereError as error:
            out[f"{path} {backend}"] = [type(error).__name__, str(error)]
print(json.dumps(out))
"""


def _onnx_with_external_data(folder, location: str):
    """A tiny recogniser (1x1 conv, global pooling; ~400 bytes) whose weight lives in external data at ``location``."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2, 3, 1, 1], data_location=TensorProto.EXTERNAL)
    for key, value in {"location": location, "offset": "0", "length": "24"}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_refused_by_onnxruntime_for_safety_never_falls_back_to_opencv(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    (tmp_path / "secret.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    models = {}
    for i, location in enumerate(["../secret.bin", "link.bin", str(tmp_path / "secret.bin")]):
        models[location] = _onnx_with_external_data(tmp_path / f"model{i}", location)
        (tmp_path / f"model{i}" / "link.bin").symlink_to(tmp_path / "secret.bin")  # a link out of the folder
    child = run_isolated(CHILD_LOAD_ONNX, *map(str, models.values()), timeout=180)
    assert child.returncode == 0, f"exit {child.returncode}: {child.stdout[-500:]} {child.stderr[-3000:]}"
    out = json.loads(child.stdout.splitlines()[-1])
    for location, path in models.items():
        for backend in ("auto", "onnxruntime"):  # onnxruntime's own reason, naming the file
            kind, message = out[f"{path} {backend}"]
            assert message.startswith(f"{path}: cannot load this ONNX model: onnxruntime refused it"), message
            assert "External data" in message and "OpenCV" not in message
        kind, message = out[f"{path} opencv"]  # asked for by name: refused before OpenCV reads anything
        assert kind == "DataError" and f"{location!r}, outside the model's folder" in message


def test_onnx_external_data_inside_the_folder_still_loads(tmp_path):
    pytest.importorskip("onnxruntime")
    path = _onnx_with_external_data(tmp_path / "model", "weights/w.bin")
    (tmp_path / "model" / "weights").mkdir()
    (tmp_path / "model" / "weights" / "w.bin").write_bytes(np.ones(6, dtype=np.float32).tobytes())
    embedder = load_embedder(path, input_mean=0.0, input_std=1.0)
    assert type(embedder).__name__ == "OnnxRuntimeEmbedder" and embedder.input_size == (4, 4)
    features = embedder.embed(np.full((1, 4, 4, 3), 2, np.uint8), flip="none", normalize=False)
    np.testing.assert_allclose(features, [[6.0, 6.0]])
