"""The one reader of the CIFAR python-archive files: a restricted unpickler, then every field checked.

A pickle can name any importable callable and have it called while loading, so a data folder handed over by
someone else could run code the moment it is read. `ArchiveUnpickler` resolves only what the official
CIFAR-10/100 archives (and re-packs of them by Python 3 and numpy) need: numpy array reconstruction and the
latin-1 byte-string codec. Anything else is refused before it is imported, with one line naming the file.
Every field is then checked for type, length and range, so that a malformed file is one line, not a traceback.
"""
from __future__ import annotations

import codecs
import os
import pickle
from dataclasses import dataclass

import numpy as np

from core.errors import DataError
from models.stats import IMAGE_SIZE

IMAGE_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE


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
    num_coarse: int = 0  # superclasses (CIFAR-100's 20), each fine class belonging to one
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
        num_coarse=20,
        coarse_label_key="coarse_labels",
        coarse_names_key="coarse_label_names",
    ),
}


# (module, name) -> what the official archives use it for.
NUMPY_GLOBALS = {
    ("numpy", "ndarray"): "array type",
    ("numpy", "dtype"): "array element type",
    ("numpy.core.multiarray", "_reconstruct"): "array reconstruction (numpy < 2 names)",
    ("numpy._core.multiarray", "_reconstruct"): "array reconstruction",
    ("numpy.core.numeric", "_frombuffer"): "array from a buffer (pickle protocol 5)",
    ("numpy._core.numeric", "_frombuffer"): "array from a buffer (pickle protocol 5)",
}


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1"); allow exactly that.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"byte string in unexpected encoding {encoding!r}")
    return codecs.encode(text, "latin1")


class ArchiveUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR archive file; any global outside `NUMPY_GLOBALS` and `_codecs.encode` is refused."""

    def __init__(self, file, path: str):
        # The official archives are Python 2 pickles: latin1 decodes their byte strings losslessly.
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise DataError(f"{self.path}: refused to load: it asks for {module}.{name}, which no CIFAR archive needs "
                        "(a pickle naming it could run code)")


def read_dict(path: str) -> dict[str, object]:
    """The pickled dict in `path`, keys as str; one-line DataError for anything else."""
    try:
        with open(path, "rb") as f:
            obj = ArchiveUnpickler(f, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing from the dataset folder") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CIFAR pickle file") from None
    except PermissionError:
        raise DataError(f"{path}: cannot be read (permission denied)") from None
    except Exception as exc:  # truncated or garbage files raise many different exception types
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(exc).__name__}{': ' + reason if reason else ''})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    if not all(isinstance(key, (str, bytes)) for key in obj):
        raise DataError(f"{path}: expected text keys, found {sorted({type(k).__name__ for k in obj})}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in obj.items()}


def _require(path: str, record: dict, key: str):
    if key not in record:
        raise DataError(f"{path}: missing key {key!r} (found {sorted(record)})")
    return record[key]


def images(path: str, batch: dict) -> np.ndarray:
    """'data': a uint8 array (N, 3072) of R, G, B planes, each 32x32 row-major."""
    data = _require(path, batch, "data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        found = f"dtype {data.dtype} shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, {IMAGE_BYTES}), found {found}")
    return data


def labels(path: str, batch: dict, key: str, num_classes: int, n: int) -> np.ndarray:
    """`key`: a list (or 1-D array) of `n` whole numbers in 0..num_classes-1, as int64."""
    value = _require(path, batch, key)
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
            raise DataError(f"{path}: {key!r} must be a flat list of integers, found an array of dtype {value.dtype} "
                            f"shape {value.shape}")
        values = value.tolist()
    elif isinstance(value, list):
        values = value
        wrong = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if wrong:
            raise DataError(f"{path}: {key!r} must be a flat list of integers, found a {type(wrong[0]).__name__} in it")
    else:
        raise DataError(f"{path}: {key!r} must be a flat list of integers, found {type(value).__name__}")
    if len(values) != n:
        raise DataError(f"{path}: {n} images but {len(values)} entries in {key!r}")
    if values and (min(values) < 0 or max(values) >= num_classes):
        raise DataError(f"{path}: {key!r} out of range: found {min(values)}..{max(values)}, expected 0..{num_classes - 1}")
    return np.asarray(values, dtype=np.int64).reshape(n)


def names(path: str, meta: dict, key: str, expected: int) -> list[str]:
    """`key`: a list of `expected` non-empty class names (text or latin-1 bytes)."""
    value = _require(path, meta, key)
    if not isinstance(value, list) or not all(isinstance(name, (str, bytes)) and name for name in value):
        raise DataError(f"{path}: {key!r} must be a list of non-empty names, found "
                        f"{type(value).__name__ if not isinstance(value, list) else 'other entries in the list'}")
    if len(value) != expected:
        raise DataError(f"{path}: {key!r} has {len(value)} names, expected {expected}")
    return [name.decode("latin1") if isinstance(name, bytes) else name for name in value]


def check_optional_fields(path: str, batch: dict, n: int) -> None:
    """Fields we do not use are still checked when present: 'filenames' (n names), 'batch_label' (text)."""
    if "filenames" in batch:
        filenames = batch["filenames"]
        if not isinstance(filenames, list) or not all(isinstance(name, (str, bytes)) for name in filenames):
            raise DataError(f"{path}: 'filenames' must be a list of names")
        if len(filenames) != n:
            raise DataError(f"{path}: {n} images but {len(filenames)} entries in 'filenames'")
    if "batch_label" in batch and not isinstance(batch["batch_label"], (str, bytes)):
        raise DataError(f"{path}: 'batch_label' must be text, found {type(batch['batch_label']).__name__}")


def check_meta_counts(path: str, meta: dict) -> None:
    """CIFAR-10's batches.meta also holds 'num_cases_per_batch' and 'num_vis' (3072): whole numbers when present."""
    for key in ("num_cases_per_batch", "num_vis"):
        if key in meta and (not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 0):
            value = meta[key]
            # An array's repr spans lines; an error is one line.
            found = (f"an array of dtype {value.dtype} shape {value.shape}" if isinstance(value, np.ndarray)
                     else " ".join(repr(value).split()))
            raise DataError(f"{path}: {key!r} must be a non-negative whole number, found {found}"[:300])
    if "num_vis" in meta and meta["num_vis"] != IMAGE_BYTES:
        raise DataError(f"{path}: 'num_vis' is {meta['num_vis']}, expected {IMAGE_BYTES}")


@dataclass
class Archive:
    """What an unpacked archive holds: per split (images uint8 (N, 3072), labels, coarse labels or None) as numpy
    arrays, and the class names."""

    train: tuple[np.ndarray, np.ndarray, np.ndarray | None]
    test: tuple[np.ndarray, np.ndarray, np.ndarray | None]
    class_names: list[str]
    coarse_class_names: list[str]


def read_archive(root: str, spec: CifarSpec) -> Archive:
    """Every file of the unpacked archive in `root` that `spec` lays out, each field checked."""
    meta_path = os.path.join(root, spec.meta_file)
    meta = read_dict(meta_path)
    class_names = names(meta_path, meta, spec.names_key, spec.num_classes)
    coarse_names = names(meta_path, meta, spec.coarse_names_key, spec.num_coarse) if spec.coarse_names_key else []
    check_meta_counts(meta_path, meta)

    def read_split(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        parts = []
        for name in files:
            path = os.path.join(root, name)
            batch = read_dict(path)
            data = images(path, batch)
            n = len(data)
            fine = labels(path, batch, spec.label_key, spec.num_classes, n)
            coarse = labels(path, batch, spec.coarse_label_key, spec.num_coarse, n) if spec.coarse_label_key else None
            parts.append((data, fine, coarse))
            check_optional_fields(path, batch, n)
        coarse = np.concatenate([p[2] for p in parts]) if spec.coarse_label_key else None
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), coarse

    return Archive(read_split(spec.train_files), read_split(spec.test_files), class_names, coarse_names)
