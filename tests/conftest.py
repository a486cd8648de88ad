import collections
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from synthetic_cifar import write_cifar10, write_cifar100  # noqa: E402


def pytest_configure(config):
    """Under pytest-xdist, share the cores among the workers: a worker's torch and the interpreters it starts use
    their share only, since oversubscribed OpenMP threads slow every process several-fold.

    Then start oneDNN: it reads its kernel set (`ONEDNN_MAX_CPU_ISA`) once, at the process's first primitive, and
    the subprocesses that tests compare with read it from this environment. Started here, no test that patches the
    environment can give this process other kernels (tests/test_one_process.py checks it).

    xdist's controller runs no test: it skips both and starts the workers without waiting for torch's import."""
    if config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses") and not hasattr(config, "workerinput"):
        return
    import torch

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, cores // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    torch.nn.functional.conv2d(torch.zeros(1, 3, 8, 8), torch.zeros(4, 3, 3, 3))


# pytest-xdist hands out whole test files (--dist loadfile) in collection order, one at a time as workers free up:
# files that take longest go first, so that the workers finish close together. How long a file takes is what it took
# in the last whole run of the suite here (pytest's cache); a file without such a record goes first, before those
# with one, ordered by its number of slow tests.
FILE_SECONDS = "cifar-resnets/file-seconds"
seconds_this_run = collections.Counter()


def pytest_collection_modifyitems(config, items):
    cache = getattr(config, "cache", None)  # None under `-p no:cacheprovider`
    recorded = cache.get(FILE_SECONDS, {}) if cache is not None else {}
    slow = collections.Counter(item.path.name for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: (item.path.name in recorded, -recorded.get(item.path.name, 0), -slow[item.path.name]))


def pytest_runtest_logreport(report):
    """Each test's setup, call and teardown times, summed per file in the process that reports (xdist's controller)."""
    seconds_this_run[os.path.basename(report.nodeid.split("::")[0])] += report.duration


def pytest_sessionfinish(session):
    """Record each file's time after a whole run of the suite (not a selection, not in an xdist worker)."""
    config = session.config
    whole_suite = (config.args_source is pytest.Config.ArgsSource.TESTPATHS and not config.option.markexpr
                   and not config.option.keyword)
    if whole_suite and getattr(config, "cache", None) is not None and not hasattr(config, "workerinput") and seconds_this_run:
        config.cache.set(FILE_SECONDS, {name: round(seconds, 1) for name, seconds in seconds_this_run.items()})


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
    from helpers import run_cli, train_args

    root = tmp_path_factory.mktemp("resume")
    data_dir = str(root / "data")
    write_cifar10(data_dir)
    run_dir = root / "reference"
    result = run_cli(train_args(data_dir, run_dir))
    assert result.returncode == 0, result.stderr
    return data_dir, run_dir
