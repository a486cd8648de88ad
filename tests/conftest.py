import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from synthetic_cifar import write_cifar10, write_cifar100  # noqa: E402
from helpers import run_cli, train_args


def pytest_configure(config):
    """Under pytest-xdist, share the cores among the workers: a worker's torch and the interpreters it starts use
    their share only, since oversubscribed OpenMP threads slow every process several-fold.

    Then start oneDNN: it reads its kernel set (`ONEDNN_MAX_CPU_ISA`) once, at the process's first primitive, and
    the subprocesses that tests compare with read it from this environment. Started here, no test that patches the
    environment can give this process other kernels (tests/test_one_process.py checks it)."""
    import torch

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, cores // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    torch.nn.functional.conv2d(torch.zeros(1, 3, 8, 8), torch.zeros(4, 3, 3, 3))


# The test files that take longest (about 35 to 95 s of a worker's time each on 2 cores), longest first. pytest-xdist
# hands out whole files in collection order, so these start first and the workers finish close together instead of
# one waiting for the other's last long file.
LONGEST_FIRST = ("test_resume.py", "test_kill_anywhere.py", "test_clashes_and_limits.py", "test_run_lock.py", "test_distributed.py",
                 "test_cli.py", "test_compare.py", "test_user_nets.py", "test_study.py", "test_plain_reference.py", "test_bonus.py",
                 "test_benchmark.py")


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


@pytest.fixture(autouse=True)
def away_from_the_checkout(tmp_path, monkeypatch):
    """Each test starts in an empty directory of its own, so that a default path (./data, ./runs) of an in-process
    run never reads a user's data nor writes into the checkout's runs. Subprocesses set their own cwd."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


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


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run (tests/test_resume.py: train_args) that interrupted, resumed and contested runs
    must equal: (data_dir, run_dir); it keeps checkpoint_2.pt and checkpoint_3.pt."""

    root = tmp_path_factory.mktemp("resume")
    data_dir = str(root / "data")
    write_cifar10(data_dir)
    run_dir = root / "reference"
    result = run_cli(train_args(data_dir, run_dir))
    assert result.returncode == 0, result.stderr
    return data_dir, run_dir
