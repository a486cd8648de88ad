"""Under torchrun one process says and does what one process would: a member of a dealt plan that fails is said once,
by the process that trained it; `--report` and `--evaluate`, with nothing to split, are done once, by rank 0."""
import json
import shutil

import pytest
from helpers import NAN_NET, run_in_process, timeless, torchrun


@pytest.fixture(scope="module")
def bonus(tmp_path_factory):
    """A finished bonus trained in this process with one thread, as each torchrun process has: `sequential/`, its
    data in `data/`."""
    from synthetic_cifar import write_cifar10

    root = tmp_path_factory.mktemp("bonus")
    write_cifar10(str(root / "data"))
    result = run_in_process(["--bonus", "--dataset", "cifar10", "--epochs", "2", "--batch-size", "32", "--train-eval",
                             "40", "--no-progress", "--no-amp", "--data-dir", str(root / "data"), "--output-dir",
                             str(root / "sequential")], threads=1)
    assert result.returncode == 0, result.stderr
    return root


@pytest.mark.slow
def test_a_member_that_fails_stops_the_dealt_study_with_one_line(bonus, tmp_path):
    root = bonus
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
def test_a_re_test_under_torchrun_is_done_once_by_rank_0_as_one_process_does_it(bonus, tmp_path):
    """--report and --evaluate under torchrun: nothing to split, so rank 0 re-tests alone and the other process ends
    at once: one report, equal to what one process writes, and one evaluation folder, not one per process. run.main
    sends every re-test (--evaluate, --report of a comparison or of runs) through one branch before anything is
    dispatched, so one launch of each flag proves it; the one-process side runs in this worker (one thread, as each
    torchrun process has)."""
    comparison = tmp_path / "seed0"
    shutil.copytree(bonus / "sequential", comparison)
    data = ["--data-dir", str(bonus / "data")]
    reported = torchrun("--report", str(comparison), *data)
    assert reported.returncode == 0, reported.stderr
    assert reported.stdout.count("Report: ") == 1 and reported.stderr == ""
    runs = [str(comparison / arch) for arch in ("singlestage", "multistage")]
    two_runs = run_in_process(["--report", *runs, "--output-dir", str(tmp_path / "two-runs"), *data], threads=1)
    assert two_runs.returncode == 0, two_runs.stderr
    expected = timeless(json.loads((bonus / "sequential" / "report.json").read_text()))
    for written in (comparison, tmp_path / "two-runs"):
        assert timeless(json.loads((written / "report.json").read_text())) == expected

    run_dir = comparison / "multistage"
    evaluated = torchrun("--evaluate", str(run_dir), "--no-progress")
    assert evaluated.returncode == 0, evaluated.stderr
    assert [p.name for p in run_dir.iterdir() if p.name.startswith("evaluation-")] == ["evaluation-checkpoint_2"]
    alone = run_in_process(["--evaluate", str(run_dir), "--no-progress", "--output-dir", str(tmp_path / "alone")],
                           threads=1)
    assert alone.returncode == 0, alone.stderr
    assert json.loads((run_dir / "evaluation-checkpoint_2" / "evaluation.json").read_text()) == json.loads(
        (tmp_path / "alone" / "evaluation.json").read_text())
    assert evaluated.stdout.count("Test accuracy") == 1 and evaluated.stderr == ""
