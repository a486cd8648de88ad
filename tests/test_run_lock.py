"""One process per run directory: a second writer is refused in one line and writes nothing, readers never wait,
and a killed holder leaves no lock behind."""
import fcntl
import os
import re
import signal
import time

import pytest

from core.errors import RunInUse
from engine.run_lock import hold, in_use
from helpers import HANG_TIMEOUT, assert_same_as_reference, read_history, run_in_process, start_run, train_args

IN_USE = r"error: {dir} is in use by process (\d+) \(started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\); wait for it or stop it\n"


def start_paused(args, pause_dir, iteration):
    """run.py in a process of its own that waits after training `iteration` iterations, holding its directory, until
    `release(pause_dir)`."""
    os.makedirs(pause_dir, exist_ok=True)
    return start_run(args, f"pause-iteration:{iteration}", env={"FAULT_PAUSE_DIR": str(pause_dir)})


def wait_until_paused(process, pause_dir):
    deadline = time.monotonic() + HANG_TIMEOUT
    while not os.path.exists(os.path.join(pause_dir, f"paused-{process.pid}")):
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode} before pausing: {process.communicate()}")
        assert time.monotonic() < deadline, "never paused"
        time.sleep(0.05)


def release(pause_dir):
    open(os.path.join(pause_dir, "go"), "w").close()


def snapshot(directory):
    """Every file below `directory` with its size and modification time: what 'writes nothing' compares."""
    return {os.path.relpath(os.path.join(root, name), directory): (os.stat(os.path.join(root, name)).st_size,
                                                                   os.stat(os.path.join(root, name)).st_mtime_ns)
            for root, _, names in os.walk(directory) for name in names}


@pytest.mark.slow
def test_two_simultaneous_resumes_one_trains_the_other_is_refused(reference, tmp_path):
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    args = train_args(data_dir, run_dir)
    first = run_in_process([*args[:args.index("--epochs") + 1], "1", *args[args.index("--epochs") + 2:]])
    assert first.returncode == 0, first.stderr
    pause_dir = tmp_path / "pause"
    both = [start_paused([*args, "--resume", str(run_dir)], pause_dir, iteration=6) for _ in range(2)]
    deadline = time.monotonic() + HANG_TIMEOUT
    while all(p.poll() is None for p in both):  # the refused one ends at once, the other waits at iteration 6
        assert time.monotonic() < deadline
        time.sleep(0.05)
    refused = next(p for p in both if p.poll() is not None)
    trainer = next(p for p in both if p is not refused)
    out, err = refused.communicate()
    assert refused.returncode == 1, err
    holder = re.fullmatch(IN_USE.format(dir=re.escape(str(run_dir))), err)
    assert holder and int(holder.group(1)) == trainer.pid, err
    assert "Device:" not in out  # refused before loading data or building anything
    wait_until_paused(trainer, pause_dir)
    release(pause_dir)
    out, err = trainer.communicate(timeout=HANG_TIMEOUT)
    assert trainer.returncode == 0, err
    # One run's history, the two last checkpoints, one continuous TensorBoard stream: as if never contested.
    assert sorted(f for f in os.listdir(run_dir) if f.endswith(".pt")) == ["checkpoint_2.pt", "checkpoint_3.pt"]
    assert_same_as_reference(run_dir, reference_dir)


