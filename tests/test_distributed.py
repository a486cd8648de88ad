"""torchrun with 2 CPU processes (gloo) on tiny data, checked against independent computations."""
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import HANG_TIMEOUT, NAN_NET, free_port, independent_eval, read_history, run_in_process


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchrun(*args, dump=None, probe=None):
    """run.py under torchrun with 2 CPU processes; `dump`: through tests/sample_dump.py; `probe`: (log_every, dump
    folder, "RANK:ITERATION" or None) through tests/distributed_probe.py."""
    script = ["tests/sample_dump.py", str(dump), "--"] if dump else ["run.py"]
    if probe:
        every, folder, signal_at = probe
        script = ["tests/distributed_probe.py", str(every), str(folder), *([signal_at] if signal_at else []), "--"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *script, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=HANG_TIMEOUT, env=env)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    from synthetic_cifar import write_cifar10

    root = tmp_path_factory.mktemp("ddp")
    written = write_cifar10(str(root / "data"))
    result = torchrun("--dataset", "cifar10", "--data-dir", str(root / "data"), "--epochs", "2", "--batch-size", "32",
                      "--no-progress", "--no-amp", "--output-dir", str(root / "runs" / "run"), dump=root / "dump")
    return root, written, result


@pytest.mark.slow
def test_exits_0_and_only_rank_0_writes(ddp_run):
    root, _, result = ddp_run
    assert result.returncode == 0, result.stderr
    assert os.listdir(root / "runs") == ["run"]
    assert result.stdout.count("Epoch   1/2") == 1 and result.stdout.count("Run directory:") == 1
    history = read_history(str(root / "runs" / "run"))
    assert (history["world_size"], history["backend"], history["global_batch_size"]) == (2, "gloo", 32)
    assert sorted(f for f in os.listdir(root / "runs" / "run") if f.endswith(".pt")) == ["checkpoint_1.pt", "checkpoint_2.pt"]


