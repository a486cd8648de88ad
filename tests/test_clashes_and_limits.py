"""Runs that clash with nothing and fail in one line: simultaneous launches, the bonus under torchrun, permission
refusals as a non-root user, running out of GPU memory."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch

from engine.compare.verdict import decide, decide_paired
from synthetic_cifar import write_cifar10
from helpers import HANG_TIMEOUT, REPO, cli, hit_train_step, read_history, runs_of, start_run


@pytest.mark.slow
def test_four_identical_launches_at_once_get_four_distinct_complete_run_directories(cifar10_dir, tmp_path):
    data_dir, _ = cifar10_dir
    args = ["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "1", "--batch-size", "50", "--no-progress",
            "--no-amp", "--runs-root", str(tmp_path / "runs")]
    launched = [start_run(args, env={"OMP_NUM_THREADS": "1"}) for _ in range(4)]
    results = [(p.wait(timeout=HANG_TIMEOUT), *p.communicate()) for p in launched]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [err for _, _, err in results]
    announced = sorted(line.split(": ", 1)[1] for _, out, _ in results for line in out.splitlines()
                       if line.startswith("Run directory: "))
    run_dirs = sorted(str(tmp_path / "runs" / name) for name in os.listdir(tmp_path / "runs"))
    assert announced == run_dirs and len(run_dirs) == 4  # each process in its own directory, none shared
    for run_dir in run_dirs:
        history = read_history(run_dir)
        assert history["status"] == "completed" and len(history["epochs"]) == 1
        assert history["config"]["output_dir"] == run_dir
        assert sorted(f for f in os.listdir(run_dir) if f.endswith(".pt")) == ["checkpoint_1.pt"]


@pytest.mark.slow
def test_bonus_study_under_torchrun_writes_each_report_once_from_rank_0(tmp_path):
    """`--bonus --seeds 0 1` under torchrun: each seed's bonus and the study summary are written by rank 0 alone."""
    written = write_cifar10(str(tmp_path / "data"))
    assert written
    dump = tmp_path / "dump"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "tests/sample_dump.py",
               str(dump), "--", "--bonus", "--seeds", "0", "1", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
               "--batch-size", "32", "--train-eval", "40", "--no-progress", "--no-amp", "--runs-root", str(tmp_path / "runs")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=HANG_TIMEOUT,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Study directory:") == 1 and result.stdout.count("Bonus directory:") == 2
    assert result.stdout.count("== multistage ==") == 2 and result.stdout.count("Verdict: ") == 2
    assert result.stdout.count("Verdict across seeds: ") == 1 and result.stdout.count("Where the gain comes from") == 3
    assert "ignite.distributed" not in result.stdout + result.stderr  # Ignite's launcher INFO lines stay quiet
    # Rank 0 alone wrote each seed's report and the study summary (two writers would race on one file).
    (study_dir,) = [tmp_path / "runs" / name for name in os.listdir(tmp_path / "runs")]
    assert sorted((dump / "writers.txt").read_text().splitlines()) == sorted(["0 seed0", "0 seed1", f"0 {study_dir.name}"])
    assert sorted(os.listdir(study_dir)) == ["seed0", "seed1", "study-plan.json", "study.json", "study.md", "study.png"]
    histories = {}
    for seed in (0, 1):
        bonus_dir = study_dir / f"seed{seed}"
        assert sorted(os.listdir(bonus_dir)) == ["comparison.json", "curves.png", "multistage", "report.json", "report.md", "singlestage"]
        report = json.loads((bonus_dir / "report.json").read_text())
        histories[seed] = {arch: read_history(str(bonus_dir / arch)) for arch in ("singlestage", "multistage")}
        for arch, history in histories[seed].items():
            assert history["world_size"] == 2 and runs_of(report)[arch]["epochs"] == history["epochs"]
        # The verdict is the rule applied to exactly the recorded histories, as a single-process bonus computes it.
        assert report["contrasts"]["multistage"]["verdict"] == json.loads(json.dumps(decide(histories[seed]["singlestage"]["epochs"],
                                                                 histories[seed]["multistage"]["epochs"])))
    study = json.loads((study_dir / "study.json").read_text())
    assert study["contrasts"]["multistage"]["verdict"] == json.loads(json.dumps(decide_paired(
        [histories[s]["singlestage"]["epochs"] for s in (0, 1)], [histories[s]["multistage"]["epochs"] for s in (0, 1)])))


