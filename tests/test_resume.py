"""Never lose a finished epoch: kill-and-resume, Ctrl-C/SIGTERM, corrupt checkpoints, full disks."""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from ignite.engine import Events

import run
from helpers import (EPOCHS, HANG_TIMEOUT, assert_same_as_reference, device_line, final_weights, read_history,
                     run_in_process, start_run, tensorboard_points, timeless, train_args, without_timings)



@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    ["kill-iteration:6",  # in the middle of epoch 2
     "kill-evaluation:3",  # during epoch 2's test pass
     "kill-checkpoint:2"],  # half-way through writing checkpoint_2.pt
)
def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(reference, tmp_path, fault, caplog):
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    killed = start_run(train_args(data_dir, run_dir), fault)
    assert killed.wait(HANG_TIMEOUT) == -9, killed.communicate()
    assert sorted(f for f in os.listdir(run_dir) if f.endswith(".pt")) == ["checkpoint_1.pt"]
    leftovers = [f for f in os.listdir(run_dir) if f.endswith(".tmp")]  # the half-written checkpoint
    assert leftovers == (["checkpoint_2.pt.tmp"] if fault.startswith("kill-checkpoint") else [])
    resumed = run_in_process([*train_args(data_dir, run_dir), "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert not [f for f in os.listdir(run_dir) if f.endswith(".tmp")]
    assert f"resuming from {run_dir / 'checkpoint_1.pt'}: 1 epoch done, at iteration 4)" in resumed.stdout
    assert "Epoch   1/3" not in resumed.stdout and "Epoch   2/3" in resumed.stdout
    assert not [record.getMessage() for record in caplog.records if record.name.startswith("tensorboard")]
    assert_same_as_reference(run_dir, reference_dir)


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_is_completed_by_its_resume(reference, tmp_path):
    """SIGKILL as the run completes, after its last checkpoint, before history.json says it completed: the resume
    trains nothing, records the end (status, final numbers, TensorBoard's) and the run equals the uninterrupted one."""
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    killed = start_run(train_args(data_dir, run_dir), "kill-completed:1")
    assert killed.wait(HANG_TIMEOUT) == -9, killed.communicate()
    assert read_history(str(run_dir))["status"] == "running" and read_history(str(run_dir))["final"] == {}
    resumed = run_in_process([*train_args(data_dir, run_dir), "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {run_dir / f'checkpoint_{EPOCHS}.pt'}: {EPOCHS} epochs done" in resumed.stdout
    assert "Epoch " not in resumed.stdout
    assert timeless(read_history(str(run_dir))["final"]) == timeless(read_history(str(reference_dir))["final"])
    hparams = {tag: points for tag, points in tensorboard_points(reference_dir).items() if tag.startswith("hparam/")}
    assert hparams and {tag: tensorboard_points(run_dir)[tag] for tag in hparams} == hparams  # the HPARAMS tab's
    assert_same_as_reference(run_dir, reference_dir)


@pytest.mark.slow
@pytest.mark.parametrize("fault, code", [("sigint:6", 130), ("sigterm:7", 143)])
def test_signal_writes_a_mid_epoch_checkpoint_and_resume_is_exact(reference, tmp_path, fault, code):
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    stopped = run_in_process(train_args(data_dir, run_dir), fault=fault)
    iteration = int(fault.split(":")[1])
    assert stopped.returncode == code, stopped.stderr
    assert stopped.stderr == (f"interrupted at epoch 2, iteration {iteration}; checkpoint written. "
                              f"Continue with: python run.py --resume {run_dir}\n")
    assert os.path.exists(run_dir / f"interrupted_{iteration}.pt")
    assert read_history(str(run_dir))["status"] == f"interrupted at epoch 2, iteration {iteration}"
    saved = torch.load(run_dir / f"interrupted_{iteration}.pt", weights_only=True)["history"]
    assert saved["partial_train_seconds"] > 0  # epoch 2's training time before the stop travels with the checkpoint
    # Exactly the command it printed: the recipe, the data folder and the precision come from the run's record.
    resumed = run_in_process(["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(device_line("fp32 (--no-amp)") + "\n")
    epoch_2 = read_history(str(run_dir))["epochs"][1]
    assert epoch_2["train_seconds"] > saved["partial_train_seconds"]  # the whole epoch, across the interruption
    assert epoch_2["images_per_s"] == pytest.approx(100 / epoch_2["train_seconds"])
    assert f"resuming from {run_dir / f'interrupted_{iteration}.pt'}: 1 epoch done, at iteration {iteration})" in resumed.stdout
    assert_same_as_reference(run_dir, reference_dir)
    assert not os.path.exists(run_dir / f"interrupted_{iteration}.pt")  # superseded by later epoch checkpoints


@pytest.mark.slow
def test_a_signal_in_an_epochs_last_iteration_stops_after_its_evaluation_and_at_the_last_the_run_completes(
        reference, tmp_path):
    """A SIGTERM in epoch 2's last iteration (8): the run stops once epoch 2 is evaluated and checkpointed, not before
    (its record would be lost), and the resume ends as the uninterrupted run. A SIGINT in the run's last iteration (12):
    the run is complete, recorded as such, and the process still says it was interrupted (exit 130)."""
    data_dir, reference_dir = reference
    stopped = run_in_process(train_args(data_dir, tmp_path / "run"), fault="sigterm:8")
    assert stopped.returncode == 143, stopped.stderr
    assert stopped.stderr.startswith("interrupted at epoch 2, iteration 8; checkpoint written.")
    history = read_history(str(tmp_path / "run"))
    assert len(history["epochs"]) == 2 and (tmp_path / "run" / "checkpoint_2.pt").exists()
    resumed = run_in_process(["--resume", str(tmp_path / "run")])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(tmp_path / "run", reference_dir)
    at_the_end = run_in_process(train_args(data_dir, tmp_path / "end"), fault="sigint:12")
    assert at_the_end.returncode == 130, at_the_end.stderr
    assert_same_as_reference(tmp_path / "end", reference_dir)  # status "completed" included


@pytest.mark.parametrize("signalled_on, stopped_at, epochs_ended", [
    ("ITERATION_COMPLETED", 4, [1]),  # epoch 1's last iteration: after its end-of-epoch handlers
    ("EPOCH_STARTED", 8, [1, 2]),  # epoch 3 starting, epoch 2's end already handled: at once, before it trains
    ("ITERATION_STARTED", 6, [1]),  # inside epoch 2: after that iteration
])
def test_a_signal_stops_after_the_iteration_it_came_in_unless_that_ends_an_epoch_not_yet_handled(signalled_on,
                                                                                                stopped_at,
                                                                                                epochs_ended):
    """GracefulStop on one process, on an engine of 4 iterations an epoch: where a SIGTERM lands decides where the
    run stops, and the saved state always follows a handled epoch end or lies inside an epoch."""
    import signal

    from ignite.engine import Engine, Events

    from handlers.interrupts import GracefulStop

    trainer, stop, ended, saved = Engine(lambda engine, batch: {"loss": torch.tensor(0.0)}), GracefulStop(), [], []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: ended.append(engine.state.epoch))
    when = {"ITERATION_COMPLETED": Events.ITERATION_COMPLETED(once=4), "EPOCH_STARTED": Events.EPOCH_STARTED(once=3),
            "ITERATION_STARTED": Events.ITERATION_STARTED(once=6)}[signalled_on]
    trainer.add_event_handler(when, lambda: signal.raise_signal(signal.SIGTERM))
    stop.attach(trainer, lambda engine: saved.append(engine.state.iteration))
    try:
        trainer.run(range(4), max_epochs=3)
    finally:
        stop.restore()
    assert (stop.signum, saved, ended) == (signal.SIGTERM, [stopped_at], epochs_ended)


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once_and_leaves_checkpoints_intact(reference, tmp_path):
    """Also where SIGINT was inherited ignored (a background launch: nohup, `cmd &` in a script): the second
    Ctrl-C must still end the run at once rather than restore 'ignored'."""
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    stopped = start_run(train_args(data_dir, run_dir), "sigint-twice:6", sigint_ignored=True)
    _, err = stopped.communicate()
    assert stopped.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert not [f for f in os.listdir(run_dir) if f.startswith("interrupted_")]
    torch.load(run_dir / "checkpoint_1.pt", weights_only=True)
    resumed = run_in_process([*train_args(data_dir, run_dir), "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(run_dir, reference_dir)


def copy_run(src, dst, upto_epoch):
    """A run directory as it was after `upto_epoch` epochs: its checkpoint, nothing later."""
    os.makedirs(dst)
    checkpoint = torch.load(os.path.join(src, f"checkpoint_{upto_epoch}.pt"), weights_only=True)
    torch.save(checkpoint, os.path.join(dst, f"checkpoint_{upto_epoch}.pt"))
    history = read_history(str(src))
    history["epochs"] = history["epochs"][:upto_epoch]
    history["config"]["output_dir"] = str(dst)
    (dst / "history.json").write_text(json.dumps(history))


# Paths opened for reading while a test watches (an audit hook cannot be removed: it records only while watched).
reads_watched = []


def _note_a_read(event, args):
    if reads_watched and event == "open" and isinstance(args[0], str) and args[1] in (None, "r", "rb"):
        reads_watched[-1].append(args[0])


sys.addaudithook(_note_a_read)


@pytest.mark.slow
def test_a_resume_reads_the_runs_history_at_most_twice(reference, tmp_path):
    """Once for the flags it recorded, once for every check before training (rebuilt first where it is lost); the
    writes that follow are not reads."""
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    copy_run(reference_dir, run_dir, 2)
    reads_watched.append([])
    try:
        resumed = run_in_process(["--resume", str(run_dir), "--no-progress"])
    finally:
        opened = reads_watched.pop()
    assert resumed.returncode == 0, resumed.stderr
    assert len([path for path in opened if path.endswith("history.json")]) == 2, opened


@pytest.mark.slow
def test_a_resumed_bonus_reads_its_interrupted_members_history_four_times(cifar10_dir, tmp_path):
    """Ctrl-C in the bonus's first run, then `--bonus --resume`: that run's history.json is opened for the flags the
    bonus recorded, for the plan's recipe check, once before it trains on (every decision about it comes from that
    read) and once for the report; the run that had not started is trained afresh and reported."""
    data_dir, _ = cifar10_dir
    bonus = tmp_path / "bonus"
    stopped = run_in_process(["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32",
                              "--no-progress", "--no-amp", "--bonus", "--train-eval", "40", "--output-dir", str(bonus)],
                             fault="sigint:6")  # epoch 2 of the single-stage run
    assert stopped.returncode == 130 and not (bonus / "multistage").exists(), stopped.stderr
    reads_watched.append([])
    try:
        resumed = run_in_process(["--bonus", "--resume", str(bonus), "--no-progress"])
    finally:
        opened = reads_watched.pop()
    assert resumed.returncode == 0, resumed.stderr
    assert opened.count(str(bonus / "singlestage" / "history.json")) == 4, opened
    assert read_history(str(bonus / "singlestage"))["status"] == "completed" and (bonus / "report.json").exists()


@pytest.mark.slow
def test_resume_extends_a_finished_run_with_more_epochs(reference, tmp_path, capsys):
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    copy_run(reference_dir, run_dir, 2)
    args = train_args(data_dir, run_dir)
    assert run.main(args + ["--resume", str(run_dir / "checkpoint_2.pt")]) == 0
    assert without_timings(read_history(str(run_dir))) == without_timings(read_history(str(reference_dir)))
    # Fewer epochs than it has trained: refused in one line, nothing trained or written.
    extended = (run_dir / "history.json").read_text()
    capsys.readouterr()
    fewer = list(args)
    fewer[fewer.index("--epochs") + 1] = "2"
    assert run.main(fewer + ["--resume", str(run_dir)]) == 1
    assert capsys.readouterr().err == f"error: cannot resume {run_dir}: it has trained {EPOCHS} epochs, more than --epochs 2\n"
    assert (run_dir / "history.json").read_text() == extended and not (run_dir / "run.lock").exists()


@pytest.mark.slow
def test_a_resume_notes_another_kernel_level_and_compares_an_older_record_on_what_it_holds(reference, tmp_path):
    """The level of oneDNN's kernels is part of the machine a run records: another one is noted as another CPU model
    is; a history written before it was recorded is compared on its model and threads alone."""
    from core.history_file import read_history as read_record
    from engine.devices import machine, machine_in_words
    from engine.resume import machine_change

    _, reference_dir = reference
    history = json.loads((reference_dir / "history.json").read_text())
    now = machine(torch.device("cpu"))
    assert {key: history[key] for key in now} == now and "onednn_isa" in now
    (tmp_path / "history.json").write_text(json.dumps(history))
    assert machine_change(read_record(str(tmp_path)), torch.device("cpu")) is None
    (tmp_path / "history.json").write_text(json.dumps({k: v for k, v in history.items() if k != "onednn_isa"}))
    assert machine_change(read_record(str(tmp_path)), torch.device("cpu")) is None
    (tmp_path / "history.json").write_text(json.dumps({**history, "onednn_isa": "sse41"}))
    assert machine_change(read_record(str(tmp_path)), torch.device("cpu")) == (
        f"note: {tmp_path} was trained on {now['device_model']}, sse41 kernels, {now['threads']} thread"
        f"{'s' if now['threads'] > 1 else ''}, and continues on {machine_in_words(now)}: its numbers will not repeat "
        "bit for bit")


@pytest.mark.slow
def test_resume_auto_picks_the_newest_matching_run(reference, tmp_path, capsys):
    data_dir, reference_dir = reference
    root = tmp_path / "runs"
    copy_run(reference_dir, root / "older", 2)
    copy_run(reference_dir, root / "newer", 2)
    other = json.loads((root / "older" / "history.json").read_text())
    os.utime(root / "older" / "history.json", (1, 1))
    other["config"]["lr"] = 0.5
    copy_run(reference_dir, root / "different", 2)
    (root / "different" / "history.json").write_text(json.dumps(other))
    shutil.copytree(reference_dir, root / "longer")  # the newest, but it trained more epochs than asked: skipped
    longer = json.loads((root / "longer" / "history.json").read_text())
    (root / "longer" / "history.json").write_text(json.dumps(dict(longer, epochs=longer["epochs"] + [
        dict(longer["epochs"][-1], epoch=EPOCHS + 1)])))
    newest = os.path.getmtime(root / "newer" / "history.json") + 10
    os.utime(root / "longer" / "history.json", (newest, newest))
    args = [a for a in train_args(data_dir, "x") if a not in ("--output-dir", "x")]
    assert run.main(args + ["--runs-root", str(root), "--resume", "auto"]) == 0
    assert f"Run directory: {root / 'newer'} (resuming from {root / 'newer' / 'checkpoint_2.pt'}: 2 epochs" in capsys.readouterr().out
    assert len(read_history(str(root / "newer"))["epochs"]) == EPOCHS
    assert len(read_history(str(root / "older"))["epochs"]) == 2
    assert len(read_history(str(root / "different"))["epochs"]) == 2
    assert len(read_history(str(root / "longer"))["epochs"]) == EPOCHS + 1


def test_resume_auto_without_a_matching_run(tmp_path, cifar10_dir, capsys):
    data_dir, _ = cifar10_dir
    assert run.main(["--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "10", "--runs-root", str(tmp_path),
                     "--resume", "auto"]) == 1
    assert "--resume auto: no run under" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_with_another_architecture_is_refused(reference, tmp_path, capsys):
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    copy_run(reference_dir, run_dir, 2)
    assert run.main(train_args(data_dir, run_dir) + ["--arch", "singlestage", "--resume", str(run_dir)]) == 1
    assert capsys.readouterr().err == f"error: cannot resume {run_dir}: 'arch' was 'multistage-narrow', now 'singlestage'\n"


@pytest.mark.slow
def test_checkpoint_of_another_run_is_refused_by_its_stored_configuration(reference, tmp_path, capsys):
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    copy_run(reference_dir, run_dir, 2)
    history = json.loads((run_dir / "history.json").read_text())
    history["config"]["seed"] = 4  # the run directory says seed 4, the checkpoint inside says seed 3
    (run_dir / "history.json").write_text(json.dumps(history))
    args = [a if a != "3" else "4" for a in train_args(data_dir, run_dir)]
    assert run.main(args + ["--resume", str(run_dir)]) == 1
    assert capsys.readouterr().err == "error: checkpoint belongs to a different run: 'seed' was 3, now 4\n"


@pytest.mark.slow
def test_truncated_checkpoint_is_a_clear_error(reference, tmp_path, capsys):
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    copy_run(reference_dir, run_dir, 2)
    path = run_dir / "checkpoint_2.pt"
    path.write_bytes(path.read_bytes()[:5000])
    assert run.main(train_args(data_dir, run_dir) + ["--resume", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read checkpoint {path}: it is truncated or corrupt (") and err.count("\n") == 1


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_kept_aside_and_the_run_goes_on_from_the_one_before(reference, tmp_path, capsys):
    """checkpoint_3.pt of a finished run cut short, checkpoint_2.pt intact: --evaluate re-tests epoch 2 and says why;
    --resume goes on from checkpoint_2.pt, keeps the damaged file as checkpoint_3.pt.damaged and ends bit for bit as
    the uninterrupted run."""
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    damaged = run_dir / "checkpoint_3.pt"
    damaged.write_bytes(damaged.read_bytes()[:5000])
    skipped = "note: skipped checkpoint_3.pt, which is truncated or corrupt ("
    capsys.readouterr()
    assert run.main(["--evaluate", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(skipped) and out[0].endswith("); going on from checkpoint_2.pt")
    assert out[1].startswith("Test accuracy ") and f"(epoch 2 of {run_dir})" in out[1]
    assert damaged.exists()  # a re-test renames nothing
    assert run.main(train_args(data_dir, run_dir) + ["--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert (f"{skipped}" in out and "); kept as checkpoint_3.pt.damaged; going on from checkpoint_2.pt\n" in out
            and f"resuming from {run_dir / 'checkpoint_2.pt'}" in out)
    assert (run_dir / "checkpoint_3.pt.damaged").read_bytes() == (reference_dir / "checkpoint_3.pt").read_bytes()[:5000]
    assert read_history(str(run_dir))["status"] == "completed"
    assert without_timings(read_history(str(run_dir))) == without_timings(read_history(str(reference_dir)))
    resumed, uninterrupted = final_weights(run_dir), final_weights(reference_dir)
    assert resumed.keys() == uninterrupted.keys() and all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    points = tensorboard_points(run_dir)
    assert points["train/loss_iter"] == tensorboard_points(reference_dir)["train/loss_iter"]  # epoch 3's redone
    # Epoch 3's epoch-level points (and the final HPARAMS metrics), written before its checkpoint was damaged, are
    # not kept beside the redone ones: every scalar as the uninterrupted run logged it, once per step.
    expected = tensorboard_points(reference_dir)
    assert {tag: [step for step, _ in values] for tag, values in points.items()} == {
        tag: [step for step, _ in values] for tag, values in expected.items()}
    untimed = lambda logged: {tag: values for tag, values in logged.items() if not tag.startswith("perf/")}  # noqa: E731
    assert untimed(points) == untimed(expected)


@pytest.mark.slow
def test_a_lost_history_is_rebuilt_from_the_newest_checkpoint_and_the_run_goes_on(reference, tmp_path, capsys):
    """history.json gone after epoch 2 (checkpoint_3.pt never written): `--resume DIR` alone takes the recipe, data
    folder and precision from checkpoint_2.pt, says so in one line, and ends bit for bit as the uninterrupted run."""
    data_dir, reference_dir = reference
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    os.remove(run_dir / "checkpoint_3.pt")
    os.remove(run_dir / "history.json")
    capsys.readouterr()
    assert run.main(["--resume", str(run_dir), "--no-progress"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"note: {run_dir / 'history.json'} was missing; rebuilt it from checkpoint_2.pt (2 epochs)\n" in out
    assert f"resuming from {run_dir / 'checkpoint_2.pt'}: 2 epochs done" in out
    assert read_history(str(run_dir))["status"] == "completed"
    assert without_timings(read_history(str(run_dir))) == without_timings(read_history(str(reference_dir)))
    resumed, uninterrupted = final_weights(run_dir), final_weights(reference_dir)
    assert resumed.keys() == uninterrupted.keys() and all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


@pytest.mark.slow
def test_an_unreadable_history_of_a_finished_run_is_rebuilt_whole_and_kept_aside(reference, tmp_path, capsys):
    """history.json of a finished run overwritten: the resume rebuilds it from checkpoint_3.pt, equal to what it was,
    keeps the unreadable file as history.json.damaged, and trains nothing."""
    _, reference_dir = reference
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    (run_dir / "history.json").write_text('{"config": {"arch"')
    capsys.readouterr()
    assert run.main(["--resume", str(run_dir), "--no-progress"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert (f"note: {run_dir / 'history.json'} was unreadable (cannot read {run_dir / 'history.json'}: " in out
            and "; rebuilt it from checkpoint_3.pt (3 epochs); the unreadable one is kept as history.json.damaged\n" in out)
    assert "Epoch " not in out
    assert read_history(str(run_dir)) == read_history(str(reference_dir))
    assert (run_dir / "history.json.damaged").read_text() == '{"config": {"arch"'


def test_resume_of_a_directory_without_checkpoints(tmp_path, cifar10_dir, capsys):
    data_dir, _ = cifar10_dir
    (tmp_path / "empty").mkdir()
    assert run.main(["--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "10", "--resume", str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().err == f"error: cannot resume: {tmp_path / 'empty'} holds no checkpoint (checkpoint_<epoch>.pt)\n"
    assert run.main(["--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "10", "--resume", str(tmp_path / "nope")]) == 1
    assert "is neither a run directory nor a checkpoint file" in capsys.readouterr().err


class FillsUp:
    """A file object for torch.save whose writes fail as on a full disk once `room` bytes are written: torch's zip
    writer then raises a RuntimeError ("unexpected pos ..."), with the OSError only in its context."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if self.room < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.slow
def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(reference, tmp_path, capsys,
                                                                                     monkeypatch):
    data_dir, _ = reference
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        return real_save(obj, FillsUp(f, 1000) if len(calls) == 2 else f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run_dir = tmp_path / "run"
    assert run.main(train_args(data_dir, run_dir)) == 1
    assert capsys.readouterr().err == (f"error: no space left on device while writing {run_dir / 'checkpoint_2.pt'}; "
                                       f"free space and resume with: python run.py --resume {run_dir}\n")
    monkeypatch.setattr(torch, "save", real_save)
    events = [f for f in os.listdir(run_dir) if f.startswith("events.out")]
    assert sorted(os.listdir(run_dir)) == sorted(["checkpoint_1.pt", "history.json", *events])  # no temp file, no lock file left
    assert torch.load(run_dir / "checkpoint_1.pt", weights_only=True)["trainer"]["iteration"] == 4


@pytest.fixture
def tiny_disk(tmp_path):
    """A 32 MiB tmpfs (the tests run as root here; elsewhere skipped)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.mark.slow
def test_a_really_full_disk_is_one_line_and_the_resume_after_freeing_it_is_exact(reference, tiny_disk, capsys,
                                                                                 monkeypatch):
    """The disk fills up once epoch 1 is saved: epoch 2's history.json is the first write that fails (it is written
    before the checkpoint)."""
    import engine.build

    data_dir, reference_dir = reference
    run_dir = tiny_disk / "run"
    filler = tiny_disk / "filler"
    build_run = engine.build.build_run

    def fill_after_epoch_1(recipe, setup, data):
        built = build_run(recipe, setup, data)

        @built.trainer.on(Events.ITERATION_STARTED(once=5))
        def fill(_engine):
            free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
            with open(filler, "wb") as f:
                f.write(b"\0" * free)

        return built

    monkeypatch.setattr(engine.build, "build_run", fill_after_epoch_1)
    assert run.main(train_args(data_dir, run_dir)) == 1
    assert capsys.readouterr().err == (f"error: no space left on device while writing {run_dir / 'history.json'}; free space "
                                       f"and resume with: python run.py --resume {run_dir}\n")
    monkeypatch.setattr(engine.build, "build_run", build_run)
    os.remove(filler)
    resumed = run_in_process(["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(run_dir, reference_dir)


@pytest.mark.slow
def test_compiled_run_saves_the_plain_module_and_resumes_without_compile(cifar10_dir, tmp_path, monkeypatch):
    data_dir, _ = cifar10_dir
    real_compile = torch.compile
    compiled = []

    def eager_compile(module, **kwargs):  # the structure of torch.compile, without minutes of CPU codegen
        compiled.append(module)
        return real_compile(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    run_dir = tmp_path / "run"
    args = ["--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "32", "--no-progress"]
    assert run.main([*args, "--epochs", "1", "--compile", "--output-dir", str(run_dir)]) == 0
    assert len(compiled) == 1
    state = torch.load(run_dir / "checkpoint_1.pt", weights_only=True)["model"]
    assert not any(key.startswith("_orig_mod.") for key in state)
    monkeypatch.setattr(torch, "compile", real_compile)
    assert run.main([*args, "--epochs", "2", "--resume", str(run_dir)]) == 0  # loads into an uncompiled model
    assert [e["epoch"] for e in read_history(str(run_dir))["epochs"]] == [1, 2]


def test_run_dir_of_a_checkpoint_is_its_folder_and_of_a_directory_itself(tmp_path, monkeypatch):
    """The one place that turns `--resume`/`--evaluate`'s RUN_DIR|CHECKPOINT into a run directory."""
    from engine.rundir import run_dir_of

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint_3.pt").write_bytes(b"")
    assert run_dir_of(str(run_dir / "checkpoint_3.pt")) == str(run_dir)
    assert run_dir_of(str(run_dir)) == str(run_dir)
    monkeypatch.chdir(run_dir)
    assert run_dir_of("checkpoint_3.pt") == "."  # a bare file name: this folder, never ""


def test_a_full_disk_in_a_comparison_names_the_command_that_continues_the_comparison(cifar10_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    data_dir, _ = cifar10_dir
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *args, **kwargs: real_save(obj, FillsUp(f, 1000), *args, **kwargs))
    directory = tmp_path / "compare"
    assert run.main(["--compare", "multistage-narrow", "multistage", "--dataset", "cifar10", "--data-dir", data_dir,
                     "--epochs", "1", "--batch-size", "50", "--no-progress", "--no-amp", "--output-dir", str(directory)]) == 1
    assert capsys.readouterr().err == (
        f"error: no space left on device while writing {directory / 'multistage-narrow' / 'checkpoint_1.pt'}; free "
        f"space and resume with: python run.py --compare multistage-narrow multistage --resume {directory}\n")
