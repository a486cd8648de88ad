"""Tiny synthetic CIFAR data written in the exact layout of the official python archives."""
from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np


def _dump(obj, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(rng: np.random.Generator, labels: np.ndarray, num_classes: int) -> np.ndarray:
    # Noise plus a class-dependent brightness, so that a net can learn something from it.
    base = rng.integers(0, 256, size=(len(labels), 3072)).astype(np.int64)
    return ((base + (labels[:, None] * 255) // max(num_classes - 1, 1)) // 2).astype(np.uint8)


def write_cifar10(root: str, per_batch: int = 20, n_test: int = 40, seed: int = 0) -> dict:
    """`root/cifar-10-batches-py/` with five training batches of `per_batch` images; returns what was written."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        labels = rng.integers(0, 10, size=per_batch)
        data = _images(rng, labels, 10)
        _dump({"batch_label": f"training batch {b} of 5", "labels": labels.tolist(), "data": data,
               "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)]}, os.path.join(folder, f"data_batch_{b}"))
        train_x.append(data)
        train_y.append(labels)
    test_y = rng.integers(0, 10, size=n_test)
    test_x = _images(rng, test_y, 10)
    _dump({"batch_label": "testing batch 1 of 1", "labels": test_y.tolist(), "data": test_x,
           "filenames": [f"test_{i}.png" for i in range(n_test)]}, os.path.join(folder, "test_batch"))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, os.path.join(folder, "batches.meta"))
    return {"folder": folder, "train_x": np.concatenate(train_x), "train_y": np.concatenate(train_y),
            "test_x": test_x, "test_y": test_y, "names": names}


def write_cifar100(root: str, n_train: int = 100, n_test: int = 40, seed: int = 0) -> dict:
    """`root/cifar-100-python/` (train, test, meta) with byte-string keys, as Python 2 wrote the original."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    fine_to_coarse = np.arange(100) % 20
    written = {"folder": folder, "fine_to_coarse": fine_to_coarse}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, size=n)
        data = _images(rng, fine, 100)
        _dump({b"filenames": [b"x.png"] * n, b"batch_label": split.encode(), b"fine_labels": fine.tolist(),
               b"coarse_labels": fine_to_coarse[fine].tolist(), b"data": data}, os.path.join(folder, split))
        written[f"{split}_x"], written[f"{split}_y"] = data, fine
    _dump({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
           b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, os.path.join(folder, "meta"))
    return written


def tar_gz_of(folder: str) -> bytes:
    """A .tar.gz holding `folder` under its own name, like the official archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=os.path.basename(folder))
    return buffer.getvalue()