@pytest.mark.slow
def test_a_resume_while_the_run_trains_is_refused_and_a_killed_holder_leaves_no_lock(reference, tmp_path):
    data_dir, reference_dir = reference
    run_dir, pause_dir = tmp_path / "run", tmp_path / "pause"
    trainer = start_paused(train_args(data_dir, run_dir), pause_dir, iteration=6)  # in epoch 2 of 3
    wait_until_paused(trainer, pause_dir)
    before = snapshot(run_dir)
    for resume in (str(run_dir), str(run_dir / "checkpoint_1.pt")):
        refused = run_in_process([*train_args(data_dir, run_dir), "--resume", resume])
        assert refused.returncode == 1
        holder = re.fullmatch(IN_USE.format(dir=re.escape(str(run_dir))), refused.stderr)
        assert holder and int(holder.group(1)) == trainer.pid, refused.stderr
    auto = run_in_process([*train_args(data_dir, run_dir)[:-2], "--runs-root", str(tmp_path), "--resume", "auto"])
    assert auto.returncode == 1
    assert f"--resume auto: skipping {run_dir}, in use by process {trainer.pid}" in auto.stdout
    assert auto.stderr.startswith(f"error: --resume auto: no run under {tmp_path}/ with this configuration has a "
                                  "checkpoint that is not in use (1 in use)")
    assert snapshot(run_dir) == before  # the refused processes wrote nothing
    # Reading never takes the lock: the checkpoint of epoch 1 is re-tested while epoch 2 trains.
    assert run_in_process(["--evaluate", str(run_dir / "checkpoint_1.pt"), "--data-dir", data_dir]).returncode == 0
    # The holder dies without a word: its lock dies with it (the file stays), and a resume finishes the run and
    # removes the file as it ends.
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(timeout=HANG_TIMEOUT)
    assert f"process {trainer.pid} " in (run_dir / "run.lock").read_text()
    resumed = run_in_process([*train_args(data_dir, run_dir), "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(run_dir, reference_dir)
    assert not (run_dir / "run.lock").exists()


def test_a_holder_removes_its_lock_file_as_it_lets_go(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with hold(str(run_dir)):
        assert (run_dir / "run.lock").read_text().startswith(f"process {os.getpid()} ")
        assert in_use(str(run_dir)) is not None
    assert os.listdir(run_dir) == [] and in_use(str(run_dir)) is None


def test_a_lock_won_on_a_file_its_holder_removed_is_tried_again_on_the_file_of_that_name(tmp_path, monkeypatch):
    """The interleaving a removed lock file allows: B opens run.lock; holder A lets go (removing it); C creates a
    new run.lock and locks it; B's lock on the removed file succeeds but guards nothing: B must be refused, naming C.
    (flock locks belong to open files, so the three holders can live in one process.)"""
    directory = str(tmp_path / "run")
    os.mkdir(directory)
    first = hold(directory)
    first.__enter__()
    real_flock, third = fcntl.flock, hold(directory)
    interleaved = []

    def the_holder_lets_go_and_another_takes_over(fd, operation):
        if not interleaved:  # B, between its open and its flock
            interleaved.append(fd)
            first.__exit__(None, None, None)
            third.__enter__()
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", the_holder_lets_go_and_another_takes_over)
    with pytest.raises(RunInUse, match=f"is in use by process {os.getpid()} "):
        with hold(directory):
            pass
    assert interleaved  # the interleaving happened
    monkeypatch.setattr(fcntl, "flock", real_flock)
    third.__exit__(None, None, None)
    assert os.listdir(directory) == []


@pytest.mark.slow
def test_a_study_and_its_report_are_refused_while_one_of_its_runs_trains_elsewhere(reference, tmp_path):
    data_dir, _ = reference
    study = tmp_path / "study"
    common = ["--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "32", "--no-progress", "--no-amp"]
    assert run_in_process([*common, "--epochs", "1", "--seeds", "0", "1", "--output-dir", str(study)]).returncode == 0
    pause_dir = tmp_path / "pause"
    trainer = start_paused([*common, "--epochs", "2", "--resume", str(study / "seed1")], pause_dir, iteration=1)
    wait_until_paused(trainer, pause_dir)
    before = snapshot(study)
    for args in ([*common, "--epochs", "2", "--seeds", "0", "1", "--resume", str(study)], ["--report", str(study)]):
        refused = run_in_process(args)
        assert refused.returncode == 1
        holder = re.fullmatch(IN_USE.format(dir=re.escape(str(study / "seed1"))), refused.stderr)
        assert holder and int(holder.group(1)) == trainer.pid, refused.stderr
        assert snapshot(study) == before
    release(pause_dir)
    _, err = trainer.communicate(timeout=HANG_TIMEOUT)
    assert trainer.returncode == 0, err
    assert read_history(str(study / "seed1"))["status"] == "completed"


@pytest.mark.slow
def test_history_never_says_running_after_a_failure(reference, tmp_path, monkeypatch):
    """An error that ends the training (here: a bug in a handler at epoch 2) is recorded as the run's status."""
    import engine.build
    from ignite.engine import Events

    data_dir, _ = reference
    run_dir = tmp_path / "run"
    build_run = engine.build.build_run

    def build_then_break(recipe, setup, data):
        built = build_run(recipe, setup, data)

        def boom(engine):
            if engine.state.epoch == 2:
                raise RuntimeError("a handler broke")

        built.trainer.add_event_handler(Events.EPOCH_STARTED, boom)
        return built

    monkeypatch.setattr(engine.build, "build_run", build_then_break)
    with pytest.raises(RuntimeError, match="a handler broke"):
        run_in_process(train_args(data_dir, run_dir))
    history = read_history(str(run_dir))
    assert history["status"] == "failed: a handler broke" and [e["epoch"] for e in history["epochs"]] == [1]
