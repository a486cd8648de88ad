import dataclasses
import functools
import hashlib
import http.server
import os
import pickle
import threading

import numpy as np
import pytest
import torch

from engine.data.cifar_archive import DATASETS
from engine.data.datasets import download_and_extract, load_cifar
from engine.data.loader import channel_stats
from core.errors import DataError
from synthetic_cifar import tar_gz_of, write_cifar10, write_cifar100


def test_cifar10_loads_images_labels_and_names(cifar10_dir):
    data_dir, written = cifar10_dir
    data = load_cifar(DATASETS["cifar10"], data_dir, download=False)
    assert data.train.images.shape == (100, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.train.labels.dtype == torch.int64
    assert data.train.labels.tolist() == written["train_y"].tolist()
    assert data.test.labels.tolist() == written["test_y"].tolist()
    # Official layout: each row holds the R plane, then G, then B, each row-major 32x32.
    row = written["train_x"][7]
    assert data.train.images[7, 1, 5, 9].item() == row[1 * 1024 + 5 * 32 + 9]
    assert data.class_names == written["names"]
    assert data.train.coarse_labels is None


def test_cifar100_loads_fine_and_coarse_labels_from_bytes_keys(cifar100_dir):
    data_dir, written = cifar100_dir
    data = load_cifar(DATASETS["cifar100"], data_dir, download=False)
    assert data.num_classes == 100 and len(data.train) == 100 and len(data.test) == 40
    assert data.test.labels.tolist() == written["test_y"].tolist()
    assert data.test.coarse_labels.tolist() == written["fine_to_coarse"][written["test_y"]].tolist()
    assert data.class_names[3] == "fine3" and data.coarse_class_names[19] == "coarse19"
    assert np.array_equal(data.test.images.reshape(40, -1).numpy(), written["test_x"])


def test_channel_stats_match_numpy(cifar10_dir):
    data_dir, written = cifar10_dir
    images = load_cifar(DATASETS["cifar10"], data_dir, download=False).train.images
    mean, std = channel_stats(images, chunk=7)  # a chunk that does not divide N
    planes = written["train_x"].reshape(-1, 3, 1024).transpose(1, 0, 2).reshape(3, -1) / 255.0
    np.testing.assert_allclose(mean.numpy(), planes.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(std.numpy(), planes.std(axis=1), rtol=1e-8)


def test_missing_dataset_without_download_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as info:
        load_cifar(DATASETS["cifar100"], str(tmp_path / "nowhere"), download=False)
    message = str(info.value)
    assert os.path.join(str(tmp_path / "nowhere"), "cifar-100-python") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message


def _rewrite(path, mutate):
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    mutate(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b.pop("data"), r"missing key 'data'"),
        (lambda b: b.pop("labels"), r"missing key 'labels'"),
        (lambda b: b.__setitem__("data", b["data"].astype(np.float32)), r"'data' must be a uint8 array of shape \(N, 3072\)"),
        (lambda b: b.__setitem__("data", b["data"][:, :1024]), r"found dtype uint8 shape \(20, 1024\)"),
        (lambda b: b.__setitem__("labels", b["labels"][:-1]), r"20 images but 19 entries in 'labels'"),
        (lambda b: b["labels"].__setitem__(0, 10), r"'labels' out of range: found \d+\.\.10, expected 0\.\.9"),
        (lambda b: b["labels"].__setitem__(0, -1), r"'labels' out of range: found -1\.\."),
    ],
)
def test_malformed_batch_is_named_in_a_clear_error(cifar10_dir, mutate, message):
    data_dir, written = cifar10_dir
    bad = os.path.join(written["folder"], "data_batch_3")
    _rewrite(bad, mutate)
    with pytest.raises(DataError, match=message) as info:
        load_cifar(DATASETS["cifar10"], data_dir, download=False)
    assert str(info.value).startswith(bad)


def test_truncated_pickle_is_a_clear_error(cifar10_dir):
    data_dir, written = cifar10_dir
    path = os.path.join(written["folder"], "test_batch")
    with open(path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR pickle"):
        load_cifar(DATASETS["cifar10"], data_dir, download=False)


def test_missing_batch_file_is_named(cifar10_dir):
    data_dir, written = cifar10_dir
    os.remove(os.path.join(written["folder"], "data_batch_5"))
    with pytest.raises(DataError, match=r"data_batch_5: file is missing"):
        load_cifar(DATASETS["cifar10"], data_dir, download=False)


@pytest.fixture
def archive_server(tmp_path):
    """Serve a tiny CIFAR-100 archive over HTTP on loopback; yields (url, md5 of the archive)."""
    source = tmp_path / "source"
    write_cifar100(str(source))
    served = tmp_path / "served"
    served.mkdir()
    blob = tar_gz_of(str(source / "cifar-100-python"))
    (served / "cifar-100-python.tar.gz").write_bytes(blob)
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cifar-100-python.tar.gz", hashlib.md5(blob).hexdigest()
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_verifies_md5_and_unpacks(tmp_path, archive_server):
    url, md5 = archive_server
    spec = dataclasses.replace(DATASETS["cifar100"], url=url, md5=md5)
    data_dir = str(tmp_path / "fresh")
    data = load_cifar(spec, data_dir, download=True)
    assert len(data.train) == 100 and len(data.test) == 40
    assert sorted(os.listdir(data_dir)) == ["cifar-100-python", "cifar-100-python.tar.gz"]


def test_download_with_wrong_md5_leaves_nothing_behind(tmp_path, archive_server):
    url, _ = archive_server
    spec = dataclasses.replace(DATASETS["cifar100"], url=url, md5="0" * 32)
    data_dir = tmp_path / "fresh"
    with pytest.raises(DataError, match=r"has md5 [0-9a-f]{32}, expected 0{32}; the file was deleted"):
        download_and_extract(spec, str(data_dir))
    assert os.listdir(data_dir) == []


def test_download_failure_is_a_clear_error(tmp_path, archive_server):
    url, md5 = archive_server
    spec = dataclasses.replace(DATASETS["cifar100"], url=url.replace("cifar-100", "missing"), md5=md5)
    with pytest.raises(DataError, match=r"download of .* failed .*fetch it by hand"):
        load_cifar(spec, str(tmp_path / "fresh"), download=True)
    assert os.listdir(tmp_path / "fresh") == []


def test_official_urls_and_md5s():
    # The published values (https://www.cs.toronto.edu/~kriz/cifar.html).
    assert DATASETS["cifar10"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert DATASETS["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert DATASETS["cifar100"].url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert DATASETS["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"


def test_cifar10_fixture_round_trip_with_other_batch_sizes(tmp_path):
    written = write_cifar10(str(tmp_path), per_batch=3, n_test=5)
    data = load_cifar(DATASETS["cifar10"], str(tmp_path), download=False)
    assert len(data.train) == 15 and len(data.test) == 5
    assert data.train.labels.tolist() == written["train_y"].tolist()
