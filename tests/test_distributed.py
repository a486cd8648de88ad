"""torchrun with 2 CPU processes (gloo) sharing one run (--parallel data) on tiny data, checked against independent
computations. tests/test_distributed_members.py deals the runs of a study to the processes (--parallel members)."""
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import HANG_TIMEOUT, REPO, independent_eval, read_history, timeless, torchrun
from test_validation import expected_positions


# 120 training images, 20 held out (--val-split): 100 shared by the 2 processes, 32 a step: 4 iterations an epoch.
RUN = ["--dataset", "cifar10", "--epochs", "2", "--batch-size", "32", "--val-split", "20", "--no-progress", "--no-amp"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The one uninterrupted torchrun job the tests here check and compare with: (root, what was written, the
    positions of the images it trains on, its result)."""
    from synthetic_cifar import write_cifar10

    root = tmp_path_factory.mktemp("ddp")
    written = write_cifar10(str(root / "data"), per_batch=24)
    result = torchrun(*RUN, "--data-dir", str(root / "data"), "--output-dir", str(root / "runs" / "run"),
                      dump=root / "dump")
    kept = np.setdiff1d(np.arange(120), expected_positions(written["train_y"], 20))
    return root, written, kept, result


@pytest.mark.slow
def test_exits_0_and_only_rank_0_writes(ddp_run):
    root, _, _, result = ddp_run
    assert result.returncode == 0, result.stderr
    assert os.listdir(root / "runs") == ["run"]
    assert result.stdout.count("Epoch   1/2") == 1 and result.stdout.count("Run directory:") == 1
    history = read_history(str(root / "runs" / "run"))
    assert (history["world_size"], history["backend"], history["global_batch_size"]) == (2, "gloo", 32)
    assert sorted(f for f in os.listdir(root / "runs" / "run") if f.endswith(".pt")) == ["checkpoint_1.pt", "checkpoint_2.pt"]


@pytest.mark.slow
def test_held_out_images_are_excluded_before_every_sample_is_trained_on_once_per_epoch(ddp_run):
    """--val-split under torchrun: each process trains on its half of the remaining images; together they see every
    remaining image once per epoch and never a held-out one (the dumped index is a place in the split). The epoch
    loss is the mean over both processes' samples."""
    root, _, kept, _ = ddp_run
    history = read_history(str(root / "runs" / "run"))
    assert history["num_val"] == 20
    for epoch in (1, 2):
        parts = [torch.load(root / "dump" / f"rank{rank}_epoch{epoch}.pt", weights_only=True) for rank in (0, 1)]
        assert len(parts[0]["index"]) == 50 and len(parts[1]["index"]) == 50  # split evenly
        indices = torch.cat([p["index"] for p in parts])
        assert sorted(kept[indices.numpy()].tolist()) == kept.tolist()
        losses = torch.cat([p["loss"] for p in parts]).double()
        expected = float(losses.sum() / len(losses))  # sample-weighted over both ranks
        assert history["epochs"][epoch - 1]["train_loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_test_accuracy_equals_a_single_process_evaluation_of_the_saved_model(ddp_run):
    root, written, kept, _ = ddp_run
    run_dir = str(root / "runs" / "run")
    trained_on = dict(written, train_x=written["train_x"][kept])  # normalised by the images it trains on
    predictions, loss = independent_eval(run_dir, "multistage", trained_on, 10, epoch=2)
    final = read_history(run_dir)["epochs"][-1]
    assert final["test_accuracy"] == pytest.approx(float(np.mean(predictions == written["test_y"])), abs=1e-12)
    assert final["test_loss"] == pytest.approx(loss, rel=1e-4)


@pytest.mark.slow
def test_processes_agree_on_a_stop_every_log_every_iterations_and_it_resumes_exactly(ddp_run, tmp_path):
    """log_every 3 (a GPU's cadence, scaled to 4 iterations an epoch): the processes agree, with one collective, after
    iterations 3 and 6 inside the epochs and after each epoch's end, never after every iteration. Rank 1 alone gets a
    SIGTERM after iteration 5: both stop at the next agreement, iteration 6, and the resume ends as the uninterrupted
    run did."""
    root = ddp_run[0]
    run_dir = tmp_path / "run"
    args = [*RUN, "--data-dir", str(root / "data")]
    stopped = torchrun(*args, "--output-dir", str(run_dir), probe=(3, tmp_path / "probe", "1:5"))
    assert stopped.returncode != 0
    assert (f"interrupted at epoch 2, iteration 6; checkpoint written. Continue with: python run.py --resume {run_dir}"
            in stopped.stderr), stopped.stderr
    assert os.path.exists(run_dir / "interrupted_6.pt")
    for rank in (0, 1):
        noted = json.loads((tmp_path / "probe" / f"collectives_rank{rank}.json").read_text())
        in_iterations = [(iteration, operation) for iteration, event, operation in noted if event == "ITERATION_COMPLETED"]
        assert in_iterations == [(3, "all_reduce"), (6, "all_reduce")]  # 6 iterations ran: not one per iteration
        assert any(event == "EPOCH_COMPLETED" and iteration == 4 for iteration, event, _ in noted)
    resumed = torchrun(*args, "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {run_dir / 'interrupted_6.pt'}: 1 epoch done, at iteration 6)" in resumed.stdout
    assert resumed.stdout.count("Epoch   2/2") == 1 and "Epoch   1/2" not in resumed.stdout
    reference = root / "runs" / "run"
    assert timeless(read_history(str(run_dir))["epochs"]) == timeless(read_history(str(reference))["epochs"])
    ours, theirs = (torch.load(d / "checkpoint_2.pt", weights_only=True)["model"] for d in (run_dir, root / "runs" / "run"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["KILL", "OOM"])
def test_a_process_that_dies_ends_the_job_at_once_in_one_line_and_the_resume_is_exact(ddp_run, tmp_path, how):
    """--parallel data: rank 1 SIGKILLed after iteration 6 (inside epoch 2), or stopped there by an error of its own
    (out of memory): rank 0, whose collective can never complete, ends within 5 s in one line that names the process,
    the run and the command that continues it, without a traceback; that resume ends as the uninterrupted run (after
    the kill: the error leaves the same checkpoints)."""
    root = ddp_run[0]
    run_dir = tmp_path / "run"
    args = [*RUN, "--data-dir", str(root / "data")]
    stopped = torchrun(*args, "--output-dir", str(run_dir), probe=(3, tmp_path / "probe", f"1:6:{how}"))
    ended = time.time()
    assert stopped.returncode != 0
    said = [line for line in stopped.stderr.splitlines() if "error: " in line]
    assert said[-1:] == [f"error: process 1 of the torchrun job stopped while training {run_dir} at epoch 2, "
                         f"iteration 6; the last good checkpoint is checkpoint_1.pt (epoch 1) in {run_dir}; "
                         f"continue with: python run.py --resume {run_dir}"], stopped.stderr
    assert len(said) == 1 and stopped.stderr.count("Traceback") <= 1, stopped.stderr  # torchrun's own summary
    assert f'{REPO}/run.py"' not in stopped.stderr and f"{REPO}/engine" not in stopped.stderr, stopped.stderr
    took = ended - float((tmp_path / "probe" / "stopped_at").read_text())
    assert took < 5, f"the job ended {took:.1f} s after the process stopped:\n{stopped.stderr}"
    if how == "OOM":
        return  # what it left is what the killed job leaves (checkpoint_1.pt): one resume proves both
    resumed = torchrun(*args, "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    reference = root / "runs" / "run"
    assert timeless(read_history(str(run_dir))["epochs"]) == timeless(read_history(str(reference))["epochs"])
    ours, theirs = (torch.load(d / "checkpoint_2.pt", weights_only=True)["model"] for d in (run_dir, reference))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.slow
def test_the_other_ranks_follow_rank_0s_verdict_on_a_run_in_use(ddp_run, monkeypatch):
    """What rank 1 of a torchrun job does when rank 0 finds the run locked: it receives the refusal and raises it
    too, so no process trains (the broadcast stands in for gloo's; rank 0's side is the single-process path)."""
    import ignite.distributed as idist

    import engine.run_lock
    from core.errors import RunDirError

    root = ddp_run[0]
    run_dir = str(root / "runs" / "run")
    with engine.run_lock.hold(run_dir):  # this test process is the holder; rank 0 would be refused with this line
        with pytest.raises(engine.run_lock.RunInUse) as on_rank_0:
            with engine.run_lock.hold(run_dir):
                pass
    sent = []
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    monkeypatch.setattr(idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(idist, "broadcast", lambda value, src, safe_mode: sent.append(value) or "\0" + str(on_rank_0.value))
    with pytest.raises(RunDirError, match=f"{run_dir} is in use by process {os.getpid()} "):
        with engine.run_lock.hold(run_dir):
            raise AssertionError("rank 1 must not enter the run")
    assert sent == [""]  # rank 1 tried nothing itself: it only received the verdict


@pytest.mark.slow
def test_parallel_members_refuses_a_single_run_once(ddp_run):
    root = ddp_run[0]
    run_dir = root / "runs" / "run"
    result = torchrun("--resume", str(run_dir), "--parallel", "members")
    assert result.returncode == 1  # torchrun reports the failed process below the line; it is said once
    assert [line for line in result.stderr.splitlines() if "error: " in line] == [
        f"error: --parallel members needs a plan of several runs; {run_dir} is a single run"]


@pytest.mark.slow
def test_a_wrong_command_under_torchrun_is_said_once_by_rank_0():
    """Every process parses the command; rank 0 alone says what is wrong, the other exits with the same code."""
    result = torchrun("--arch", "multistage", "--parallel", "members")
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if "error: " in line] == [
        "run.py: error: argument --parallel: members needs a plan of several runs (--seeds, --bonus or --compare)"]
    assert result.stderr.count("usage: ") == 1


def test_parallel_members_needs_a_plan_of_several_runs(capsys):
    import run

    with pytest.raises(SystemExit) as stopped:
        run.main(["--arch", "multistage", "--parallel", "members"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: argument --parallel: members needs a plan of several runs (--seeds, --bonus or --compare)\n")


# The process torchrun starts, told that 8 cores are its own: its share then differs from both 1 and all the cores,
# on a machine of any size.
THREADS_AFTER_SHARE = ("import os, torch; from engine.devices import take_a_share_of_the_cores; "
                       "os.sched_getaffinity = lambda pid: set(range(8)); "
                       "take_a_share_of_the_cores(); print(torch.get_num_threads())")


@pytest.mark.slow
@pytest.mark.parametrize("given, processes, threads", [(None, 1, 8), (None, 2, 4), ("1", 2, 1)])
def test_a_process_dealt_runs_takes_its_share_of_the_cores_unless_threads_are_given(given, processes, threads):
    """What torchrun does for each of several processes: OMP_NUM_THREADS=1 unless its own environment sets it. The
    launcher here is a shell that stays the parent (`; exit`), whose environment the process reads."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if given:
        env["OMP_NUM_THREADS"] = given
    launcher = (f'LOCAL_WORLD_SIZE={processes} OMP_NUM_THREADS="${{OMP_NUM_THREADS:-1}}" '
                f'"$0" -c {shlex.quote(THREADS_AFTER_SHARE)}; exit $?')
    result = subprocess.run(["sh", "-c", launcher, sys.executable], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=HANG_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == threads


def test_a_process_that_has_begun_to_exit_has_stopped(tmp_path, monkeypatch):
    """A killed process closes its sockets, failing its peers' collective, while it exits, before Linux shows it as a
    zombie (milliseconds; on a loaded machine longer): its peer, looking for why the collective failed, must find it
    stopped then too. Here this test's process is rank 0 of a launcher's two, beside rank 1 as /proc would show it
    (running, exiting, a zombie, gone), in a folder standing for /proc."""
    from engine.devices import lost_processes

    launcher, proc, exiting = 4242, tmp_path / "proc", 0x4  # PF_EXITING, in Linux's include/linux/sched.h
    monkeypatch.setattr(os, "getppid", lambda: launcher)
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)

    def show(pid, rank, state, flags=0x400000):  # 0x400000: PF_RANDOMIZE, as most processes have
        (proc / str(pid)).mkdir(parents=True, exist_ok=True)
        (proc / str(pid) / "stat").write_text(f"{pid} (python run.py) {state} {launcher} {pid} {pid} 0 -1 {flags} 0 0\n")
        (proc / str(pid) / "environ").write_bytes(f"PATH=/bin\0LOCAL_RANK={rank}\0RANK={rank}\0".encode())

    show(100, 0, "R")
    show(101, 1, "S")
    assert lost_processes(str(proc)) is None  # both run
    show(101, 1, "R", 0x400000 | exiting)
    assert lost_processes(str(proc)) == ([1], 0)
    show(101, 1, "Z", 0x400000 | exiting)
    assert lost_processes(str(proc)) == ([1], 0)
    shutil.rmtree(proc / "101")
    assert lost_processes(str(proc)) == ([1], 0)


def test_the_process_that_says_another_stopped_is_not_ended_by_torchruns_sigterm_meanwhile(monkeypatch):
    """Once torchrun sees a process die it sends every other one SIGTERM, maybe while the survivor is saying why the
    job ended, after its run's signal handlers were put back: from the moment it finds the stopped process, SIGTERM
    is ignored (it exits right after saying so), and putting the run's handlers back keeps that."""
    import signal

    from ignite.engine import Engine, Events

    import engine.devices
    from handlers.interrupts import GracefulStop

    monkeypatch.setattr(engine.devices, "lost_processes", lambda: ([1], 0))
    monkeypatch.setenv("RANK", "0")
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer, stop = Engine(lambda engine, batch: None), GracefulStop()
        stop.attach(trainer, save=lambda engine: None)
        trainer.fire_event(Events.STARTED)  # the run's handlers installed, as its training starts
        lost = engine.devices.process_lost("training RUN", "nothing was saved", "python run.py --resume RUN")
        assert lost.speaks and str(lost).startswith("process 1 of the torchrun job stopped while training RUN")
        stop.restore()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun's: this process goes on
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