@pytest.mark.slow
def test_every_sample_once_per_epoch_and_the_epoch_loss_is_the_all_process_mean(ddp_run):
    root, _, _ = ddp_run
    history = read_history(str(root / "runs" / "run"))
    for epoch in (1, 2):
        parts = [torch.load(root / "dump" / f"rank{rank}_epoch{epoch}.pt", weights_only=True) for rank in (0, 1)]
        assert len(parts[0]["index"]) == 50 and len(parts[1]["index"]) == 50  # split evenly
        indices = torch.cat([p["index"] for p in parts])
        assert sorted(indices.tolist()) == list(range(100))
        losses = torch.cat([p["loss"] for p in parts]).double()
        expected = float(losses.sum() / len(losses))  # sample-weighted over both ranks
        assert history["epochs"][epoch - 1]["train_loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_test_accuracy_equals_a_single_process_evaluation_of_the_saved_model(ddp_run):
    root, written, _ = ddp_run
    run_dir = str(root / "runs" / "run")
    predictions, loss = independent_eval(run_dir, "multistage", written, 10, epoch=2)
    final = read_history(run_dir)["epochs"][-1]
    assert final["test_accuracy"] == pytest.approx(float(np.mean(predictions == written["test_y"])), abs=1e-12)
    assert final["test_loss"] == pytest.approx(loss, rel=1e-4)


@pytest.mark.slow
def test_processes_agree_on_a_stop_every_log_every_iterations_and_it_resumes_exactly(ddp_run, tmp_path):
    """log_every 3 (a GPU's cadence, scaled to 4 iterations an epoch): the processes agree, with one collective, after
    iterations 3 and 6 inside the epochs and after each epoch's end, never after every iteration. Rank 1 alone gets a
    SIGTERM after iteration 5: both stop at the next agreement, iteration 6, and the resume ends as the uninterrupted
    run did."""
    root, _, _ = ddp_run
    run_dir = tmp_path / "run"
    args = ["--dataset", "cifar10", "--data-dir", str(root / "data"), "--epochs", "2", "--batch-size", "32",
            "--no-progress", "--no-amp"]
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
    reference = read_history(str(root / "runs" / "run"))["epochs"]
    timeless = [{k: v for k, v in e.items() if "seconds" not in k and k != "images_per_s"} for e in reference]
    assert [{k: v for k, v in e.items() if "seconds" not in k and k != "images_per_s"}
            for e in read_history(str(run_dir))["epochs"]] == timeless
    ours, theirs = (torch.load(d / "checkpoint_2.pt", weights_only=True)["model"] for d in (run_dir, root / "runs" / "run"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["KILL", "OOM"])
def test_a_process_that_dies_ends_the_job_at_once_in_one_line_and_the_resume_is_exact(ddp_run, tmp_path, how):
    """--parallel data: rank 1 SIGKILLed after iteration 6 (inside epoch 2), or stopped there by an error of its own
    (out of memory): rank 0, whose collective can never complete, ends within 5 s in one line that names the process,
    the run and the command that continues it, without a traceback; that resume ends as the uninterrupted run (after
    the kill: the error leaves the same checkpoints)."""
    root, _, _ = ddp_run
    run_dir = tmp_path / "run"
    args = ["--dataset", "cifar10", "--data-dir", str(root / "data"), "--epochs", "2", "--batch-size", "32",
            "--no-progress", "--no-amp"]
    stopped = torchrun(*args, "--output-dir", str(run_dir), probe=(3, tmp_path / "probe", f"1:6:{how}"))
    ended = time.time()
    assert stopped.returncode != 0
    said = [line for line in stopped.stderr.splitlines() if "error: " in line]
    assert said[-1] == (f"error: process 1 of the torchrun job stopped while training {run_dir} at epoch 2, iteration "
                        f"6; the last good checkpoint is checkpoint_1.pt (epoch 1) in {run_dir}; "
                        f"continue with: python run.py --resume {run_dir}"), stopped.stderr
    assert len(said) == 1 and stopped.stderr.count("Traceback") <= 1, stopped.stderr  # torchrun's own summary
    assert f'{REPO}/run.py"' not in stopped.stderr and f"{REPO}/engine" not in stopped.stderr, stopped.stderr
    assert ended - float((tmp_path / "probe" / "stopped_at").read_text()) < 5
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

    root, _, _ = ddp_run
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
def test_held_out_images_are_excluded_before_the_processes_share_the_training_set(tmp_path):
    """--val-split under torchrun: each process trains on its half of the remaining images; together they see
    every remaining image once per epoch and never a held-out one (the dumped index is a place in the split)."""
    from synthetic_cifar import write_cifar10
    from test_validation import expected_positions

    written = write_cifar10(str(tmp_path / "data"))
    result = torchrun("--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--epochs", "1", "--batch-size",
                      "32", "--val-split", "20", "--no-progress", "--no-amp", "--output-dir", str(tmp_path / "run"),
                      dump=tmp_path / "dump")
    assert result.returncode == 0, result.stderr
    held = expected_positions(written["train_y"], 20)
    remaining = np.setdiff1d(np.arange(100), held)
    parts = [torch.load(tmp_path / "dump" / f"rank{rank}_epoch1.pt", weights_only=True)["index"] for rank in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 40
    assert sorted(remaining[torch.cat(parts).numpy()].tolist()) == remaining.tolist()
    assert read_history(str(tmp_path / "run"))["num_val"] == 20


STUDY = ["--bonus", "--seeds", "0", "1", "--dataset", "cifar10", "--epochs", "2", "--batch-size", "32",
         "--train-eval", "40", "--no-progress", "--no-amp"]


def sequential(*args):
    """run.py in one process with one thread, as each torchrun process has."""
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=HANG_TIMEOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))


def timeless(value):
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items()
                if "seconds" not in k and k not in ("images_per_s", "run_dir", "output_dir")}
    return [timeless(v) for v in value] if isinstance(value, list) else value


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


@pytest.mark.slow
def test_a_study_dealt_to_two_processes_equals_the_sequential_study(sequential_study):
    """--parallel members: 2 nets x 2 seeds dealt to 2 gloo processes of one thread each; rank 0 prints a line per
    member and the reports, nothing else; every number equals the sequential study's."""
    root = sequential_study
    result = torchrun(*STUDY, "--data-dir", str(root / "data"), "--parallel", "members", "--output-dir",
                      str(root / "dealt"))
    assert result.returncode == 0, result.stderr
    assert_same_study(root / "dealt", root / "sequential")
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"Study directory: {root / 'dealt'} (seeds 0, 1)", "4 runs dealt to 2 processes, each trained alone"]
    done = [line for line in lines if line.startswith("[")]
    assert sorted(line.split("] ")[1].split(":")[0] for line in done) == [
        "multistage seed 0", "multistage seed 1", "singlestage seed 0", "singlestage seed 1"]
    assert [line.split("]")[0] for line in done] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert "Epoch " not in result.stdout and result.stderr == ""


