"""Multi-seed studies: the interval arithmetic against a table, the paired rule on constructed histories, and
`--seeds` end to end on tiny data (pairing by seed, resume of a partly finished study, `--report` on a study)."""
import json
import os
import shutil
import statistics

import pytest

import run
from engine.compare.verdict import decide_paired, interval
from helpers import read_history, run_in_process, runs_of, tensorboard_points, text_entries, timeless, without_timings

T_975_DF2 = 4.303  # Student t, two-sided 95 %, 2 degrees of freedom, from a printed table


def test_interval_matches_a_hand_computed_t_interval():
    result = interval([0.70, 0.72, 0.74])
    assert result["mean"] == pytest.approx(0.72) and result["sd"] == pytest.approx(0.02)
    half = T_975_DF2 * 0.02 / 3 ** 0.5  # = 0.04969
    assert result["ci_low"] == pytest.approx(0.72 - half, abs=1e-4) and result["ci_high"] == pytest.approx(0.72 + half, abs=1e-4)
    one = interval([0.5])
    assert one["sd"] is None and one["ci_low"] is None and one["mean"] == 0.5


def histories(test, train_eval, train_eval_loss, epochs=3):
    """One seed's records: constant over `epochs` epochs."""
    return [{"epoch": e + 1, "test_accuracy": test, "train_eval_accuracy": train_eval, "train_eval_loss": train_eval_loss}
            for e in range(epochs)]


def test_paired_rule_clear_underfitting():
    single = [histories(0.60 + d, 0.65 + d, 1.00) for d in (0.0, 0.01, -0.01)]
    multi = [histories(0.66 + d, 0.78 + d, 0.70) for d in (0.0, 0.012, -0.008)]
    result = decide_paired(single, multi)
    assert (result["verdict"], result["confidence"]) == ("reducing underfitting", "high")
    test = result["paired_differences"]["test_accuracy"]
    assert test["values"] == pytest.approx([0.06, 0.062, 0.062])  # paired: seed k minus seed k
    assert test["ci_low"] > 0.01


def test_paired_rule_clear_overfitting():
    single = [histories(0.60 + d, 0.90, 0.30) for d in (0.0, 0.01, -0.01)]
    multi = [histories(0.66 + d, 0.90, 0.30) for d in (0.0, 0.012, -0.008)]
    result = decide_paired(single, multi)
    assert result["verdict"] == "reducing overfitting" and result["confidence"] == "high"
    assert not result["paired_differences"]["train_eval_accuracy"]["clear"]


def test_paired_rule_inconclusive_when_the_interval_straddles_zero():
    single = [histories(0.60, 0.65, 1.0), histories(0.60, 0.65, 1.0), histories(0.60, 0.65, 1.0)]
    multi = [histories(0.70, 0.80, 0.6), histories(0.55, 0.80, 0.6), histories(0.62, 0.80, 0.6)]
    result = decide_paired(single, multi)
    assert (result["verdict"], result["confidence"]) == ("inconclusive", "low")
    test = result["paired_differences"]["test_accuracy"]
    assert test["ci_low"] < 0 < test["ci_high"] and test["mean"] > 0.01  # a large mean alone is not enough


@pytest.fixture(scope="module")
def bonus_study(tmp_path_factory):
    """`--bonus --seeds 0 1` on tiny data: (data_dir, study_dir)."""
    from synthetic_cifar import write_cifar10

    root = tmp_path_factory.mktemp("study")
    write_cifar10(str(root / "data"))
    study_dir = root / "study"
    assert run.main(study_args(root / "data") + ["--output-dir", str(study_dir)]) == 0
    return root / "data", study_dir


def study_args(data_dir):
    return ["--bonus", "--seeds", "0", "1", "--dataset", "cifar10", "--data-dir", str(data_dir), "--epochs", "2",
            "--batch-size", "32", "--train-eval", "40", "--no-progress", "--no-amp"]


