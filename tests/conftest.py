import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from synthetic_cifar import write_cifar10, write_cifar100  # noqa: E402


@pytest.fixture
def cifar10_dir(tmp_path):
    """A data dir with a tiny CIFAR-10 (100 train, 40 test); yields (data_dir, what was written)."""
    data_dir = tmp_path / "data"
    return str(data_dir), write_cifar10(str(data_dir))


@pytest.fixture
def cifar100_dir(tmp_path):
    """A data dir with a tiny CIFAR-100 (100 train, 40 test)."""
    data_dir = tmp_path / "data"
    return str(data_dir), write_cifar100(str(data_dir))
