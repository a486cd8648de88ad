"""CIFAR-10/100 from the official python archives, read straight into uint8 tensors.

We unpickle the batches ourselves instead of going through torchvision's dataset classes: those re-check
the md5 of every extracted file (a re-packed copy would not load) and convert each image through PIL.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

from engine.errors import DataError


@dataclass(frozen=True)
class CifarSpec:
    """Where an official CIFAR python archive lives and how its pickles are laid out."""

    name: str
    url: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    coarse_label_key: str | None = None
    coarse_names_key: str | None = None

    @property
    def archive_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


DATASETS = {
    "cifar10": CifarSpec(
        name="cifar10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        coarse_label_key="coarse_labels",
        coarse_names_key="coarse_label_names",
    ),
}


@dataclass
class Split:
    """One split as tensors: images uint8 (N, 3, 32, 32), labels int64 (N,), coarse labels or None."""

    images: torch.Tensor
    labels: torch.Tensor
    coarse_labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class CifarData:
    """Both splits plus the class names kept for reports."""

    spec: CifarSpec
    train: Split
    test: Split
    class_names: list[str]
    coarse_class_names: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            # The official archives are Python 2 pickles: latin1 decodes their byte strings losslessly.
            obj = pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing from the dataset folder") from None
    except Exception as exc:  # truncated or garbage files raise many different exception types
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _labels(path: str, batch: dict, key: str, num_classes: int, n: int) -> np.ndarray:
    if key not in batch:
        raise DataError(f"{path}: missing key {key!r} (found {sorted(batch)})")
    labels = np.asarray(batch[key])
    if labels.size == 0:
        labels = labels.reshape(0).astype(np.int64)  # an empty list has no integer dtype of its own
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {key!r} must be a flat list of integers, found dtype {labels.dtype} shape {labels.shape}")
    if len(labels) != n:
        raise DataError(f"{path}: {n} images but {len(labels)} entries in {key!r}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: {key!r} out of range: found {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}")
    return labels.astype(np.int64)


def _read_batch(path: str, spec: CifarSpec, num_coarse: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    batch = _unpickle(path)
    if "data" not in batch:
        raise DataError(f"{path}: missing key 'data' (found {sorted(batch)})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"dtype {data.dtype} shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), found {desc}")
    n = len(data)
    labels = _labels(path, batch, spec.label_key, spec.num_classes, n)
    coarse = None
    if spec.coarse_label_key:
        coarse = _labels(path, batch, spec.coarse_label_key, num_coarse, n)
    return data, labels, coarse


def _read_split(root: str, files: tuple[str, ...], spec: CifarSpec, num_coarse: int) -> Split:
    parts = [_read_batch(os.path.join(root, name), spec, num_coarse) for name in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])).view(-1, 3, 32, 32)
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    coarse = torch.from_numpy(np.concatenate([p[2] for p in parts])) if spec.coarse_label_key else None
    return Split(images, labels, coarse)


def _read_names(path: str, key: str, expected: int) -> list[str]:
    meta = _unpickle(path)
    if key not in meta:
        raise DataError(f"{path}: missing key {key!r} (found {sorted(meta)})")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]
    if len(names) != expected:
        raise DataError(f"{path}: {key!r} has {len(names)} names, expected {expected}")
    return names


def load_cifar(spec: CifarSpec, data_dir: str, download: bool = True) -> CifarData:
    """Load `spec` from `data_dir/<spec.folder>/`, downloading the official archive first if it is absent."""
    root = os.path.join(data_dir, spec.folder)
    if not os.path.isdir(root):
        if not download:
            raise DataError(
                f"{spec.name} not found: expected the folder {os.path.abspath(root)}/ (the unpacked official python "
                f"archive); download {spec.url} and unpack it into {os.path.abspath(data_dir)}/, or drop --no-download"
            )
        download_and_extract(spec, data_dir)
    num_coarse = 20 if spec.coarse_label_key else 0
    class_names = _read_names(os.path.join(root, spec.meta_file), spec.names_key, spec.num_classes)
    coarse_names = (
        _read_names(os.path.join(root, spec.meta_file), spec.coarse_names_key, num_coarse) if spec.coarse_names_key else []
    )
    train = _read_split(root, spec.train_files, spec, num_coarse)
    test = _read_split(root, spec.test_files, spec, num_coarse)
    return CifarData(spec, train, test, class_names, coarse_names)


def download_and_extract(spec: CifarSpec, data_dir: str) -> None:
    """Download the official archive, verify its md5 and unpack it into `data_dir/<spec.folder>/`.

    The archive is unpacked into a temporary folder and moved into place only when complete, and an archive
    with the wrong md5 is deleted, so a failure never leaves a half-extracted dataset behind.
    """
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create data directory {data_dir}: {exc.strerror}") from None
    archive = os.path.join(data_dir, spec.archive_name)
    print(f"Downloading {spec.url} to {archive}", flush=True)
    try:
        download_url(spec.url, data_dir, filename=spec.archive_name)
    except Exception as exc:
        _remove(archive)
        raise DataError(f"download of {spec.url} failed ({exc}); fetch it by hand and unpack it into {data_dir}/") from None
    actual = calculate_md5(archive)
    if actual != spec.md5:
        _remove(archive)
        raise DataError(f"downloaded {spec.archive_name} has md5 {actual}, expected {spec.md5}; the file was deleted")
    staging = tempfile.mkdtemp(prefix=".extract-", dir=data_dir)
    try:
        extract_archive(archive, staging)
        unpacked = os.path.join(staging, spec.folder)
        if not os.path.isdir(unpacked):
            raise DataError(f"{archive} does not contain the folder {spec.folder}/")
        os.replace(unpacked, os.path.join(data_dir, spec.folder))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot unpack {archive}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def channel_stats(images: torch.Tensor, chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, 3, H, W) in [0, 1] units, in float64, chunked to save memory."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean, std
