"""tools/cifar10_from_jpeg.py on a tiny JPEG dump: run.py's own reader loads the result, every image is there with
its label and decoded pixels, and a folder and a tarball of it give the same bytes."""
import io
import os
import pickle
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from engine.data.cifar_archive import DATASETS
from engine.data.datasets import load_cifar

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from cifar10_from_jpeg import CLASSES, convert  # noqa: E402


@pytest.fixture
def jpeg_dump(tmp_path):
    """CIFAR-10-images/{train,test}/<class>/NNNN.jpg: 2 training and 1 test image per class; returns the folder
    and {(split, class, name): pixels as they decode}."""
    rng = np.random.default_rng(5)
    root = tmp_path / "CIFAR-10-images"
    decoded = {}
    for split, per_class in (("train", 2), ("test", 1)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG")
                (root / split / cls / f"{i:04d}.jpg").write_bytes(buffer.getvalue())
                decoded[split, cls, f"{i:04d}.jpg"] = np.asarray(Image.open(buffer).convert("RGB"))
    return root, decoded


def test_the_copy_loads_with_every_image_and_label(jpeg_dump, tmp_path):
    source, decoded = jpeg_dump
    convert(str(source), str(tmp_path / "data"))
    data = load_cifar(DATASETS["cifar10"], str(tmp_path / "data"), download=False)
    assert (len(data.train), len(data.test)) == (20, 10) and data.class_names == CLASSES
    folder = tmp_path / "data" / "cifar-10-batches-py"
    for split, part in (("train", data.train), ("test", data.test)):
        files = [f"data_batch_{b}" for b in range(1, 6)] if split == "train" else ["test_batch"]
        names = [name for file in files for name in pickle.loads((folder / file).read_bytes())["filenames"]]
        assert sorted(names) == sorted(f"{c}_{n}" for s, c, n in decoded if s == split)
        for row, name in enumerate(names):
            cls, file = name.split("_", 1)
            assert int(part.labels[row]) == CLASSES.index(cls)
            assert np.array_equal(part.images[row].numpy().transpose(1, 2, 0), decoded[split, cls, file])
    assert sorted(data.train.labels.tolist()) != data.train.labels.tolist()  # shuffled, not in class order


def test_a_tarball_gives_the_same_bytes_as_the_folder(jpeg_dump, tmp_path):
    source, _ = jpeg_dump
    with tarfile.open(tmp_path / "dump.tar.gz", "w:gz") as tar:
        tar.add(source, arcname="CIFAR-10-images")
    a = convert(str(source), str(tmp_path / "a"))
    b = convert(str(tmp_path / "dump.tar.gz"), str(tmp_path / "b"))
    assert sorted(os.listdir(a)) == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                     "data_batch_5", "test_batch"]
    for name in os.listdir(a):
        assert open(os.path.join(a, name), "rb").read() == open(os.path.join(b, name), "rb").read(), name


def test_a_source_without_images_is_refused(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no train/<class>/\\*.jpg images found"):
        convert(str(tmp_path / "empty"), str(tmp_path / "out"))
