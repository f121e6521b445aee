"""Files facesphere writes honour the umask like any other tool: a gallery, an exported model, an aligned image."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from PIL import Image

from facesphere.infer.align_folder import align_folder
from facesphere.infer.gallery import Gallery


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield 0o640
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_gallery_export_and_aligned_images_take_the_umasks_mode(umask_027, tiny_run, tmp_path):
    expected = umask_027
    with Gallery.create(tmp_path / "g", 4, backend="numpy") as gallery:
        gallery.add(np.eye(4)[:2], ["a", "b"])
    assert _mode(tmp_path / "g" / "gallery.sqlite") == expected

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(src / "face.png")
    points = {"face.png": np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])}
    align_folder(src, tmp_path / "aligned", landmarks=points, progress=False)
    assert _mode(tmp_path / "aligned" / "face.png") == expected
    assert _mode(tmp_path / "aligned" / "align_report.json") == expected

    pytest.importorskip("onnxruntime")
    from facesphere.infer.export import export_onnx

    export_onnx(tiny_run, tmp_path / "model.onnx", exporter="torchscript")
    assert _mode(tmp_path / "model.onnx") == expected
