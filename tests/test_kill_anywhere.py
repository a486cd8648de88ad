"""A tiny study (two nets, two seeds, two epochs) killed with SIGKILL at seeded random moments and continued with
`python run.py --resume DIR` after each kill ends as an uninterrupted one: every run's per-epoch history and the
study's verdict. KILL_ANYWHERE_KILLS (default 1) sets the number of kills and KILL_ANYWHERE_SEED (default 0) their
moments, so that it can run longer by hand: KILL_ANYWHERE_KILLS=20 python -m pytest tests/test_kill_anywhere.py
"""
import json
import os
import random
import shutil
import subprocess
import time

import pytest

from helpers import HANG_TIMEOUT, read_history, start_run, text_entries, without_timings


KILLS = int(os.environ.get("KILL_ANYWHERE_KILLS", "1"))
SEED = int(os.environ.get("KILL_ANYWHERE_SEED", "0"))
NETS = ["multistage-narrow", "multistage"]


def run_py(args, kill_after=None):
    """run.py ARGS in a process of its own; SIGKILLed after `kill_after` seconds unless it ended by then. Returns
    the exit code (-9 when killed), stderr and the seconds from its start to its end."""
    process = start_run(args)
    started = time.monotonic()  # once it runs: the first start_run of a worker waits for its server's imports
    try:
        process.wait(kill_after or HANG_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
    _, err = process.communicate()
    return process.returncode, err, time.monotonic() - started


@pytest.mark.slow
def test_a_study_killed_at_random_moments_and_resumed_each_time_ends_as_an_uninterrupted_one(tmp_path):
    from synthetic_cifar import write_cifar10

    data_dir = str(tmp_path / "data")
    write_cifar10(data_dir)
    common = ["--compare", *NETS, "--seeds", "0", "1", "--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2",
              "--batch-size", "50", "--no-progress", "--no-amp"]
    reference, study = tmp_path / "reference", tmp_path / "study"
    code, err, whole = run_py([*common, "--output-dir", str(reference)])
    assert code == 0, err
    rng = random.Random(SEED)
    scale, kills = whole, 0
    while True:
        args = ["--resume", str(study)] if study.exists() else [*common, "--output-dir", str(study)]
        code, err, _ = run_py(args, kill_after=rng.uniform(0.1, 0.8) * scale if kills < KILLS else None)
        assert code in (0, -9), err
        if code == -9:
            kills += 1
        elif kills == KILLS:
            break
        else:  # it finished before its kill (a faster moment of the machine): start over, killing sooner
            shutil.rmtree(study)
            scale /= 2
    for seed in ("seed0", "seed1"):
        for net in NETS:
            assert (without_timings(read_history(str(study / seed / net)))
                    == without_timings(read_history(str(reference / seed / net)))), (seed, net, kills)
    verdict = [json.loads((directory / "study.json").read_text())["contrasts"][NETS[1]]["verdict"] for directory in (study, reference)]
    assert verdict[0] == verdict[1]
    # What a user finds in the folders: no lock left, and TensorBoard's text entries as the uninterrupted study has
    # them: one configuration per run (its text names the command's own settings: folders, progress bar) and one
    # verdict per judged net.
    assert not list(study.rglob("run.lock"))
    for seed in ("seed0", "seed1"):
        for net in NETS:
            entries = [[(tag, step, text if tag.startswith("bonus/verdict") else None)
                        for tag, step, text in text_entries(directory / seed / net)] for directory in (study, reference)]
            assert entries[0] == entries[1], (seed, net, kills)
