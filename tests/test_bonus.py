"""`run.py --bonus` and `--report` end to end on tiny synthetic data."""
import contextlib
import io
import json
import os
import shutil

import matplotlib.image
import numpy as np
import pytest

import engine.build
import run
from synthetic_cifar import write_cifar10
from fault_injection import with_fault
from helpers import HANG_TIMEOUT, independent_eval, read_history, run_in_process, runs_of, start_run, without_timings


def bonus(*args):
    return run.main([*args, "--no-progress", "--no-amp"])


def colour_pixels(png, hex_colour):
    """How many pixels of the image have (nearly) this colour."""
    image = matplotlib.image.imread(png)[..., :3]
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image - rgb).max(axis=2) < 0.02).sum())


@pytest.fixture(scope="module")
def finished_bonus(tmp_path_factory):
    """A finished 2-epoch bonus on tiny data, trained once for the module: (data_dir, bonus_dir, what it printed,
    what the data holds). Tests that change it work on a copy (`bonus_run`)."""
    root = tmp_path_factory.mktemp("bonus")
    written = write_cifar10(str(root / "data"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert bonus("--bonus", "--dataset", "cifar10", "--data-dir", str(root / "data"), "--epochs", "2",
                     "--batch-size", "32", "--train-eval", "60", "--output-dir", str(root / "bonus")) == 0
    return str(root / "data"), root / "bonus", printed.getvalue(), written


@pytest.fixture
def bonus_run(finished_bonus, tmp_path):
    """A copy of the module's finished bonus that the test may change: (data_dir, bonus_dir, what it printed)."""
    data_dir, finished, printed, _ = finished_bonus
    shutil.copytree(finished, tmp_path / "bonus")
    return data_dir, tmp_path / "bonus", printed


@pytest.mark.slow
def test_bonus_trains_both_and_writes_the_report(bonus_run):
    _, bonus_dir, out = bonus_run
    assert sorted(os.listdir(bonus_dir)) == ["comparison.json", "curves.png", "multistage", "report.json", "report.md", "singlestage"]
    histories = {arch: read_history(str(bonus_dir / arch)) for arch in ("singlestage", "multistage")}
    configs = [{k: v for k, v in h["config"].items() if k not in ("arch", "output_dir")} for h in histories.values()]
    assert configs[0] == configs[1] and configs[0]["train_eval"] == 60

    report = json.loads((bonus_dir / "report.json").read_text())
    for arch, history in histories.items():
        assert runs_of(report)[arch]["epochs"] == history["epochs"]
        final = history["epochs"][-1]
        assert runs_of(report)[arch]["final"]["gap_accuracy"] == pytest.approx(
            final["train_eval_accuracy"] - final["test_accuracy"])
        assert {"train_eval_accuracy", "train_eval_loss", "test_top5"} <= set(final)
    assert runs_of(report)["singlestage"]["model"] == {"parameters": 113_034, "macs_per_image": 114_131_264,
                                                      "receptive_field": 27}
    assert runs_of(report)["multistage"]["model"]["receptive_field"] == 53
    assert report["contrasts"]["multistage"]["verdict"]["verdict"] in ("reducing underfitting", "reducing overfitting", "inconclusive", "mixed")

    markdown = (bonus_dir / "report.md").read_text()
    assert f"## Verdict: {report['contrasts']['multistage']['verdict']['verdict']}" in markdown
    single_epoch_2 = histories["singlestage"]["epochs"][1]
    assert f"| 2 | singlestage | {single_epoch_2['train_loss']:.4f} |" in markdown
    assert "Rule (multi-stage minus single-stage)" in markdown

    png = str(bonus_dir / "curves.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert colour_pixels(png, "#ff7f0e") > 200 and colour_pixels(png, "#1f77b4") > 200  # both nets drawn
    assert "Verdict: " in out and "== singlestage ==" in out and "== multistage ==" in out


@pytest.mark.slow
def test_train_eval_accuracy_is_measured_on_the_fixed_subset(bonus_run):
    _, bonus_dir, _ = bonus_run
    history = read_history(str(bonus_dir / "multistage"))
    for record in history["epochs"]:
        assert round(record["train_eval_accuracy"] * 60) == pytest.approx(record["train_eval_accuracy"] * 60, abs=1e-9)


@pytest.mark.slow
def test_train_eval_larger_than_the_training_set_measures_every_training_image_and_the_reports_say_so(finished_bonus,
                                                                                                      tmp_path):
    """--train-eval 60 with --val-split 50 of 100 images: train-eval measures the 50 left to train on, and report.md
    and study.md give that count, not the 60 asked for (which the recipe keeps)."""
    data_dir = finished_bonus[0]
    common = ["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "1", "--batch-size", "25", "--val-split", "50",
              "--train-eval", "60"]
    assert bonus("--bonus", *common, "--output-dir", str(tmp_path / "bonus")) == 0
    report = json.loads((tmp_path / "bonus" / "report.json").read_text())
    assert report["recipe"]["train_eval"] == 60 and {r["train_eval_images"] for r in runs_of(report).values()} == {50}
    for record in read_history(str(tmp_path / "bonus" / "multistage"))["epochs"]:
        assert round(record["train_eval_accuracy"] * 50) == pytest.approx(record["train_eval_accuracy"] * 50, abs=1e-9)
    assert "train-eval on 50 fixed training images." in (tmp_path / "bonus" / "report.md").read_text()
    assert bonus("--seeds", "0", "1", *common, "--output-dir", str(tmp_path / "study")) == 0
    assert ", train-eval 50, " in (tmp_path / "study" / "study.md").read_text()


@pytest.mark.slow
def test_resume_skips_finished_runs_and_finishes_an_interrupted_one(bonus_run, capsys):
    data_dir, bonus_dir, _ = bonus_run
    finished = read_history(str(bonus_dir / "multistage"))
    # Make the multi-stage run look interrupted after its first epoch.
    os.remove(bonus_dir / "multistage" / "checkpoint_2.pt")
    interrupted = dict(finished, status="running", epochs=finished["epochs"][:1])
    (bonus_dir / "multistage" / "history.json").write_text(json.dumps(interrupted))
    os.remove(bonus_dir / "report.json")
    unfinished = (f"error: the multistage run has not completed (status: running); finish it with: python run.py "
                  f"--bonus --resume {bonus_dir}\n")
    for directories in ([bonus_dir], [bonus_dir / "singlestage", bonus_dir / "multistage"]):
        assert run.main(["--report", *map(str, directories), "--data-dir", data_dir]) == 1
        assert capsys.readouterr().err == unfinished

    assert bonus("--bonus", "--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32",
                 "--train-eval", "60", "--resume", str(bonus_dir)) == 0
    out = capsys.readouterr().out
    assert f"singlestage: already trained in {bonus_dir / 'singlestage'}, not training again" in out
    assert "Epoch   1/2" not in out and "Epoch   2/2" in out
    resumed = read_history(str(bonus_dir / "multistage"))
    assert without_timings(resumed) == without_timings(finished)  # bit-identical to the uninterrupted run
    assert (bonus_dir / "report.json").exists()


def assert_ends_as(bonus_dir, finished):
    """Both nets' histories of `bonus_dir` equal those of the uninterrupted bonus `finished`, and so does the verdict."""
    for arch in ("singlestage", "multistage"):
        assert without_timings(read_history(str(bonus_dir / arch))) == without_timings(read_history(str(finished / arch)))
    assert (json.loads((bonus_dir / "report.json").read_text())["contrasts"]["multistage"]["verdict"]
            == json.loads((finished / "report.json").read_text())["contrasts"]["multistage"]["verdict"])


@pytest.mark.slow
def test_an_interrupted_bonus_prints_the_command_that_finishes_the_bonus(finished_bonus, tmp_path, monkeypatch):
    """Ctrl-C in the middle of the first net: the printed command must continue the bonus (both nets and the
    report), not only the net that was training, and needs no flag repeated: the recipe comes from the record."""
    data_dir, finished, _, _ = finished_bonus
    bonus_dir = tmp_path / "bonus"
    with monkeypatch.context() as patch:  # SIGINT after the 3rd iteration, in this process
        patch.setattr(engine.build, "build_run", with_fault(engine.build.build_run, "sigint", 3))
        stopped = run_in_process(["--bonus", "--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2",
                                  "--batch-size", "32", "--train-eval", "60", "--output-dir", str(bonus_dir),
                                  "--no-progress", "--no-amp"])
    assert stopped.returncode == 130, stopped.stderr
    command = f"python run.py --bonus --resume {bonus_dir}"
    assert stopped.stderr == f"interrupted at epoch 1, iteration 3; checkpoint written. Continue with: {command}\n"
    assert not (bonus_dir / "multistage").exists() and not (bonus_dir / "report.json").exists()

    resumed = run_in_process(command.split()[2:])
    assert resumed.returncode == 0, resumed.stderr
    assert_ends_as(bonus_dir, finished)


@pytest.mark.slow
def test_a_bonus_killed_as_its_first_net_completes_is_finished_by_its_resume(finished_bonus, tmp_path):
    """SIGKILL after the first net's last checkpoint, before its history.json says it completed: the resume trains
    nothing more of it, records its end, trains the second net and writes the report, as the uninterrupted bonus."""
    data_dir, finished, _, _ = finished_bonus
    bonus_dir = tmp_path / "bonus"
    killed = start_run(["--bonus", "--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size",
                        "32", "--train-eval", "60", "--output-dir", str(bonus_dir), "--no-progress", "--no-amp"],
                       "kill-completed:1")
    assert killed.wait(HANG_TIMEOUT) == -9, killed.communicate()
    assert read_history(str(bonus_dir / "singlestage"))["status"] == "running"
    assert not (bonus_dir / "multistage").exists()

    resumed = run_in_process(["--resume", str(bonus_dir), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert "Epoch   1/2" in resumed.stdout.split("== multistage ==")[1]  # only the second net trains
    assert "Epoch " not in resumed.stdout.split("== multistage ==")[0]
    assert_ends_as(bonus_dir, finished)


@pytest.mark.slow
def test_resume_with_a_different_configuration_is_refused(bonus_run, capsys):
    data_dir, bonus_dir, _ = bonus_run
    os.remove(bonus_dir / "multistage" / "checkpoint_2.pt")
    assert bonus("--bonus", "--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32",
                 "--train-eval", "60", "--lr", "0.01", "--resume", str(bonus_dir)) == 1
    assert capsys.readouterr().err == f"error: cannot resume {bonus_dir}: 'lr' was 0.001, now 0.01\n"  # by its record


@pytest.mark.slow
def test_report_from_a_bonus_directory_is_rebuilt_without_training(bonus_run, capsys, tmp_path):
    data_dir, bonus_dir, _ = bonus_run
    before = json.loads((bonus_dir / "report.json").read_text())
    assert "classes" in before["contrasts"]["multistage"]["where_the_gain_comes_from"]
    os.remove(bonus_dir / "report.md")
    events = lambda: [n for n in os.listdir(bonus_dir / "multistage") if n.startswith("events.out.tfevents.")]  # noqa: E731
    for name in events():
        os.remove(bonus_dir / "multistage" / name)
    # Without --data-dir the runs' own data folder (this test's working directory has no data/).
    assert not os.path.exists("data") and run.main(["--report", str(bonus_dir)]) == 0
    assert "Epoch" not in capsys.readouterr().out
    rebuilt = json.loads((bonus_dir / "report.json").read_text())
    # This bonus is a copy: the report names (and writes its TensorBoard verdict text into) the copy's runs.
    assert runs_of(rebuilt)["multistage"]["run_dir"] == str(bonus_dir / "multistage")
    assert len(events()) == 1
    same = lambda report: {k: v for k, v in runs_of(report)["multistage"].items() if k != "run_dir"}  # noqa: E731
    assert same(rebuilt) == same(before) and (rebuilt["contrasts"]["multistage"]["where_the_gain_comes_from"]
                                              == before["contrasts"]["multistage"]["where_the_gain_comes_from"])
    assert rebuilt["contrasts"]["multistage"]["verdict"] == before["contrasts"]["multistage"]["verdict"]
    assert (bonus_dir / "report.md").exists()
    # Without the dataset the report is still rebuilt; only the per-class section says what it lacks (and
    # nothing is downloaded).
    empty = tmp_path / "no-data"
    assert run.main(["--report", str(bonus_dir), "--data-dir", str(empty)]) == 0
    without_data = json.loads((bonus_dir / "report.json").read_text())
    assert without_data["contrasts"]["multistage"]["where_the_gain_comes_from"]["unavailable"].startswith(
        f"cifar10 not found: expected the folder {empty}")
    without_gain = lambda report: {**report, "contrasts": {name: {k: v for k, v in contrast.items() if k != "where_the_gain_comes_from"}  # noqa: E731
                                                          for name, contrast in report["contrasts"].items()}}
    assert without_gain(without_data) == without_gain(rebuilt)
    assert "## Where the gain comes from\n\nNot available: cifar10 not found" in (bonus_dir / "report.md").read_text()
    assert not empty.exists()


@pytest.mark.slow
def test_report_from_two_run_directories(cifar10_dir, tmp_path, capsys):
    data_dir, _ = cifar10_dir
    common = ["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "1", "--batch-size", "50", "--train-eval", "40"]
    assert bonus(*common, "--arch", "singlestage", "--output-dir", str(tmp_path / "s")) == 0
    assert bonus(*common, "--arch", "multistage", "--output-dir", str(tmp_path / "m")) == 0
    assert bonus(*common, "--arch", "multistage", "--lr", "0.002", "--output-dir", str(tmp_path / "m2")) == 0
    capsys.readouterr()
    assert run.main(["--report", str(tmp_path / "s"), str(tmp_path / "m2"), "--output-dir", str(tmp_path / "r")]) == 1
    assert capsys.readouterr().err == "error: the runs are not comparable: 'lr' differs (singlestage: 0.001, multistage: 0.002)\n"
    assert not (tmp_path / "r").exists()
    assert run.main(["--report", str(tmp_path / "m"), str(tmp_path / "s"), "--data-dir", data_dir,
                     "--output-dir", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert runs_of(report)["singlestage"]["run_dir"] == str(tmp_path / "s")
    assert run.main(["--report", str(tmp_path / "m"), str(tmp_path / "m2")]) == 1
    assert "one run per architecture" in capsys.readouterr().err


def test_report_renders_a_bonus_directory_whose_histories_have_a_flat_config_and_no_precision(tmp_path, capsys):
    """Histories with one flat config, `amp` None and a `dump_samples` field (a layout users may hold), rebuilt
    from the committed CIFAR-10 bonus report: --report gives that report's verdict and numbers again. No training:
    the verdict is arithmetic on recorded numbers, the same on every machine."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old = json.loads(open(os.path.join(repo, "docs", "results", "cifar10-bonus", "report.json")).read())
    bonus_dir = tmp_path / "old-bonus"
    for arch, old_run in old["runs"].items():
        config = {"arch": arch, "dataset": "cifar10", "data_dir": "data", "download": True, "epochs": 10,
                  "batch_size": 128, "lr": 0.001, "seed": 0, "augment": False, "blocks_per_stage": 2, "device": "auto",
                  "amp": None, "runs_root": "runs", "output_dir": str(bonus_dir / arch), "progress": False,
                  "train_eval": 10000, "deterministic": False, "sync_bn": False, "dump_samples": None,
                  "log_graph": False, "log_histograms": False, "compile": False}
        (bonus_dir / arch).mkdir(parents=True)
        (bonus_dir / arch / "history.json").write_text(json.dumps(
            {"config": config, "device": old_run["device"], "class_names": [str(i) for i in range(10)],
             "status": "completed", "epochs": old_run["epochs"], "final": old_run["final"]}))
    # No dataset (whatever a data/ folder in the working directory holds): the report comes from the histories alone.
    assert run.main(["--report", str(bonus_dir), "--data-dir", str(tmp_path / "no-data")]) == 0
    rebuilt = json.loads((bonus_dir / "report.json").read_text())
    # The committed report holds a pair's contrast at the top level, as reports did before comparisons of any nets.
    rebuilt_contrast = rebuilt["contrasts"]["multistage"]
    assert rebuilt_contrast["verdict"] == old["verdict"] and rebuilt_contrast["rule"] == old["rule"]
    for arch in ("singlestage", "multistage"):
        assert runs_of(rebuilt)[arch]["epochs"] == old["runs"][arch]["epochs"]
        assert runs_of(rebuilt)[arch]["final"] == old["runs"][arch]["final"]
        assert runs_of(rebuilt)[arch]["model"] == old["runs"][arch]["model"]
    assert "Verdict: reducing underfitting (confidence: moderate)" in capsys.readouterr().out


def per_class_here(predictions, truth, names):
    return {name: float(np.mean(predictions[truth == c] == c)) for c, name in enumerate(names) if (truth == c).any()}


@pytest.mark.slow
def test_where_the_gain_comes_from_is_the_per_class_accuracy_of_the_final_models(finished_bonus):
    _, bonus_dir, out, written = finished_bonus
    truth = written["test_y"]
    accuracy = {arch: per_class_here(independent_eval(str(bonus_dir / arch), arch, written, 10, epoch=2)[0], truth,
                                     written["names"]) for arch in ("singlestage", "multistage")}
    gain = json.loads((bonus_dir / "report.json").read_text())["contrasts"]["multistage"]["where_the_gain_comes_from"]["classes"]
    assert {row["class"]: row["gain"] for row in gain["classes"]} == pytest.approx(
        {name: accuracy["multistage"][name] - accuracy["singlestage"][name] for name in accuracy["multistage"]})
    assert {row["class"]: row["singlestage"] for row in gain["classes"]} == pytest.approx(accuracy["singlestage"])
    gains = [row["gain"] for row in gain["classes"]]
    assert gains == sorted(gains, reverse=True) and gain["seeds"] == 1
    assert gain["improved"] == sum(g > 0 for g in gains)
    markdown = (bonus_dir / "report.md").read_text()
    assert f"Per class (test accuracy of the final models): **{gain['summary']}**." in markdown
    assert f"Where the gain comes from: {gain['summary']}" in out
    top = gain["classes"][0]
    assert (f"| {top['class']} | {100 * top['singlestage']:.1f}% | {100 * top['multistage']:.1f}% | "
            f"{100 * top['gain']:+.1f} |") in markdown


@pytest.mark.slow
def test_cifar100_report_compares_superclasses_too(cifar100_dir, tmp_path):
    data_dir, written = cifar100_dir
    common = ["--data-dir", data_dir, "--epochs", "1", "--batch-size", "50", "--output-dir"]
    assert bonus(*common, str(tmp_path / "s"), "--arch", "singlestage") == 0
    assert bonus(*common, str(tmp_path / "m"), "--arch", "multistage") == 0
    assert run.main(["--report", str(tmp_path / "s"), str(tmp_path / "m"), "--data-dir", data_dir,
                     "--output-dir", str(tmp_path / "r")]) == 0
    gain = json.loads((tmp_path / "r" / "report.json").read_text())["contrasts"]["multistage"]["where_the_gain_comes_from"]
    coarse_truth = written["fine_to_coarse"][written["test_y"]]
    expected = {}
    for arch in ("singlestage", "multistage"):
        predictions, _ = independent_eval(str(tmp_path / arch[0]), arch, written, 100, epoch=1)
        expected[arch] = per_class_here(written["fine_to_coarse"][predictions], coarse_truth,
                                        [f"coarse{i}" for i in range(20)])
    rows = gain["superclasses"]["classes"]
    assert {row["class"]: row["multistage"] for row in rows} == pytest.approx(expected["multistage"])
    assert {row["class"]: row["gain"] for row in rows} == pytest.approx(
        {name: expected["multistage"][name] - expected["singlestage"][name] for name in expected["multistage"]})
    assert len(gain["classes"]["classes"]) == len(set(written["test_y"].tolist()))  # classes with test images
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "Per superclass: **" in markdown and "| ... " in markdown  # 100 classes: only the ends are listed
