"""CIFAR-10/100 from the official python archives, read straight into uint8 tensors.

We read the batches ourselves (engine/data/cifar_archive.py: a restricted unpickler, every field checked) instead
of going through torchvision's dataset classes: those unpickle with plain `pickle.load`, re-check the md5 of
every extracted file (a re-packed copy would not load) and convert each image through PIL.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import DataError
from engine.data import cifar_archive
from engine.data.cifar_archive import CifarSpec
from models.stats import IMAGE_SIZE


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
    """Both splits plus the class names kept for reports; after `hold_out`, the validation split too, and where each
    remaining training image was in the official training set."""

    spec: CifarSpec
    train: Split
    test: Split
    class_names: list[str]
    coarse_class_names: list[str] = field(default_factory=list)
    val: Split | None = None
    # Where the validation and the remaining training images were in the official training set (None: no split).
    val_positions: torch.Tensor | None = None
    train_positions: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def num_coarse(self) -> int:
        return self.spec.num_coarse


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
    archive = cifar_archive.read_archive(root, spec)

    def split(images: np.ndarray, labels: np.ndarray, coarse: np.ndarray | None) -> Split:
        return Split(torch.from_numpy(images).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE), torch.from_numpy(labels),
                     None if coarse is None else torch.from_numpy(coarse))

    return CifarData(spec, split(*archive.train), split(*archive.test), archive.class_names, archive.coarse_class_names)


# The generator that picks the validation images: fixed, so that every seed and every net of a comparison or study,
# and every resume, holds out the same images.
VAL_SPLIT_SEED = 20_180_613


def validation_positions(labels: torch.Tensor, size: int, class_names: list[str]) -> torch.Tensor:
    """The positions (sorted) of `size` training images to hold out, class-balanced: each class gives size // C
    images, the first size % C classes one more, each class's drawn by VAL_SPLIT_SEED. Too many for the training set,
    or for one class to keep an image to train on, is one DataError line."""
    num_classes = len(class_names)
    if size >= len(labels):
        raise DataError(f"--val-split {size} is not smaller than the training set ({len(labels)} images)")
    generator = torch.Generator().manual_seed(VAL_SPLIT_SEED)
    held = []
    for label in range(num_classes):
        members = (labels == label).nonzero().flatten()
        count = size // num_classes + (label < size % num_classes)
        if count >= len(members):
            raise DataError(f"--val-split {size} would leave class {class_names[label]!r} without training images "
                            f"(it has {len(members)}, {count} would be held out)")
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(held).sort().values


def hold_out(data: CifarData, size: int) -> CifarData:
    """`data` with `size` training images moved into its validation split (`validation_positions`), before any
    normalisation, sharding or train-eval subset sees the training set; `data` itself for 0."""
    if size == 0:
        return data
    held = validation_positions(data.train.labels, size, data.class_names)
    keep = torch.ones(len(data.train), dtype=torch.bool)
    keep[held] = False
    kept = keep.nonzero().flatten()

    def part(positions: torch.Tensor) -> Split:
        coarse = data.train.coarse_labels
        return Split(data.train.images[positions], data.train.labels[positions],
                     None if coarse is None else coarse[positions])

    return dataclasses.replace(data, train=part(kept), val=part(held), val_positions=held, train_positions=kept)


def positions_hash(positions: torch.Tensor) -> str:
    """A short fingerprint of a set of image positions, as history.json records the held-out ones."""
    return hashlib.sha256(positions.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def download_and_extract(spec: CifarSpec, data_dir: str) -> None:
    """Download the official archive, verify its md5 and unpack it into `data_dir/<spec.folder>/`.

    The archive is unpacked into a temporary folder and moved into place only when complete, and an archive
    with the wrong md5 is deleted, so a failure never leaves a half-extracted dataset behind.
    """
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create data directory {data_dir}: {exc.strerror}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):  # say so before a download that could not be saved
        raise DataError(f"cannot download {spec.name} into {data_dir}: the folder is not writable; choose another "
                        "--data-dir or unpack the archive there by hand")
    # torchvision's archive utils, imported here: importing torchvision costs every run a second at start-up.
    from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

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
