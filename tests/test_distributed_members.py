"""A study's runs dealt to the processes of torchrun jobs (--parallel members: 2 CPU processes of one thread each,
gloo), checked against the same study trained in one process: equal bit for bit, after kills anywhere too."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import HANG_TIMEOUT, REPO, free_port, read_history, run_in_process, timeless, torchrun


STUDY = ["--bonus", "--seeds", "0", "1", "--dataset", "cifar10", "--epochs", "2", "--batch-size", "32",
         "--train-eval", "40", "--no-progress", "--no-amp"]


def sequential(*args):
    """run.py in this process with one thread, as each torchrun process has."""
    return run_in_process(list(args), threads=1)


def assert_same_study(study_dir, reference_dir):
    """Every member's history and final weights equal, bit for bit, and study.json equal as data."""
    for seed in (0, 1):
        for arch in ("singlestage", "multistage"):
            member, expected = study_dir / f"seed{seed}" / arch, reference_dir / f"seed{seed}" / arch
            assert timeless(read_history(str(member))["epochs"]) == timeless(read_history(str(expected))["epochs"])
            got, want = (torch.load(d / "checkpoint_2.pt", weights_only=True)["model"] for d in (member, expected))
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert timeless(json.loads((study_dir / "study.json").read_text())) == timeless(
        json.loads((reference_dir / "study.json").read_text()))


@pytest.fixture(scope="module")
def sequential_study(tmp_path_factory):
    from synthetic_cifar import write_cifar10

    root = tmp_path_factory.mktemp("members")
    write_cifar10(str(root / "data"))
    result = sequential(*STUDY, "--data-dir", str(root / "data"), "--output-dir", str(root / "sequential"))
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def killed_study(sequential_study, tmp_path_factory):
    """A dealt study SIGKILLed, the whole torchrun job, once its first member has finished: its launcher is gone and
    its workers, in sessions of their own, must end themselves. Returns (study directory, what the job said)."""
    root, study_dir = sequential_study, tmp_path_factory.mktemp("killed") / "study"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "run.py", *STUDY,
               "--data-dir", str(root / "data"), "--parallel", "members", "--output-dir", str(study_dir)]
    job = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    for line in job.stdout:
        if line.startswith("[1/4]"):
            break
    workers = children(job.pid)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=HANG_TIMEOUT)
    deadline = time.monotonic() + 10  # the store is polled 5 times a second
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return study_dir, workers, [alive(worker) for worker in workers], job.stderr.read()


