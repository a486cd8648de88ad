"""End-to-end runs on tiny synthetic data, checked against independent computations."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from ignite.engine import Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import engine.build
import engine.command
import run
from helpers import HANG_TIMEOUT, NAN_NET, REPO, cli, device_line, hit_train_step, independent_eval, read_history


def scalars(run_dir, tag):
    events = EventAccumulator(run_dir)
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_two_epoch_run_matches_independent_computation(cifar10_dir, tmp_path):
    data_dir, written = cifar10_dir
    run_dir = str(tmp_path / "run")
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32",
               "--output-dir", run_dir, "--no-download") == 0
    history = read_history(run_dir)
    assert history["status"] == "completed"
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert history["num_train"] == 100 and history["num_test"] == 40
    assert history["parameters"] == 175_722  # multi-stage net, 10 classes

    # Epoch mean = sample-weighted mean of the per-iteration batch losses logged to TensorBoard.
    batch_losses = scalars(run_dir, "train/loss_iter")
    assert [step for step, _ in batch_losses] == list(range(1, 9))
    sizes = [32, 32, 32, 4]
    for epoch in (1, 2):
        chunk = [value for _, value in batch_losses[4 * (epoch - 1):4 * epoch]]
        expected = sum(loss * size for loss, size in zip(chunk, sizes)) / 100
        assert history["epochs"][epoch - 1]["train_loss"] == pytest.approx(expected, rel=1e-6)
    assert scalars(run_dir, "train/loss_epoch") == [
        (e["epoch"], pytest.approx(e["train_loss"], rel=1e-6)) for e in history["epochs"]
    ]

    # Test accuracy and loss = a second pass over the test set with the saved final weights.
    predictions, loss = independent_eval(run_dir, "multistage", written, 10, epoch=2)
    final = history["epochs"][-1]
    assert final["test_accuracy"] == pytest.approx(float(np.mean(predictions == written["test_y"])), abs=1e-12)
    assert final["test_loss"] == pytest.approx(loss, rel=1e-4)
    assert history["final"]["test_accuracy"] == final["test_accuracy"]
    assert sorted(f for f in os.listdir(run_dir) if f.endswith(".pt")) == ["checkpoint_1.pt", "checkpoint_2.pt"]
    assert [step for step, _ in scalars(run_dir, "test/accuracy")] == [1, 2]


@pytest.mark.slow
def test_cifar100_superclass_accuracy(cifar100_dir, tmp_path):
    data_dir, written = cifar100_dir
    run_dir = str(tmp_path / "run")
    assert cli("--data-dir", data_dir, "--arch", "singlestage", "--epochs", "1", "--batch-size", "50",
               "--output-dir", run_dir) == 0
    record = read_history(run_dir)["epochs"][0]
    predictions, _ = independent_eval(run_dir, "singlestage", written, 100, epoch=1)
    coarse = written["fine_to_coarse"]
    expected = float(np.mean(coarse[predictions] == coarse[written["test_y"]]))
    assert record["test_superclass_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert record["test_top5"] >= record["test_accuracy"]


@pytest.mark.slow
def test_same_seed_gives_bit_identical_history(cifar10_dir, tmp_path):
    data_dir, _ = cifar10_dir
    records = []
    for name in ("a", "b"):
        assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32",
                   "--augment", "--seed", "7", "--output-dir", str(tmp_path / name)) == 0
        records.append([{k: v for k, v in e.items() if "seconds" not in k and k != "images_per_s"}
                        for e in read_history(str(tmp_path / name))["epochs"]])
    assert records[0] == records[1]


def test_existing_run_directory_is_never_overwritten(cifar10_dir, tmp_path, capsys):
    data_dir, _ = cifar10_dir
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("precious")
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "10", "--output-dir", str(run_dir)) == 1
    err = capsys.readouterr().err
    assert err == f"error: run directory {run_dir} already exists; choose another --output-dir (runs are never overwritten)\n"
    assert os.listdir(run_dir) == ["notes.txt"] and (run_dir / "notes.txt").read_text() == "precious"


def test_output_dir_that_is_a_file(cifar10_dir, tmp_path, capsys):
    data_dir, _ = cifar10_dir
    target = tmp_path / "file"
    target.write_text("x")
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "10", "--output-dir", str(target)) == 1
    assert "exists and is a file" in capsys.readouterr().err
    assert target.read_text() == "x"


def test_output_dir_that_cannot_be_created(cifar10_dir, tmp_path, capsys):
    data_dir, _ = cifar10_dir
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "run"
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "10", "--output-dir", str(target)) == 1
    assert capsys.readouterr().err == f"error: cannot create run directory {target}: Not a directory\n"


def test_batch_size_larger_than_training_set(cifar10_dir, tmp_path, capsys):
    data_dir, _ = cifar10_dir
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "101",
               "--output-dir", str(tmp_path / "run")) == 1
    assert capsys.readouterr().err == "error: --batch-size 101 is larger than the training set (100 images)\n"
    assert not (tmp_path / "run").exists()


def test_missing_data_with_no_download(tmp_path, capsys):
    assert cli("--data-dir", str(tmp_path / "empty"), "--no-download", "--output-dir", str(tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cifar100 not found: expected the folder ") and err.count("\n") == 1
    assert "cifar-100-python.tar.gz" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        (["--epochs", "-3"], "argument --epochs: must be at least 1, got -3"),
        (["--epochs", "ten"], "argument --epochs: expected a whole number, got 'ten'"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--lr", "0"], "argument --lr: must be a positive finite number, got 0"),
        (["--lr", "nan"], "argument --lr: must be a positive finite number, got nan"),
        (["--arch", "vgg"], "argument --arch: unknown network 'vgg'; choose one of multistage, multistage-constwidth"),
        (["--compare", "singlestage", "vgg"], "argument --compare: unknown network 'vgg'; choose one of multistage"),
        (["--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
    ],
)
def test_bad_flags_are_refused_by_argparse(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        run.main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_nan_loss_stops_with_a_clear_error_and_keeps_last_good_checkpoint(cifar10_dir, tmp_path, capsys, monkeypatch):
    data_dir, _ = cifar10_dir
    hit_train_step(monkeypatch, 6, lambda output: dict(output, loss=output["loss"] * float("nan")))  # epoch 2, batch 2
    run_dir = tmp_path / "run"
    assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "3", "--batch-size", "32",
               "--output-dir", str(run_dir)) == 1
    err = capsys.readouterr().err
    assert err == (f"error: training stopped: the loss became NaN or infinite at epoch 2, iteration 6; the last good "
                   f"checkpoint is checkpoint_1.pt (epoch 1) in {run_dir}; train again with a lower --lr (now 0.001)\n")
    assert sorted(f for f in os.listdir(run_dir) if f.endswith(".pt")) == ["checkpoint_1.pt"]
    history = read_history(str(run_dir))
    assert history["status"].startswith("stopped: loss became NaN") and len(history["epochs"]) == 1
    assert torch.load(run_dir / "checkpoint_1.pt", weights_only=True)["trainer"]["iteration"] == 4  # end of epoch 1


def test_help_documents_every_flag_with_default():
    out = engine.command.build_parser().format_help()
    for flag in ("--arch", "--dataset", "--data-dir", "--no-download", "--epochs", "--batch-size", "--lr", "--seed",
                 "--augment", "--blocks-per-stage", "--device", "--amp", "--output-dir", "--no-progress", "--debug"):
        assert flag in out
    words = " ".join(out.split())  # argparse wraps to the terminal's width
    assert "(default: 10)" in words and "(default: 0.001)" in words and "(default: cifar100)" in words


@pytest.mark.slow
def test_command_line_end_to_end(cifar10_dir, tmp_path):
    data_dir, _ = cifar10_dir
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "run.py", "--dataset", "cifar10", "--data-dir", data_dir,
         "--epochs", "2", "--batch-size", "50", "--no-amp", "--output-dir", str(run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=HANG_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == device_line("fp32 (--no-amp)")
    assert lines[1] == f"Run directory: {run_dir}"
    assert lines[2].startswith("Epoch   1/2  train loss ") and lines[3].startswith("Epoch   2/2  train loss ")
    history = read_history(str(run_dir))
    assert f"{history['epochs'][1]['train_loss']:.4f}" in lines[3]
    assert lines[-1].endswith(f"run directory: {run_dir}")


@pytest.mark.slow
def test_default_run_directory_name_tells_runs_apart(cifar10_dir, tmp_path, capsys):
    data_dir, _ = cifar10_dir
    for arch in ("multistage", "singlestage"):
        assert cli("--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "1", "--batch-size", "50",
                   "--arch", arch, "--seed", "4", "--runs-root", str(tmp_path / "runs")) == 0
    names = sorted(os.listdir(tmp_path / "runs"))
    assert re.fullmatch(r"cifar10-multistage-2bps-seed4-\d{8}-\d{6}", names[0])
    assert re.fullmatch(r"cifar10-singlestage-seed4-\d{8}-\d{6}", names[1])
    assert f"Run directory: {tmp_path / 'runs' / names[0]}" in capsys.readouterr().out


@pytest.mark.slow
def test_help_and_a_run_work_under_python_OO(cifar10_dir, tmp_path, request):
    """-OO strips docstrings: nothing the program says may be built from one."""
    data_dir, _ = cifar10_dir
    # Bytecode compiled under -OO is kept in pytest's cache folder: compiling torch's modules again would take most of
    # the test's time, and a venv holds none of it.
    cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`
    bytecode = {"PYTHONPYCACHEPREFIX": str(cache.mkdir("bytecode-OO"))} if cache else {}
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    # One interpreter for the rules every report prints (constants, not docstrings: they survive -OO), --help
    # and a training run.
    script = ("import contextlib, sys, run\n"
              "from engine.compare.verdict import gain_rule, rule, rule_paired\n"
              "print(rule(), rule_paired(), gain_rule())\n"
              "with contextlib.suppress(SystemExit):\n"
              "    run.main(['--help'])\n"
              "sys.exit(run.main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-OO", "-c", script, "--dataset", "cifar10", "--data-dir", data_dir,
                             "--epochs", "1", "--batch-size", "50", "--no-progress", "--no-amp",
                             "--output-dir", str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True,
                            timeout=HANG_TIMEOUT, env={**environment, **bytecode})
    assert result.returncode == 0, result.stderr
    assert "--blocks-per-stage" in result.stdout
    assert "Rule (multi-stage minus single-stage)" in result.stdout and "Several seeds" in result.stdout
    assert "Concentrated: the most-improved 20%" in result.stdout and "Epoch   1/1" in result.stdout


def test_a_new_run_records_what_it_is_before_its_first_iteration(cifar10_dir, tmp_path, monkeypatch):
    """history.json exists from the start (recipe, data folder, precision; no epoch yet), so that a directory killed
    at any moment says what it is; a failure before the first epoch ends is recorded in it too."""
    data_dir, _ = cifar10_dir
    run_dir = tmp_path / "run"
    seen = []
    build_run = engine.build.build_run

    def fail_at_the_first_iteration(recipe, setup, data):
        built = build_run(recipe, setup, data)

        @built.trainer.on(Events.ITERATION_STARTED(once=1))
        def look(_engine):
            seen.append(read_history(str(run_dir)))
            raise RuntimeError("boom")

        return built

    monkeypatch.setattr(engine.build, "build_run", fail_at_the_first_iteration)
    with pytest.raises(RuntimeError, match="boom"):
        cli("--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "1", "--batch-size", "50", "--output-dir",
            str(run_dir))
    at_start = seen[0]
    assert (at_start["status"], at_start["epochs"], at_start["config"]["data_dir"]) == ("running", [], data_dir)
    assert at_start["config"]["arch"] == "multistage" and at_start["amp_dtype"] is None
    assert read_history(str(run_dir))["status"] == "failed: boom"


@pytest.mark.slow
@pytest.mark.parametrize("flags, stop", [
    (["--lr", "1e20"], "the loss became NaN or infinite at epoch 1, iteration {n}"),
    (["--lr", "1e38"], "the optimizer's step overflowed float32 at epoch 1, iteration 1"),  # Adam's step size
    (["--optimizer", "sgd", "--lr", "1e39"], "the optimizer's step overflowed float32 at epoch 1, iteration 1"),
    (["--lr", "1e20", "--amp", "bf16"], "the loss became NaN or infinite at epoch 1, iteration {n}"),
])
def test_a_learning_rate_that_cannot_train_stops_in_one_line_saying_nothing_was_saved(cifar10_dir, tmp_path, capsys,
                                                                                     flags, stop):
    """Before any checkpoint: the line says so, and what to change; whatever the optimizer, never a traceback."""
    data_dir, _ = cifar10_dir
    run_dir = tmp_path / "run"
    # fp32 unless the case names a precision: `--amp auto` picks bf16 on CPUs with native bf16, and the line then
    # adds "or with --amp off".
    precision = [] if "--amp" in flags else ["--no-amp"]
    code = run.main(["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32",
                     "--arch", "multistage-narrow", "--no-progress", *precision, *flags, "--output-dir", str(run_dir)])
    # The whole of stderr: the error line last, before it only warnings (a forced bf16 on a CPU whose kernels lack
    # it says so), never a traceback.
    *before, err = capsys.readouterr().err.splitlines() or [""]
    assert all(line.startswith("warning: ") for line in before), before
    lr = f"{float(flags[flags.index('--lr') + 1]):g}"
    amp = " or with --amp off" if "--amp" in flags else ""
    assert code == 1 and re.fullmatch(
        re.escape(f"error: training stopped: {stop}; no checkpoint was written yet in {run_dir}; train again with a "
                  f"lower --lr (now {lr}){amp}").replace(r"\{n\}", r"\d"), err), err
    assert not [f for f in os.listdir(run_dir) if f.endswith(".pt")]
    assert read_history(str(run_dir))["status"].startswith(("stopped: loss became NaN", "failed: training stopped"))


def test_a_loss_that_is_not_finite_before_any_step_names_the_network_not_the_learning_rate(cifar10_dir, tmp_path,
                                                                                            capsys):
    data_dir, _ = cifar10_dir
    (tmp_path / "nan_net.py").write_text(NAN_NET)
    run_dir = tmp_path / "run"
    code = run.main(["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "1", "--batch-size", "32", "--arch",
                     f"{tmp_path / 'nan_net.py'}:NanNet", "--no-progress", "--no-amp", "--output-dir", str(run_dir)])
    assert code == 1
    assert capsys.readouterr().err == (
        "error: training stopped: the loss of the first batch is NaN or infinite, before any optimizer step, so the "
        "network's output (or its loss) is not finite whatever the learning rate; no checkpoint was written yet in "
        f"{run_dir}; check the network's forward pass\n")
    assert read_history(str(run_dir))["status"] == "stopped: loss became NaN or infinite at epoch 1, iteration 1"