@pytest.mark.parametrize("iteration, saved", [
    (6, "the last good checkpoint is checkpoint_1.pt (epoch 1) in {run_dir}"),  # epoch 2, second batch
    (2, "no checkpoint was written yet in {run_dir}"),  # epoch 1
])
def test_out_of_memory_is_one_line_that_says_what_to_lower_and_what_is_saved(cifar10_dir, tmp_path, capsys,
                                                                              monkeypatch, iteration, saved):
    data_dir, _ = cifar10_dir

    def out_of_memory(_output):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hit_train_step(monkeypatch, iteration, out_of_memory)
    run_dir = tmp_path / "run"
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "3", "--batch-size", "32",
               "--output-dir", str(run_dir)) == 1
    assert capsys.readouterr().err == (
        f"error: out of memory on cpu at epoch {1 + (iteration - 1) // 4}, iteration {iteration}: lower --batch-size "
        f"(now 32) or --blocks-per-stage (now 2); {saved.format(run_dir=run_dir)}\n")
    assert sorted(f for f in os.listdir(run_dir) if f.endswith(".pt")) == (["checkpoint_1.pt"] if iteration > 4 else [])


# --- permissions, as a user who is not root --------------------------------------------------------------------------

def world_readable(path):
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


@pytest.fixture(scope="module")
def as_nobody():
    """Three refused runs as the user 'nobody' (tests/as_nobody.py; as this user where the tests do not run as
    root), in one interpreter: {case: {"returncode", "stdout", "stderr"}} and the folders they used. They run in
    a folder every user can enter (pytest's own tmp folders are private to root)."""
    shared = tempfile.mkdtemp(prefix="cifar-resnets-perm-")
    try:
        readable_data, unreadable_data = (os.path.join(shared, name) for name in ("data", "unreadable"))
        write_cifar10(readable_data)
        unreadable = write_cifar10(unreadable_data)
        world_readable(shared)
        locked = os.path.join(shared, "locked")
        os.mkdir(locked)
        os.chmod(locked, 0o555)  # nobody may create the run directory in it
        os.chmod(unreadable["folder"], 0)  # nobody but root may read this dataset
        not_writable = os.path.join(shared, "empty-data")
        os.mkdir(not_writable)
        os.chmod(not_writable, 0o555)  # nobody may download into it
        places = {"locked": locked, "unreadable": unreadable["folder"], "not_writable": not_writable}
        common = ["--dataset", "cifar10", "--epochs", "1", "--batch-size", "50", "--no-progress", "--no-amp"]
        cases = {"unwritable output": [*common, "--data-dir", readable_data, "--output-dir", os.path.join(locked, "run")],
                 "unreadable data": [*common, "--data-dir", unreadable_data, "--output-dir", os.path.join(shared, "r1")],
                 "unwritable download": [*common, "--data-dir", not_writable, "--output-dir", os.path.join(shared, "r2")]}
        result = subprocess.run([sys.executable, "tests/as_nobody.py", json.dumps(list(cases.values()))], cwd=REPO,
                                capture_output=True, text=True, timeout=HANG_TIMEOUT)
        if result.returncode == 77:
            pytest.skip("this machine does not allow dropping to the user 'nobody'")
        assert result.returncode == 0, result.stderr
        yield dict(zip(cases, json.loads(result.stdout))), places, os.listdir(not_writable)
    finally:
        for root, dirs, _ in os.walk(shared):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.slow
def test_unwritable_output_folder_is_one_line(as_nobody):
    results, places, _ = as_nobody
    result = results["unwritable output"]
    assert result["returncode"] == 1
    assert result["stderr"] == f"error: cannot create run directory {os.path.join(places['locked'], 'run')}: Permission denied\n"


@pytest.mark.slow
def test_unreadable_data_folder_is_one_line_naming_the_file(as_nobody):
    results, places, _ = as_nobody
    result = results["unreadable data"]
    assert result["returncode"] == 1
    assert result["stderr"] == f"error: {os.path.join(places['unreadable'], 'batches.meta')}: cannot be read (permission denied)\n"


@pytest.mark.slow
def test_unwritable_data_dir_for_the_download_is_one_line_before_any_download(as_nobody):
    results, places, left_in_the_folder = as_nobody
    result = results["unwritable download"]
    assert result["returncode"] == 1
    assert result["stderr"] == (f"error: cannot download cifar10 into {places['not_writable']}: the folder is not "
                                "writable; choose another --data-dir or unpack the archive there by hand\n")
    assert left_in_the_folder == []
