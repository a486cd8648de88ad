"""fp16 autocast with loss scaling, really run on the CPU (tiny: fp16 autocast is very slow on CPUs): what it trains
and records, an exact resume, skipped steps that do not stop a run, a collapsing scale that does, and a resume that
keeps or refuses a precision.

100 training images at batch 50: 2 iterations per epoch. No growth of the scale within so few steps, so the scale
after an epoch is the initial one halved once per skipped step: an arithmetic check of the recorded counts. The
initial scale 2^20 overflows the first steps on these images and not the later ones, so that both kinds of step
happen in a few iterations.
"""
import json
import os

import pytest
import torch

import engine.build
import handlers.loss_scaling
import engine.command
import run
from engine.devices import machine, machine_in_words
from engine.precision import resolve_precision
from helpers import device_line, read_history, record_dtypes, run_in_process, tensorboard_points, without_timings
from models import build_model
from fault_injection import with_fault

INITIAL = 2.0**20
ARCH = "multistage-narrow"  # the multi-stage net at half width: a quarter of the work


def fp16_args(data_dir, run_dir, epochs=2):
    return ["--dataset", "cifar10", "--data-dir", data_dir, "--arch", ARCH, "--epochs", str(epochs), "--batch-size",
            "50", "--no-progress", "--amp", "fp16", "--output-dir", str(run_dir)]


def train_fp16(data_dir, run_dir, epochs=2):
    return run.main(fp16_args(data_dir, run_dir, epochs))