@pytest.mark.slow
def test_bonus_study_pairs_the_nets_by_seed(bonus_study):
    _, study_dir = bonus_study
    assert sorted(os.listdir(study_dir)) == ["seed0", "seed1", "study-plan.json", "study.json", "study.md", "study.png"]
    study = json.loads((study_dir / "study.json").read_text())
    runs = {arch: [read_history(str(study_dir / f"seed{s}" / arch)) for s in (0, 1)] for arch in ("singlestage", "multistage")}
    for s in (0, 1):  # each seed's runs: that seed, the same data order for both nets, an ordinary bonus directory
        assert {runs[arch][s]["config"]["seed"] for arch in runs} == {s}
        assert (study_dir / f"seed{s}" / "report.json").exists()
    window = study["contrasts"]["multistage"]["verdict"]["window"]
    assert window == 2
    expected = [statistics.fmean(e["test_accuracy"] for e in runs["multistage"][s]["epochs"][-window:])
                - statistics.fmean(e["test_accuracy"] for e in runs["singlestage"][s]["epochs"][-window:]) for s in (0, 1)]
    assert study["contrasts"]["multistage"]["verdict"]["paired_differences"]["test_accuracy"]["values"] == pytest.approx(expected)
    final = study["nets"]["multistage"]["final"]["test_accuracy"]
    values = [runs["multistage"][s]["epochs"][-1]["test_accuracy"] for s in (0, 1)]
    assert final["mean"] == pytest.approx(statistics.fmean(values))
    assert final["sd"] == pytest.approx(statistics.stdev(values))
    assert "## Verdict:" in (study_dir / "study.md").read_text()
    assert study["precision"] == "fp32" and ", precision fp32." in (study_dir / "study.md").read_text()
    # Beside the last epoch, labelled: each seed's best epoch; and in each seed's report, each run's.
    best = [max(e["test_accuracy"] for e in runs["multistage"][s]["epochs"]) for s in (0, 1)]
    assert study["nets"]["multistage"]["final"]["best_test_accuracy"]["values"] == best
    assert ("| test accuracy at each seed's best epoch (not the last), chosen on the test set (optimistic) | "
            in (study_dir / "study.md").read_text())  # no --val-split: chosen on the test set, and said so
    seed0 = runs["singlestage"][0]["epochs"]
    top = max(seed0, key=lambda e: (e["test_accuracy"], -e["epoch"]))
    report = json.loads((study_dir / "seed0" / "report.json").read_text())
    assert runs_of(report)["singlestage"]["best_epoch"] == {"epoch": top["epoch"], "test_accuracy": top["test_accuracy"],
                                                           "chosen_by": "test_accuracy"}
    assert (f"| test accuracy at the best epoch (not the last), chosen on the test set (optimistic) | "
            f"{100 * top['test_accuracy']:.2f}% (epoch {top['epoch']}) | "
            in (study_dir / "seed0" / "report.md").read_text())

    # Where the gain comes from, across seeds: each class's gain is the mean of the seeds' own per-class gains
    # (each seed's bonus report re-tested its two final models), and "seeds improved" counts them.
    per_seed = [{row["class"]: row["gain"] for row in json.loads((study_dir / f"seed{s}" / "report.json").read_text())
                 ["contrasts"]["multistage"]["where_the_gain_comes_from"]["classes"]["classes"]} for s in (0, 1)]
    gain = study["contrasts"]["multistage"]["where_the_gain_comes_from"]["classes"]
    assert gain["seeds"] == 2
    assert {row["class"]: row["gain"] for row in gain["classes"]} == pytest.approx(
        {name: (per_seed[0][name] + per_seed[1][name]) / 2 for name in per_seed[0]})
    assert {row["class"]: row["seeds_improved"] for row in gain["classes"]} == {
        name: (per_seed[0][name] > 0) + (per_seed[1][name] > 0) for name in per_seed[0]}
    markdown = (study_dir / "study.md").read_text()
    assert f"mean over 2 seeds): **{gain['summary']}**" in markdown
    assert "|\n\n## Where the gain comes from\n" in markdown  # a table needs a blank line before the next heading


@pytest.mark.slow
def test_report_on_a_study_rebuilds_it(bonus_study):
    data_dir, study_dir = bonus_study
    before = json.loads((study_dir / "study.json").read_text())
    os.remove(study_dir / "study.json")
    assert run.main(["--report", str(study_dir), "--data-dir", str(data_dir)]) == 0
    assert json.loads((study_dir / "study.json").read_text()) == before


