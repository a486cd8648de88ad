"""`run.py --evaluate`: the run's own test numbers again, plus per-class accuracy and confusion, checked independently."""
import json
import os

import numpy as np
import pytest

import run
from helpers import cli, independent_eval, read_history
from synthetic_cifar import write_cifar10


def evaluate(target, *args):
    return run.main(["--evaluate", str(target), "--no-progress", *args])


@pytest.mark.slow
def test_evaluating_the_final_checkpoint_gives_the_last_history_record_and_per_class_accuracy(cifar10_dir, tmp_path, capsys):
    data_dir, written = cifar10_dir
    run_dir = tmp_path / "run"
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32",
               "--output-dir", str(run_dir)) == 0
    assert evaluate(run_dir, "--data-dir", data_dir) == 0
    folder = run_dir / "evaluation-checkpoint_2"
    assert sorted(os.listdir(folder)) == ["confusion.png", "evaluation.json", "evaluation.md"]
    result = json.loads((folder / "evaluation.json").read_text())
    last = read_history(str(run_dir))["epochs"][-1]
    for key in ("test_accuracy", "test_top5", "test_loss"):
        assert result["metrics"][key] == last[key]  # the same pass as the run's: equal, not close
    predictions, _ = independent_eval(str(run_dir), "multistage", written, 10, epoch=2)
    truth = written["test_y"]
    expected = {name: float(np.mean(predictions[truth == c] == c)) for c, name in enumerate(written["names"])
                if (truth == c).any()}
    got = {row["class"]: row["accuracy"] for row in result["per_class_accuracy"] if row["accuracy"] is not None}
    assert got == pytest.approx(expected)
    matrix = np.array(result["confusion"])
    assert matrix.shape == (10, 10) and matrix.sum() == 40 and np.trace(matrix) == round(40 * last["test_accuracy"])
    accuracies = [row["accuracy"] for row in result["per_class_accuracy"] if row["accuracy"] is not None]
    assert accuracies == sorted(accuracies)  # worst first
    assert f"Test accuracy {100 * last['test_accuracy']:.2f}%" in capsys.readouterr().out
    assert evaluate(run_dir / "checkpoint_1.pt", "--data-dir", data_dir) == 0  # an older checkpoint, by file
    first = json.loads((run_dir / "evaluation-checkpoint_1" / "evaluation.json").read_text())
    assert first["epoch"] == 1 and first["metrics"]["test_loss"] == read_history(str(run_dir))["epochs"][0]["test_loss"]
    # Without --data-dir, the run's own data folder (this test's working directory has no data/): nothing is
    # overwritten, a second folder with the same numbers.
    assert not os.path.exists("data") and evaluate(run_dir) == 0
    again = json.loads((run_dir / "evaluation-checkpoint_2-2" / "evaluation.json").read_text())
    assert again["metrics"] == result["metrics"]


@pytest.mark.slow
def test_a_mid_epoch_checkpoint_is_evaluated_as_what_it_is(cifar10_dir, tmp_path, capsys, monkeypatch):
    """interrupted_6.pt (epoch 1 and 2 of epoch 2's 4 iterations): said as such, and not set beside epoch 1's recorded
    numbers, which its weights no longer give."""
    import engine.build
    from fault_injection import with_fault

    data_dir, _ = cifar10_dir
    run_dir = tmp_path / "run"
    monkeypatch.setattr(engine.build, "build_run", with_fault(engine.build.build_run, "sigint", 6))
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32",
               "--output-dir", str(run_dir)) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert evaluate(run_dir / "interrupted_6.pt", "--data-dir", data_dir) == 0
    folder = run_dir / "evaluation-interrupted_6"
    result = json.loads((folder / "evaluation.json").read_text())
    assert (result["epoch"], result["trained"], result["recorded_in_history"]) == (1, "epoch 1 + 2 iterations", None)
    assert f"(epoch 1 + 2 iterations of {run_dir})" in capsys.readouterr().out
    assert (folder / "evaluation.md").read_text().startswith(
        f"# Evaluation of {run_dir / 'interrupted_6.pt'} (epoch 1 + 2 iterations, cifar10)")


@pytest.mark.slow
def test_cifar100_evaluation_has_a_20_by_20_superclass_confusion(cifar100_dir, tmp_path):
    data_dir, written = cifar100_dir
    run_dir = tmp_path / "run"
    assert cli("--data-dir", data_dir, "--arch", "singlestage", "--epochs", "1", "--batch-size", "50",
               "--output-dir", str(run_dir)) == 0
    assert evaluate(run_dir, "--data-dir", data_dir, "--output-dir", str(tmp_path / "eval")) == 0
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    matrix = np.array(result["superclass_confusion"])
    assert matrix.shape == (20, 20) and matrix.sum() == 40
    last = read_history(str(run_dir))["epochs"][-1]
    assert result["metrics"]["test_superclass_accuracy"] == last["test_superclass_accuracy"]
    assert np.trace(matrix) / 40 == pytest.approx(last["test_superclass_accuracy"])
    assert len(result["per_class_accuracy"]) == 100 and result["superclass_names"][0] == "coarse0"


def test_evaluate_something_that_is_not_a_run(tmp_path, capsys):
    assert evaluate(tmp_path) == 1
    assert capsys.readouterr().err == f"error: cannot evaluate: {tmp_path} holds no checkpoint_<epoch>.pt\n"


def test_a_run_with_a_validation_split_re_tests_on_a_copy_too_small_to_hold_it_out(cifar10_dir, tmp_path):
    """A re-test reads the test images alone: --val-split, which the run held out of its training set, asks nothing
    of the data folder it is re-tested on (here one whose training set is smaller than the split)."""
    data_dir, _written = cifar10_dir
    run_dir = tmp_path / "run"
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "1", "--batch-size", "32",
               "--val-split", "30", "--output-dir", str(run_dir)) == 0
    small = tmp_path / "small"
    write_cifar10(str(small), per_batch=4, n_test=40)
    assert evaluate(run_dir, "--data-dir", str(small), "--output-dir", str(tmp_path / "evaluation")) == 0
    result = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert result["epoch"] == 1 and sum(map(sum, result["confusion"])) == 40