@pytest.mark.slow
@pytest.mark.parametrize("continue_with", ["torchrun", "one process"])
def test_a_dealt_study_killed_anywhere_resumes_to_the_sequential_study(sequential_study, killed_study, tmp_path,
                                                                       continue_with):
    """SIGKILL to the whole torchrun job once the first member has finished; `--resume STUDY` (again dealt, or in one
    process) trains what is missing and ends equal to the uninterrupted study. The job is killed once; each way of
    continuing resumes a copy of what it left."""
    killed_dir, workers, still_alive, said = killed_study
    assert len(workers) == 2
    assert not any(still_alive), "a worker trains on without its launcher"
    assert f"error: the torchrun launcher is gone (its store stopped answering); continue with: python run.py " \
           f"--seeds 0 1 --bonus --resume {killed_dir}\n" in said, said
    assert "Traceback (most recent call last)" not in said, said  # c10d's own warnings may precede the line
    assert not (killed_dir / "study.json").exists()
    study_dir = tmp_path / "study"
    shutil.copytree(killed_dir, study_dir)
    if continue_with == "torchrun":
        result = torchrun("--resume", str(study_dir), "--parallel", "members")
    else:
        result = sequential("--resume", str(study_dir), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert_same_study(study_dir, sequential_study / "sequential")
    assert not list(study_dir.rglob("run.lock"))


@pytest.mark.slow
def test_a_dealt_process_that_dies_ends_the_job_at_once_in_one_line_and_the_resume_ends_the_study(sequential_study,
                                                                                                  tmp_path):
    """--parallel members: rank 1 SIGKILLed inside its first member. torchrun stops the other process, which writes
    what it can without the dead one (its member's interrupted_<i>.pt) and, rather than wait for it, ends within 5 s
    in one line naming the process, its member and the command that continues the study; that resume (in one
    process) ends equal to the sequential study."""
    root, study_dir = sequential_study, tmp_path / "study"
    stopped = torchrun(*STUDY, "--data-dir", str(root / "data"), "--parallel", "members", "--output-dir",
                       str(study_dir), probe=(3, tmp_path / "probe", "1:3:KILL"))
    ended = time.time()
    assert stopped.returncode != 0
    said = [line for line in stopped.stderr.splitlines() if "error: " in line]
    # No frame of ours: the one traceback is torchrun's own summary of the failed process.
    assert len(said) == 1 and stopped.stderr.count("Traceback") <= 1, stopped.stderr
    assert f'{REPO}/run.py"' not in stopped.stderr and f"{REPO}/engine" not in stopped.stderr, stopped.stderr
    assert re.fullmatch(
        rf"error: process 1 of the torchrun job stopped while training (single|multi)stage seed (0|1) \(in "
        rf"{re.escape(str(study_dir))}/seed\2/\1stage\); the others kept what they trained \(their checkpoints\); "
        rf"continue with: python run.py --seeds 0 1 --bonus --resume {re.escape(str(study_dir))}", said[0]), said
    took = ended - float((tmp_path / "probe" / "stopped_at").read_text())
    assert took < 5, f"the job ended {took:.1f} s after the process stopped:\n{stopped.stderr}"
    resumed = sequential("--resume", str(study_dir), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_study(study_dir, root / "sequential")


@pytest.mark.slow
def test_a_study_dealt_over_two_nodes_sharing_a_directory_equals_the_sequential_study(sequential_study):
    """--parallel members: 2 nets x 2 seeds dealt to two torchrun launchers of one process each, as on two machines
    (here on one, meeting through c10d's rendezvous), sharing the study directory. Rank 0 prints a line per member and
    the reports, nothing else; every number equals the sequential study's. (Both processes under one launcher deal
    the same way: the killed study's torchrun resume below ends equal to the sequential study too.)"""
    root, port = sequential_study, free_port()
    # Each process's stderr goes to a file of its own (--redirects 2), apart from what the launchers log themselves.
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
         f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=study", "--log-dir", str(root / f"logs{node}"),
         "--redirects", "2", "run.py", *STUDY,
         "--data-dir", str(root / "data"), "--parallel", "members", "--output-dir", str(root / "two-nodes")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        for node in range(2)]
    outputs = [node.communicate(timeout=HANG_TIMEOUT) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert_same_study(root / "two-nodes", root / "sequential")
    (said, _), (silent, _) = sorted(outputs, key=lambda output: output[0] == "")  # rank 0's node first
    assert silent == "", outputs
    # Neither process said anything on stderr. (The launchers may log of their own: a slow heartbeat under load, or,
    # when the node that hosts the rendezvous leaves first, that the other could not shut it down, a C++ trace.)
    logs = sorted((root / "logs0").rglob("stderr.log")) + sorted((root / "logs1").rglob("stderr.log"))
    assert len(logs) == 2 and [log.read_text() for log in logs] == ["", ""], outputs
    assert not [err for _, err in outputs if "Traceback (most recent call last)" in err], outputs
    lines = said.splitlines()
    assert lines[:2] == [f"Study directory: {root / 'two-nodes'} (seeds 0, 1)",
                         "4 runs dealt to 2 processes, each trained alone"]
    done = [line for line in lines if line.startswith("[")]
    assert sorted(line.split("] ")[1].split(":")[0] for line in done) == [
        "multistage seed 0", "multistage seed 1", "singlestage seed 0", "singlestage seed 1"]
    assert [line.split("]")[0] for line in done] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert "Epoch " not in said


class DictStore:
    """The calls of torch.distributed's store that engine/compare/dealing.Dealer makes, on a dict."""

    def __init__(self):
        self.keys = {}

    def add(self, key, amount):
        self.keys[key] = self.keys.get(key, 0) + amount
        return self.keys[key]

    def set(self, key, value):
        self.keys[key] = value

    def get(self, key):
        return str(self.keys[key]).encode()

    def check(self, keys):
        return all(key in self.keys for key in keys)


def test_a_process_that_ends_once_every_process_has_stopped_taking_members_is_not_lost(monkeypatch):
    """The last process to stop taking members says so in the store ("all stopped") and ends. Rank 0, waiting,
    read the store just before, and then finds that process gone from /proc: its work is done, it is not lost, and
    the wait ends as every wait does (before: "process 1 of the torchrun job stopped")."""
    import engine.devices
    from engine.compare import dealing

    store = DictStore()
    dealer = object.__new__(dealing.Dealer)  # rank 0 of 2, without torchrun's rendezvous
    dealer.store, dealer.rank, dealer.world, dealer.members = store, 0, 2, 4

    def rank_1_stops_and_ends():
        if not store.check(["all stopped"]):
            assert store.add("stopped", 1) == 2  # the last: rank 0 has stopped already
            store.set("all stopped", "")
        return [1], 0  # then gone

    for module in (dealing, engine.devices):  # the look, and process_lost's look again before it names the process
        monkeypatch.setattr(module, "lost_processes", rank_1_stops_and_ends)
    monkeypatch.setenv("RANK", "0")
    before = signal.getsignal(signal.SIGTERM)  # process_lost ignores it from where it names a process
    try:
        dealer.wait_for_all("python run.py --seeds 0 1 --bonus --resume STUDY")
    finally:
        signal.signal(signal.SIGTERM, before)


def process_state(stat: Path) -> list[str]:
    """State, parent and the rest of the fields of Linux's /proc/<pid>/stat after the command's name."""
    return stat.read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(process_state(stat)[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has ended: nobody reaped it yet)."""
    try:
        return process_state(Path(f"/proc/{pid}/stat"))[0] != "Z"
    except OSError:
        return False