@pytest.mark.slow
def test_resume_of_a_partly_finished_study_trains_only_what_is_missing(bonus_study, tmp_path, capsys):
    data_dir, finished = bonus_study
    study_dir = tmp_path / "study"
    shutil.copytree(finished, study_dir)
    expected = json.loads((study_dir / "study.json").read_text())
    unfinished = study_dir / "seed1" / "multistage"
    history = json.loads((unfinished / "history.json").read_text())
    os.remove(unfinished / "checkpoint_2.pt")
    (unfinished / "history.json").write_text(json.dumps(dict(history, status="running", epochs=history["epochs"][:1])))
    os.remove(study_dir / "study.json")
    capsys.readouterr()
    assert run.main(["--report", str(study_dir), "--data-dir", str(data_dir)]) == 1
    assert capsys.readouterr().err == ("error: the study is not finished: multistage of seed 1 has not completed; "
                                       f"finish it with: python run.py --seeds 0 1 --bonus --resume {study_dir}\n")
    assert run.main(study_args(data_dir) + ["--resume", str(study_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("already trained") == 3 and out.count("Epoch   2/2") == 1 and "Epoch   1/2" not in out
    assert without_timings(read_history(str(unfinished))) == without_timings(history)  # continued bit for bit
    rebuilt = json.loads((study_dir / "study.json").read_text())
    assert rebuilt["contrasts"]["multistage"]["verdict"]["paired_differences"] == expected["contrasts"]["multistage"]["verdict"]["paired_differences"]
    assert rebuilt["contrasts"]["multistage"]["where_the_gain_comes_from"] == expected["contrasts"]["multistage"]["where_the_gain_comes_from"]


@pytest.mark.slow
def test_an_interrupted_study_prints_the_command_that_finishes_the_study(bonus_study, tmp_path, monkeypatch):
    """Ctrl-C in seed 0's first net: the printed command continues every seed and the summary, as they would have
    been, without repeating a recipe flag; the summary reuses the per-class re-tests of the seeds' reports."""
    import engine.build
    import engine.evaluate
    from fault_injection import with_fault

    retested = []
    real_retest = engine.evaluate.retest
    monkeypatch.setattr(engine.evaluate, "retest",
                        lambda run_dir, *args, **kwargs: retested.append(run_dir) or real_retest(run_dir, *args, **kwargs))

    data_dir, finished = bonus_study
    study_dir = tmp_path / "study"
    with monkeypatch.context() as patch:  # SIGINT after the 3rd iteration, in this process
        patch.setattr(engine.build, "build_run", with_fault(engine.build.build_run, "sigint", 3))
        stopped = run_in_process(study_args(data_dir) + ["--output-dir", str(study_dir)])
    assert stopped.returncode == 130, stopped.stderr
    command = f"python run.py --seeds 0 1 --bonus --resume {study_dir}"
    assert stopped.stderr == f"interrupted at epoch 1, iteration 3; checkpoint written. Continue with: {command}\n"

    resumed = run_in_process(command.split()[2:])
    assert resumed.returncode == 0, resumed.stderr
    for run_dir in ("seed0/singlestage", "seed0/multistage", "seed1/singlestage", "seed1/multistage"):
        assert (without_timings(read_history(str(study_dir / run_dir)))
                == without_timings(read_history(str(finished / run_dir))))
    study, expected = (json.loads((d / "study.json").read_text()) for d in (study_dir, finished))
    assert study["contrasts"]["multistage"]["verdict"] == expected["contrasts"]["multistage"]["verdict"]
    assert study["contrasts"]["multistage"]["where_the_gain_comes_from"] == expected["contrasts"]["multistage"]["where_the_gain_comes_from"]
    assert sorted(retested) == sorted(str(study_dir / f"seed{s}" / arch) for s in (0, 1)
                                      for arch in ("singlestage", "multistage"))  # each once, for its seed's report


@pytest.mark.slow
def test_a_study_of_one_seed_says_its_seeds_table_and_verdict_once(bonus_study, tmp_path, capsys):
    """`--compare A B --seeds 0` (as `--bonus --seeds 0`): the study sums up its one seed, whose report has just
    printed the same table and verdict; the console shows them once, then where both reports are."""
    data_dir, _ = bonus_study
    study_dir = tmp_path / "study"
    capsys.readouterr()
    assert run.main(["--compare", "multistage-narrow", "multistage", "--seeds", "0", "--dataset", "cifar10",
                     "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "50", "--no-progress", "--no-amp",
                     "--output-dir", str(study_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("\nmean train loss ") == 1 and out.count("\nVerdict: ") == 1, out
    assert out.count("\nWhere the gain comes from: ") == 1, out
    assert out.endswith(f"Report: {study_dir / 'seed0' / 'report.md'}\nStudy report: {study_dir / 'study.md'}\n"), out
    study = json.loads((study_dir / "study.json").read_text())
    assert study["seeds"] == [0] and study["contrasts"]["multistage"]["decided_by"] == "window"


@pytest.mark.slow
def test_a_planned_seed_that_is_gone_is_named_by_the_report_and_trained_again_by_a_resume(bonus_study, tmp_path, capsys):
    """`seed1/` deleted from a finished study: `--report` summarises seed 0 and says, in study.json, study.md and the
    console, that the plan holds seed 1 too; a net's run without its history is named the same way. `--resume`
    trains seed 1 again, equal to the one deleted."""
    data_dir, finished = bonus_study
    study_dir = tmp_path / "study"
    shutil.copytree(finished, study_dir)
    shutil.rmtree(study_dir / "seed1")
    capsys.readouterr()
    assert run.main(["--report", str(study_dir), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    words = "The plan holds seed 1 too, but seed1/ is gone: left out of this summary"
    assert f"{words}; train it again with: python run.py --seeds 0 1 --bonus --resume {study_dir}\n" in out
    study = json.loads((study_dir / "study.json").read_text())
    assert study["seeds"] == [0] and study["missing"] == {"1": ["seed1/"]}
    # Summarised as the one-seed case it now is: seed 0's runs, its verdict by the window rule.
    assert [net["runs"][0]["run_dir"] for net in study["nets"].values()] == [
        str(study_dir / "seed0" / arch) for arch in ("singlestage", "multistage")]
    assert study["contrasts"]["multistage"]["decided_by"] == "window" and "\nVerdict: " in out
    assert f"**{words}.**" in (study_dir / "study.md").read_text()

    assert run.main(study_args(data_dir) + ["--resume", str(study_dir)]) == 0
    for arch in ("singlestage", "multistage"):
        assert without_timings(read_history(str(study_dir / "seed1" / arch))) == without_timings(
            read_history(str(finished / "seed1" / arch)))
    rebuilt = json.loads((study_dir / "study.json").read_text())
    assert "missing" not in rebuilt and rebuilt["seeds"] == [0, 1]
    assert timeless(rebuilt["nets"]) == timeless(json.loads((finished / "study.json").read_text())["nets"])

    os.remove(study_dir / "seed0" / "multistage" / "history.json")
    capsys.readouterr()
    assert run.main(["--report", str(study_dir), "--data-dir", str(data_dir)]) == 0
    assert "The plan holds seed 0 too, but seed0/multistage has no history.json: left out" in capsys.readouterr().out
    assert json.loads((study_dir / "study.json").read_text())["seeds"] == [1]
    # Its checkpoints are there: a resume rebuilds the history from the newest, trains nothing, and reports both seeds.
    assert run.main(study_args(data_dir) + ["--resume", str(study_dir)]) == 0
    out = capsys.readouterr().out
    assert f"note: {study_dir / 'seed0' / 'multistage' / 'history.json'} was missing; rebuilt it from checkpoint_2.pt" in out
    assert "Epoch " not in out and json.loads((study_dir / "study.json").read_text())["seeds"] == [0, 1]
    assert read_history(str(study_dir / "seed0" / "multistage")) == read_history(str(finished / "seed0" / "multistage"))


@pytest.mark.slow
def test_single_net_study_summarises_across_seeds(cifar10_dir, tmp_path, capsys):
    data_dir, _ = cifar10_dir
    study_dir = tmp_path / "study"
    assert run.main(["--seeds", "3", "4", "--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "1", "--batch-size",
                     "50", "--no-progress", "--no-amp", "--tta", "flip", "--output-dir", str(study_dir)]) == 0
    study = json.loads((study_dir / "study.json").read_text())
    epochs = [read_history(str(study_dir / f"seed{s}"))["epochs"][0] for s in (3, 4)]
    assert study["nets"]["multistage"]["final"]["train_loss"]["values"] == [e["train_loss"] for e in epochs]
    flips = sum(e["test_flip_accuracy"] for e in epochs) / 2
    # Every row in words, the test-time flips included.
    assert f"| test accuracy, with test-time flips | {100 * flips:.2f} ± " in (study_dir / "study.md").read_text()
    assert "_" not in "".join(line.split(" | ")[0] for line in (study_dir / "study.md").read_text().splitlines()
                              if line.startswith("| ") and " ± " in line)
    out = capsys.readouterr().out
    assert "verdict" not in study and "Across 2 seeds: multistage test accuracy" in out
    # Counts are words: one epoch is "1 epoch", two seeds "2 seeds", wherever a run or a study says them.
    assert out.count("after 1 epoch; run directory") == 2 and "1 epochs" not in out
    study_md = (study_dir / "study.md").read_text()
    assert "across 2 seeds" in study_md and "; 1 epoch, batch 50" in study_md and "seed(s)" not in study_md
    with pytest.raises(SystemExit):
        run.main(["--seeds", "1", "--seed", "2"])


@pytest.mark.slow
def test_members_killed_before_their_first_checkpoint_are_trained_afresh_in_place(bonus_study, tmp_path, capsys):
    """What a SIGKILL between a member's creation and its first checkpoint leaves: its lock (held by nobody), an
    event file, a half-written checkpoint's temp file. A resume trains such members in place, as they would have
    been, instead of refusing their folders as foreign."""
    data_dir, finished = bonus_study
    study_dir = tmp_path / "study"
    shutil.copytree(finished, study_dir)
    leftovers = {"singlestage": ["run.lock"], "multistage": ["run.lock", "events.out.tfevents.1.host.1.0", "checkpoint_1.pt.tmp"]}
    for arch, names in leftovers.items():
        shutil.rmtree(study_dir / "seed1" / arch)
        (study_dir / "seed1" / arch).mkdir()
        for name in names:
            (study_dir / "seed1" / arch / name).write_bytes(b"")
    capsys.readouterr()
    assert run.main(study_args(data_dir) + ["--resume", str(study_dir)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.count("Epoch   1/2") == 2  # seed 1's two nets, from the start
    for arch in leftovers:
        member = study_dir / "seed1" / arch
        assert without_timings(read_history(str(member))) == without_timings(read_history(str(finished / "seed1" / arch)))
        assert not {"run.lock", "checkpoint_1.pt.tmp"} & set(os.listdir(member))


def snapshot(directory):
    return {str(path): path.stat().st_mtime_ns for path in sorted(directory.rglob("*"))}


@pytest.mark.slow
def test_a_resume_that_contradicts_the_directory_is_refused_in_one_line_and_writes_nothing(bonus_study, capsys):
    data_dir, study = bonus_study
    common = ["--dataset", "cifar10", "--data-dir", str(data_dir), "--epochs", "2", "--batch-size", "32", "--no-progress"]
    bonus, net = study / "seed0", study / "seed0" / "multistage"
    cases = [
        (["--bonus", "--resume", str(study)], study, "a study of seeds 0 1 (--bonus)",
         f"python run.py --seeds 0 1 --bonus --resume {study}"),
        (["--seeds", "0", "2", "--bonus", "--resume", str(study)], study, "a study of seeds 0 1 (--bonus)",
         f"python run.py --seeds 0 1 --bonus --resume {study}"),
        (["--seeds", "0", "1", "--resume", str(study)], study, "a study of seeds 0 1 (--bonus)",
         f"python run.py --seeds 0 1 --bonus --resume {study}"),
        (["--seeds", "0", "1", "--bonus", "--resume", str(bonus)], bonus, "a comparison (--bonus)",
         f"python run.py --bonus --resume {bonus}"),
        (["--compare", "multistage", "singlestage", "--resume", str(bonus)], bonus, "a comparison (--bonus)",
         f"python run.py --bonus --resume {bonus}"),
        (["--bonus", "--resume", str(net)], net, "a single run", f"python run.py --resume {net}"),
        (["--seeds", "0", "1", "--resume", str(net)], net, "a single run", f"python run.py --resume {net}"),
    ]
    before = snapshot(study)
    for flags, directory, what, command in cases:
        assert run.main(common + flags) == 1, flags
        assert capsys.readouterr().err == f"error: cannot resume {directory}: it is {what}; continue it with: {command}\n"
    assert snapshot(study) == before


@pytest.mark.slow
def test_resume_alone_continues_a_study_as_it_was_started(bonus_study, tmp_path, capsys):
    data_dir, finished = bonus_study
    study_dir = tmp_path / "study"
    shutil.copytree(finished, study_dir)
    os.remove(study_dir / "study.json")
    capsys.readouterr()
    assert run.main(["--resume", str(study_dir), "--no-progress"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count("already trained") == 4 and "Study directory:" in out and "(seeds 0, 1)" in out
    assert json.loads((study_dir / "study.json").read_text())["contrasts"]["multistage"]["verdict"] == json.loads(
        (finished / "study.json").read_text())["contrasts"]["multistage"]["verdict"]


@pytest.mark.slow
def test_more_epochs_extend_every_run_of_a_finished_study_and_fewer_than_trained_are_refused(bonus_study, tmp_path,
                                                                                           capsys):
    """`--resume STUDY --epochs 3` trains each finished 2-epoch member on from its checkpoint (its first two epochs
    kept as they were) and the plans and summary say 3 epochs; `--epochs 1` is refused in one line, nothing written."""
    data_dir, finished = bonus_study
    study_dir = tmp_path / "study"
    shutil.copytree(finished, study_dir)
    capsys.readouterr()
    assert run.main(["--resume", str(study_dir), "--epochs", "3", "--no-progress"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "already trained" not in out and out.count("Epoch   3/3") == 4 and "Epoch   2/3" not in out
    for seed in ("seed0", "seed1"):
        for arch in ("singlestage", "multistage"):
            before, after = (read_history(str(d / seed / arch)) for d in (finished, study_dir))
            assert [e["epoch"] for e in after["epochs"]] == [1, 2, 3] and after["status"] == "completed"
            assert without_timings(after)[:2] == without_timings(before)
        assert json.loads((study_dir / seed / "comparison.json").read_text())["recipe"]["epochs"] == 3
    assert json.loads((study_dir / "study-plan.json").read_text())["recipe"]["epochs"] == 3
    assert json.loads((study_dir / "study.json").read_text())["recipe"]["epochs"] == 3

    before = snapshot(study_dir)
    assert run.main(["--resume", str(study_dir), "--epochs", "2", "--no-progress"]) == 1
    assert capsys.readouterr().err == (f"error: cannot resume {study_dir}: {study_dir / 'seed0' / 'singlestage'} has "
                                       "trained 3 epochs, more than --epochs 2\n")
    assert snapshot(study_dir) == before

    # A finished run that holds its history alone (its checkpoints gone) cannot be trained on: one line, nothing
    # written.
    first = study_dir / "seed0" / "singlestage"
    for checkpoint in first.glob("checkpoint_*.pt"):
        checkpoint.unlink()
    before = snapshot(study_dir)
    assert run.main(["--resume", str(study_dir), "--epochs", "4", "--no-progress"]) == 1
    assert capsys.readouterr().err == (f"error: cannot resume {study_dir}: {first} holds its history.json alone, no "
                                       "checkpoint to train on to 4 epochs from\n")
    assert snapshot(study_dir) == before


@pytest.mark.slow
def test_a_study_killed_before_any_run_wrote_a_history_resumes_from_its_record(tmp_path, capsys):
    """What it recorded first (seeds, recipe, data folder, precision) is all a resume needs: no flag given again, not
    even --data-dir (this test's working directory holds no data), and a changed recipe field is refused by name."""
    from synthetic_cifar import write_cifar10

    data_dir = str(tmp_path / "data")
    write_cifar10(data_dir)
    finished, killed = tmp_path / "finished", tmp_path / "killed"
    assert run.main(["--arch", "multistage-narrow", "--seeds", "0", "--dataset", "cifar10", "--data-dir", data_dir,
                     "--epochs", "1", "--batch-size", "50", "--no-progress", "--no-amp", "--output-dir", str(finished)]) == 0
    killed.mkdir()
    shutil.copy(finished / "study-plan.json", killed)
    (killed / "seed0").mkdir()
    (killed / "seed0" / "run.lock").write_bytes(b"")  # its run killed at once
    capsys.readouterr()
    assert run.main(["--resume", str(killed), "--lr", "0.1"]) == 1
    assert capsys.readouterr().err == f"error: cannot resume {killed}: 'lr' was 0.001, now 0.1\n"
    assert run.main(["--resume", str(killed), "--no-progress"]) == 0, capsys.readouterr().err
    assert without_timings(read_history(str(killed / "seed0"))) == without_timings(read_history(str(finished / "seed0")))


@pytest.mark.slow
def test_a_metric_named_where_metrics_are_named_reaches_the_history_tensorboard_and_the_study_table(
        cifar10_dir, tmp_path, monkeypatch):
    """A new evaluation metric is two entries: its Ignite metric (handlers/evaluation.classification_metrics) and its
    words (core/history_file.METRICS). Top-3 accuracy, added here, is then recorded every epoch, shown on the epoch
    line, logged to TensorBoard and shown in each seed's report.md (its tables and the console's) and in both tables
    of study.md, with nothing else changed."""
    from ignite.metrics import TopKCategoricalAccuracy

    import handlers.evaluation
    from core.history_file import METRICS

    classification_metrics = handlers.evaluation.classification_metrics

    def with_top3(device, *args, **kwargs):
        metrics = classification_metrics(device, *args, **kwargs)
        metrics["top3"] = TopKCategoricalAccuracy(k=3, output_transform=lambda out: (out["y_pred"], out["y"]),
                                                  device=device)
        return metrics

    monkeypatch.setattr(handlers.evaluation, "classification_metrics", with_top3)
    monkeypatch.setitem(METRICS, "top3", ("top-3", "top-3"))
    data_dir, _ = cifar10_dir
    study = tmp_path / "study"
    result = run_in_process(["--compare", "multistage-narrow", "multistage", "--seeds", "0", "1", "--dataset",
                             "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32", "--train-eval",
                             "40", "--no-progress", "--no-amp", "--output-dir", str(study)])
    assert result.returncode == 0, result.stderr
    for seed in (0, 1):
        run_dir = study / f"seed{seed}" / "multistage"
        last = read_history(str(run_dir))["epochs"][-1]
        assert f"  top-5 {100 * last['test_top5']:.2f}%  test loss {last['test_loss']:.4f}  top-3 {100 * last['test_top3']:.2f}%  " \
            in result.stdout
        epochs = read_history(str(run_dir))["epochs"]
        assert all(e["test_accuracy"] <= e["test_top3"] <= e["test_top5"] for e in epochs)
        assert tensorboard_points(run_dir)["test/top3"] == [(e["epoch"], pytest.approx(e["test_top3"])) for e in epochs]
        report = (study / f"seed{seed}" / "report.md").read_text()
        assert " | test top-3 | " in report.split("## Per epoch")[1].splitlines()[2]  # the per-epoch table's header
        assert "| 2 | multistage | " in report and f" | {100 * last['test_top3']:.2f}% | " in report
        assert "\n| test top-3 | " in report.split("## Final numbers")[1]
    assert result.stdout.count("\ntest top-3 %") == 2  # each seed's console table
    top3 = json.loads((study / "study.json").read_text())["nets"]["multistage"]["final"]["test_top3"]
    assert top3["values"] == [read_history(str(study / f"seed{seed}" / "multistage"))["epochs"][-1]["test_top3"]
                              for seed in (0, 1)]
    summary = (study / "study.md").read_text()
    assert "\n| test top-3 | " in summary.split("## Last epoch")[1]
    assert " | test top-3 | " in summary.split("## Per epoch (mean across seeds)")[1].splitlines()[2]  # its header


@pytest.mark.slow
def test_a_finished_study_stays_as_it_was_no_stale_lock_and_one_verdict_per_net(bonus_study, tmp_path, capsys):
    """A member killed after its last history write but before it removed its lock leaves a lock file that nobody
    holds: the next resume or report removes it, silently. Reports written again replace each net's TensorBoard
    verdict instead of adding one, and an unchanged report writes no new event file."""
    data_dir, finished = bonus_study
    study_dir = tmp_path / "study"
    shutil.copytree(finished, study_dir)
    stale = study_dir / "seed1" / "multistage" / "run.lock"
    stale.write_text("process 16735 (started 2026-12-01 23:10:02)\n")
    verdicts = {member: [e for e in text_entries(member) if e[0].startswith("bonus/verdict")]
                for member in (study_dir / f"seed{s}" / net for s in (0, 1) for net in ("singlestage", "multistage"))}
    assert all(len(entries) == 0 for member, entries in verdicts.items() if member.name == "singlestage")
    assert all(len(entries) == 1 for member, entries in verdicts.items() if member.name == "multistage")
    capsys.readouterr()
    assert run.main(study_args(data_dir) + ["--resume", str(study_dir)]) == 0
    assert capsys.readouterr().err == ""
    assert not list(study_dir.rglob("run.lock"))
    files = lambda: sorted(p.name for p in study_dir.rglob("*"))  # noqa: E731
    before = files()
    for _ in range(2):  # with the resume's, the third time each report is written again
        assert run.main(["--report", str(study_dir / "seed1")]) == 0
        assert run.main(["--report", str(study_dir)]) == 0
    assert files() == before  # no new event file, no lock left behind
    assert {member: [e for e in text_entries(member) if e[0].startswith("bonus/verdict")] for member in verdicts} == verdicts
    stale.write_text("process 16735 (started 2026-12-01 23:10:02)\n")
    assert run.main(["--report", str(study_dir / "seed1")]) == 0 and not stale.exists()


@pytest.mark.slow
def test_evaluate_of_a_bonus_or_a_study_re_tests_each_of_its_runs_into_a_folder_of_its_own(bonus_study, tmp_path, capsys):
    data_dir, finished = bonus_study
    study_dir = tmp_path / "study"
    shutil.copytree(finished, study_dir)
    capsys.readouterr()
    assert run.main(["--evaluate", str(study_dir / "seed0"), "--no-progress"]) == 0  # a bonus: its two runs
    assert run.main(["--evaluate", str(study_dir), "--no-progress"]) == 0  # the study: every run of every seed
    lines = capsys.readouterr().out.splitlines()
    runs = [study_dir / seed / net for seed in ("seed0", "seed1") for net in ("singlestage", "multistage")]
    assert len(lines) == 6 and [line.split(" of ")[1].split(")")[0] for line in lines] == [str(r) for r in runs[:2] + runs]
    for run_dir in runs:
        folders = sorted(run_dir.glob("evaluation-checkpoint_2*"))
        assert len(folders) == (2 if run_dir.parent.name == "seed0" else 1)
        evaluation = json.loads((folders[0] / "evaluation.json").read_text())
        assert evaluation["metrics"]["test_accuracy"] == read_history(str(run_dir))["epochs"][-1]["test_accuracy"]
    # With --output-dir, each run's folder is named as the run is inside the bonus.
    assert run.main(["--evaluate", str(study_dir / "seed1"), "--no-progress", "--output-dir", str(tmp_path / "eval")]) == 0
    assert sorted(os.listdir(tmp_path / "eval")) == ["multistage", "singlestage"]
    assert (tmp_path / "eval" / "multistage" / "evaluation.json").exists()