@pytest.fixture(scope="module")
def fp16_run(tmp_path_factory):
    """An uninterrupted 2-epoch fp16 run: (data_dir, run_dir, its console lines, dtypes seen)."""
    from synthetic_cifar import write_cifar10

    root = tmp_path_factory.mktemp("fp16")
    write_cifar10(str(root / "data"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(handlers.loss_scaling, "INITIAL_SCALE", INITIAL)
        seen = record_dtypes(monkeypatch)
        result = run_in_process(fp16_args(str(root / "data"), root / "run"))
    assert result.returncode == 0, result.stderr
    return str(root / "data"), root / "run", result, seen


@pytest.mark.slow
def test_fp16_trains_with_loss_scaling_and_records_it(fp16_run):
    _, run_dir, result, seen = fp16_run
    assert result.stdout.splitlines()[0] == device_line("fp16 autocast with loss scaling (--amp fp16: forced on a CPU)")
    assert result.stderr.count("warning: --amp fp16 forces fp16 autocast") == 1
    assert seen == {"conv": {torch.float16}, "sample_losses": {torch.float32}}
    history = read_history(str(run_dir))
    assert (history["amp"], history["amp_dtype"], history["config"]["amp"]) == (True, "float16", "fp16")
    assert [sorted(set(e) & {"skipped_steps", "loss_scale"}) for e in history["epochs"]] == [["loss_scale", "skipped_steps"]] * 2
    skipped = [e["skipped_steps"] for e in history["epochs"]]
    assert all(isinstance(n, int) and 0 <= n <= 2 for n in skipped) and sum(skipped) > 0
    assert [e["loss_scale"] for e in history["epochs"]] == [INITIAL * 0.5 ** sum(skipped[:k]) for k in (1, 2)]
    assert all(isinstance(e["train_loss"], float) for e in history["epochs"])
    checkpoint = torch.load(run_dir / "checkpoint_2.pt", weights_only=True)
    assert checkpoint["loss_scaling"]["scaler"]["scale"] == history["epochs"][-1]["loss_scale"]
    points = tensorboard_points(run_dir)
    assert points["train/skipped_steps"] == [(1, skipped[0]), (2, skipped[1])]


@pytest.mark.slow
def test_fp16_run_stopped_mid_epoch_resumes_bit_for_bit_in_fp16(fp16_run, tmp_path, monkeypatch):
    data_dir, reference, _, _ = fp16_run
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patched:
        patched.setattr(handlers.loss_scaling, "INITIAL_SCALE", INITIAL)
        patched.setattr(engine.build, "build_run", with_fault(engine.build.build_run, "sigint", 3))  # mid-epoch 2
        stopped = run_in_process(fp16_args(data_dir, run_dir))
    assert stopped.returncode == 130, stopped.stderr
    assert os.path.exists(run_dir / "interrupted_3.pt")
    # Recorded as trained elsewhere: the resume says so, and continues.
    history = json.loads((run_dir / "history.json").read_text())
    history["device_model"], history["onednn_isa"], history["threads"] = "Another CPU", "sse41", 64
    (run_dir / "history.json").write_text(json.dumps(history))
    resumed = run_in_process(["--resume", str(run_dir)])  # no --amp: the run's own precision; the scale: its checkpoint's
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.splitlines()
    assert lines[0] == device_line("fp16 autocast with loss scaling (--amp fp16: forced on a CPU)")
    assert lines[1] == (f"note: {run_dir} was trained on Another CPU, sse41 kernels, 64 threads, and continues on "
                        f"{machine_in_words(machine(torch.device('cpu')))}: its numbers will not repeat bit for bit")
    assert without_timings(read_history(str(run_dir))) == without_timings(read_history(str(reference)))
    ours, theirs = (torch.load(d / "checkpoint_2.pt", weights_only=True) for d in (run_dir, reference))
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in theirs["model"])
    assert ours["loss_scaling"] == theirs["loss_scaling"]


@pytest.mark.slow
def test_overflowing_steps_are_skipped_and_do_not_stop_the_run(cifar10_dir, tmp_path, monkeypatch):
    """A scale so large that every fp16 gradient overflows: each step is skipped (the weights stay as initialised),
    the scale halves each time, and the run completes: a skipped step is no NaN stop."""
    data_dir, _ = cifar10_dir
    monkeypatch.setattr(handlers.loss_scaling, "INITIAL_SCALE", 2.0**40)
    assert train_fp16(data_dir, tmp_path / "run", epochs=1) == 0
    history = read_history(str(tmp_path / "run"))
    assert history["status"] == "completed"
    assert [(e["skipped_steps"], e["loss_scale"]) for e in history["epochs"]] == [(2, 2.0**38)]
    torch.manual_seed(0)  # the run's seed, before its model is built
    initial = build_model(ARCH, 10).state_dict()
    trained = torch.load(tmp_path / "run" / "checkpoint_1.pt", weights_only=True)["model"]
    parameters = dict(build_model(ARCH, 10).named_parameters())
    assert all(torch.equal(trained[name], initial[name]) for name in parameters)


@pytest.mark.slow
@pytest.mark.parametrize("from_epoch, saved", [
    (2, "the last good checkpoint is checkpoint_1.pt (epoch 1) in {run_dir}"),
    (1, "no checkpoint was written yet in {run_dir}"),
])
def test_a_collapsing_scale_stops_the_run_and_keeps_its_last_checkpoint(cifar10_dir, tmp_path, capsys, monkeypatch,
                                                                        from_epoch, saved):
    """From epoch 2 (or 1) on every gradient is made infinite: every step is skipped, the scale falls below 2^-10 and
    stays there for the whole epoch, and the run stops with one line, before that epoch is recorded or saved, naming
    what is saved."""
    data_dir, _ = cifar10_dir
    monkeypatch.setattr(handlers.loss_scaling, "INITIAL_SCALE", 2.0**-10)
    build_run = engine.build.build_run

    def with_infinite_gradients(recipe, setup, data):
        built = build_run(recipe, setup, data)
        weight = built.model.stem[0].weight
        weight.register_hook(lambda grad: grad * float("inf") if built.trainer.state.epoch >= from_epoch else grad)
        return built

    monkeypatch.setattr(engine.build, "build_run", with_infinite_gradients)
    run_dir = tmp_path / "run"
    assert train_fp16(data_dir, run_dir) == 1
    err = capsys.readouterr().err.splitlines()
    message = (f"training stopped at epoch {from_epoch}: fp16 loss scaling collapsed (the scale stayed below 2^-10 after "
               "every step of the epoch, so nearly every step overflowed fp16 and was skipped); train with --amp bf16 "
               f"or --amp off instead; {saved.format(run_dir=run_dir)}")
    assert err[-1] == f"error: {message}"
    assert sorted(f for f in os.listdir(run_dir) if f.endswith(".pt")) == ["checkpoint_1.pt"][:from_epoch - 1]
    history = read_history(str(run_dir))
    assert history["status"] == f"failed: {message}" and [e["epoch"] for e in history["epochs"]] == [1][:from_epoch - 1]


@pytest.mark.slow
def test_a_resume_keeps_the_recorded_precision_and_refuses_another(cifar10_dir, tmp_path, capsys):
    data_dir, _ = cifar10_dir
    run_dir = tmp_path / "run"
    common = ["--dataset", "cifar10", "--data-dir", data_dir, "--arch", ARCH, "--batch-size", "50", "--no-progress"]
    assert run.main([*common, "--epochs", "1", "--amp", "bf16", "--output-dir", str(run_dir)]) == 0
    before = {name: (run_dir / name).stat().st_mtime_ns for name in os.listdir(run_dir)}
    capsys.readouterr()
    assert run.main([*common, "--epochs", "2", "--amp", "fp16", "--resume", str(run_dir)]) == 1
    assert capsys.readouterr().err == (f"error: cannot resume {run_dir}: it was trained in bf16 autocast, now fp16 "
                                       "autocast with loss scaling (--amp fp16); resume without --amp to continue in "
                                       "bf16 autocast\n")
    assert {name: (run_dir / name).stat().st_mtime_ns for name in os.listdir(run_dir)} == before  # nothing written
    # Without --amp, the resume runs in the recorded precision (test_fp16_run_stopped_... trains such a resume).
    _, setup = run.configs_from_args(engine.command.build_parser().parse_args(["--resume", str(run_dir), "--epochs", "2"]))
    assert resolve_precision(setup.amp, torch.device("cpu")).dtype == torch.bfloat16