@pytest.fixture(scope="module")
def killed_study(sequential_study, tmp_path_factory):
    """A dealt study SIGKILLed, the whole torchrun job, once its first member has finished: its launcher is gone and
    its workers, in sessions of their own, must end themselves. Returns (study directory, what the job said)."""
    import signal

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
    assert ended - float((tmp_path / "probe" / "stopped_at").read_text()) < 5
    resumed = sequential("--resume", str(study_dir), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_study(study_dir, root / "sequential")


@pytest.mark.slow
def test_a_study_dealt_over_two_nodes_sharing_a_directory_equals_the_sequential_study(sequential_study):
    """Two torchrun launchers of one process each, as on two machines (here on one, meeting through c10d's
    rendezvous), share the study directory; their runs equal the sequential study's."""
    root, port = sequential_study, free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
         "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=study", "run.py", *STUDY,
         "--data-dir", str(root / "data"), "--parallel", "members", "--output-dir", str(root / "two-nodes")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        for node in (0, 1)]
    outputs = [node.communicate(timeout=HANG_TIMEOUT) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert_same_study(root / "two-nodes", root / "sequential")
    assert "4 runs dealt to 2 processes, each trained alone" in outputs[0][0] + outputs[1][0]


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


@pytest.mark.slow
def test_a_member_that_fails_stops_the_dealt_study_with_one_line(sequential_study, tmp_path):
    root = sequential_study
    (tmp_path / "nan_net.py").write_text(NAN_NET)
    spec = f"{tmp_path / 'nan_net.py'}:NanNet"
    result = torchrun("--compare", "singlestage", spec, "--seeds", "0", "--dataset", "cifar10", "--data-dir",
                      str(root / "data"), "--epochs", "1", "--batch-size", "32", "--no-progress", "--no-amp",
                      "--parallel", "members", "--output-dir", str(tmp_path / "study"))
    assert result.returncode != 0
    # The process that trained it says so ("[rank 1] " first where that is not rank 0).
    errors = [line.split("] ", 1)[-1] for line in result.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {spec} seed 0 (in {tmp_path / 'study' / 'seed0' / 'NanNet'}): training "
                                "stopped: the loss of the first batch is NaN or infinite, before any optimizer step")
    assert errors[0].endswith(f"; the rest continues with: python run.py --seeds 0 --compare singlestage {spec} "
                              f"--resume {tmp_path / 'study'}")


@pytest.mark.slow
def test_parallel_members_refuses_a_single_run_once(ddp_run):
    root, _, _ = ddp_run
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


@pytest.mark.slow
def test_a_re_test_under_torchrun_is_done_once_by_rank_0_as_one_process_does_it(ddp_run, sequential_study, tmp_path):
    """--evaluate and --report under torchrun: nothing to split, so rank 0 re-tests alone and the other process ends
    at once: one evaluation folder, not one per process, and one report, equal to what one process writes. run.main
    sends every re-test (--evaluate, --report of a comparison or of runs) through one branch before anything is
    dispatched, so one launch of each flag proves it; the one-process side runs in this worker (one thread, as each
    torchrun process has)."""
    root, _, _ = ddp_run
    run_dir = root / "runs" / "run"
    evaluated = torchrun("--evaluate", str(run_dir), "--no-progress")
    assert evaluated.returncode == 0, evaluated.stderr
    assert [p.name for p in run_dir.iterdir() if p.name.startswith("evaluation-")] == ["evaluation-checkpoint_2"]
    alone = run_in_process(["--evaluate", str(run_dir), "--no-progress", "--output-dir", str(tmp_path / "alone")])
    assert alone.returncode == 0, alone.stderr
    assert json.loads((run_dir / "evaluation-checkpoint_2" / "evaluation.json").read_text()) == json.loads(
        (tmp_path / "alone" / "evaluation.json").read_text())
    assert evaluated.stdout.count("Test accuracy") == 1 and evaluated.stderr == ""

    comparison = tmp_path / "seed0"
    shutil.copytree(sequential_study / "sequential" / "seed0", comparison)
    data = ["--data-dir", str(sequential_study / "data")]
    reported = torchrun("--report", str(comparison), *data)
    assert reported.returncode == 0, reported.stderr
    assert reported.stdout.count("Report: ") == 1 and reported.stderr == ""
    runs = [str(comparison / arch) for arch in ("singlestage", "multistage")]
    two_runs = run_in_process(["--report", *runs, "--output-dir", str(tmp_path / "two-runs"), *data])
    assert two_runs.returncode == 0, two_runs.stderr
    expected = timeless(json.loads((sequential_study / "sequential" / "seed0" / "report.json").read_text()))
    for written in (comparison, tmp_path / "two-runs"):
        assert timeless(json.loads((written / "report.json").read_text())) == expected


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
