"""Helpers shared by test modules: running run.py (in this process or another), reading what a run wrote, patching the
engines, and reference formulas."""
import contextlib
import io
import json
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import types

import torch
from ignite.engine import Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import engine.build
import run
from engine.devices import machine, machine_in_words
from models import build_model


def device_line(precision: str, device: str = "cpu") -> str:
    """The first line of a run on `device` in this process's thread count (a subprocess of a test inherits it through
    OMP_NUM_THREADS), e.g. device_line("fp32 (--no-amp)")."""
    return f"Device: {device} ({machine_in_words(machine(torch.device(device)))}), {precision}"


# Only a hang should hit a subprocess timeout: a loaded 2-core machine runs these tiny runs several times slower.
HANG_TIMEOUT = 900
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 100 training images, batch 32: 4 iterations per epoch; 40 test images: 2 evaluation batches per epoch.
EPOCHS = 3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def learning_rate(schedule: str, peak: float, i: int, warmup: int, total: int) -> float:
    """The rate of iteration i (from 0) by the formulas of handlers/lr_schedule.py's docstring."""
    if i < warmup:
        return peak * i / warmup
    if schedule == "onecycle":
        return peak * (total - i) / (total - warmup)
    if schedule == "cosine":
        return peak * (1 + math.cos(math.pi * (i - warmup) / (total - warmup + 1))) / 2
    return peak


def record_dtypes(monkeypatch):
    """Patch the model build so that the dtypes of every convolution's output and of the trainer's losses
    are recorded while the engines run."""
    seen = {"conv": set(), "sample_losses": set()}
    build_run = engine.build.build_run

    def build_and_watch(recipe, setup, data):
        built = build_run(recipe, setup, data)
        for module in built.model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.register_forward_hook(lambda _m, _i, out: seen["conv"].add(out.dtype))
        built.trainer.add_event_handler(
            Events.ITERATION_COMPLETED,
            lambda e: seen["sample_losses"].add(e.state.output["sample_losses"].dtype))
        return built

    monkeypatch.setattr(engine.build, "build_run", build_and_watch)
    return seen


def train_args(data_dir, run_dir):
    """The runs these tests interrupt and resume: the multi-stage net at half width (what is resumed does not depend
    on the net, and it trains in a quarter of the time)."""
    return ["--dataset", "cifar10", "--data-dir", data_dir, "--arch", "multistage-narrow", "--epochs", str(EPOCHS),
            "--batch-size", "32", "--augment", "--seed", "3", "--no-progress", "--no-amp", "--output-dir", str(run_dir)]


def run_cli(args):
    """`python run.py ARGS` in a new interpreter: a subprocess's result."""
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=HANG_TIMEOUT)


class Started:
    """A run.py started by `start_run`, used as a subprocess.Popen is: pid, poll, wait, kill, send_signal, returncode
    (an exit code, or minus the signal that ended it), communicate (stdout and stderr once it has ended)."""

    def __init__(self, process, folder):
        self.process, self.folder, self.pid = process, folder, process.pid

    @property
    def returncode(self):
        return self.process.exitcode

    def poll(self):
        return self.process.exitcode

    def wait(self, timeout=None):
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"run.py in process {self.pid}", timeout)
        return self.process.exitcode

    def kill(self):
        self.process.kill()

    def send_signal(self, signum):
        os.kill(self.pid, signum)

    def communicate(self, timeout=HANG_TIMEOUT):
        self.wait(timeout)
        said = []
        for name in ("stdout", "stderr"):
            with open(os.path.join(self.folder.name, name)) as f:
                said.append(f.read())
        self.folder.cleanup()
        return tuple(said)


def start_run(args, fault=None, env=None, sigint_ignored=False):
    """run.py ARGS in a process of its own, started now (with tests/fault_injection.py's `fault`, if given; `env`:
    variables set in it; `sigint_ignored`: SIGINT ignored as it starts, as a launch in the background inherits it).
    It is forked from a server process that has imported run.py already (multiprocessing's
    forkserver): what a SIGKILL, a lock held by another process or launches side by side need is another process, not
    another interpreter's start, 2 to 3 s of imports (`python run.py` itself is tests/test_cli.py's). Returns a
    Started."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["run"])  # torch, ignite and the package, imported once by the server
    folder = tempfile.TemporaryDirectory(prefix="run-")
    for name in ("stdout", "stderr"):
        open(os.path.join(folder.name, name), "w").close()
    # daemon: one a failed test leaves behind is ended as the worker exits, not waited for
    process = context.Process(target=_forked_run, daemon=True,
                              args=(args, fault, {**os.environ, **(env or {})}, folder.name, sigint_ignored))
    process.start()
    return Started(process, folder)


def _forked_run(args, fault, env, folder, sigint_ignored):
    """What a process of start_run does: run.py's environment, folder, output files and SIGINT disposition, then
    run.py (through tests/fault_injection.py with a `fault`)."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(REPO)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(os.path.join(folder, name), os.O_WRONLY), fd)
    if sigint_ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if "OMP_NUM_THREADS" in env:  # OpenMP read the server's at its start
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = ["tests/fault_injection.py", fault, "--", *args] if fault else ["run.py", *args]  # argparse's prog
    if fault:
        import fault_injection

        fault_injection.main()  # runs run.py with the fault and exits with its code
    sys.exit(run.main(args))


def run_in_process(args, threads=None, fault=None):
    """run.py in this process (saves an interpreter start per run): an object like subprocess's result.
    `threads`: torch's thread count for this call, e.g. 1 as each process of the tests' torchrun jobs has; `fault`:
    a signal sent at an iteration, "sigint:N" or "sigterm:N" (tests/fault_injection.py; a SIGKILL needs a process
    of its own: start_run)."""
    from fault_injection import with_fault

    out, err = io.StringIO(), io.StringIO()
    before, build_run = torch.get_num_threads(), engine.build.build_run
    try:
        torch.set_num_threads(threads or before)
        if fault:
            point, n = fault.split(":")
            engine.build.build_run = with_fault(build_run, point, int(n))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run.main(args)
    finally:
        torch.set_num_threads(before)
        engine.build.build_run = build_run
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def torchrun(*args, dump=None, probe=None):
    """run.py under torchrun with 2 CPU processes of one thread each; `dump`: through tests/sample_dump.py; `probe`:
    (log_every, dump folder, "RANK:ITERATION[:KILL|:OOM]" or None) through tests/distributed_probe.py."""
    script = ["tests/sample_dump.py", str(dump), "--"] if dump else ["run.py"]
    if probe:
        every, folder, signal_at = probe
        script = ["tests/distributed_probe.py", str(every), str(folder), *([signal_at] if signal_at else []), "--"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *script, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=HANG_TIMEOUT, env=env)


def timeless(value, also=()):
    """A history, report or study (any JSON value) without what differs between equal runs: times, speeds, paths,
    and the keys named in `also`."""
    if isinstance(value, dict):
        return {k: timeless(v, also) for k, v in value.items()
                if "seconds" not in k and k not in ("images_per_s", "run_dir", "output_dir", *also)}
    return [timeless(v, also) for v in value] if isinstance(value, list) else value


def without_timings(history):
    """A history's epoch records without their timings."""
    return timeless(history["epochs"])


def tensorboard_points(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def text_entries(run_dir):
    """Every entry of TensorBoard's TEXT tab in a run's folder, over all its event files: sorted (tag, step, text)."""
    from handlers.tensorboard_logging import is_event_file, text_entries as entries_of

    return sorted(entry for name in os.listdir(run_dir) if is_event_file(name)
                  for entry in entries_of(os.path.join(run_dir, name)))


def final_weights(run_dir):
    return torch.load(os.path.join(run_dir, f"checkpoint_{EPOCHS}.pt"), weights_only=True)["model"]


def assert_same_as_reference(run_dir, reference_dir):
    assert read_history(str(run_dir))["status"] == "completed"
    assert without_timings(read_history(str(run_dir))) == without_timings(read_history(str(reference_dir)))
    resumed, uninterrupted = final_weights(run_dir), final_weights(reference_dir)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    points, expected = tensorboard_points(run_dir), tensorboard_points(reference_dir)
    assert [step for step, _ in points["train/loss_iter"]] == list(range(1, 4 * EPOCHS + 1))  # no repeats, no gaps
    assert points["train/loss_epoch"] == expected["train/loss_epoch"]
    assert [step for step, _ in points["test/accuracy"]] == list(range(1, EPOCHS + 1))
    assert points["train/loss_iter"] == expected["train/loss_iter"]


def cli(*args):
    # fp32 pinned: these tests compare with fp32 computations, whatever `--amp auto` picks on this CPU.
    return run.main([*args, "--no-progress", "--no-amp"])


def runs_of(report):
    """Each net's run of a one-seed report (report.json, or study.json of one seed), by net."""
    assert len(report["seeds"]) == 1, report["seeds"]
    return {arch: net["runs"][0] for arch, net in report["nets"].items()}


def read_history(run_dir):
    with open(os.path.join(run_dir, "history.json")) as f:
        return json.load(f)


def independent_eval(run_dir, arch, written, num_classes, epoch):
    """Accuracy and mean loss of the saved checkpoint, with normalisation and forward pass done here."""
    checkpoint = torch.load(os.path.join(run_dir, f"checkpoint_{epoch}.pt"), weights_only=True)
    model = build_model(arch, num_classes)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    train = written["train_x"].reshape(-1, 3, 1024) / 255.0
    mean, std = train.mean(axis=(0, 2)), train.std(axis=(0, 2))
    test = (written["test_x"].reshape(-1, 3, 32, 32) / 255.0 - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        logits = model(torch.from_numpy(test).float())
    labels = torch.from_numpy(written["test_y"])
    predictions = logits.argmax(1).numpy()
    return predictions, float(torch.nn.functional.cross_entropy(logits, labels))


def hit_train_step(monkeypatch, iteration, hit):
    """Make the trainer's step pass its output through `hit(output)` at one iteration (`hit` may raise)."""
    create_trainer = engine.build.create_trainer

    def trainer_with_a_hit(*args, **kwargs):
        trainer = create_trainer(*args, **kwargs)
        step = trainer._process_function

        def train_step(engine_, batch):
            output = step(engine_, batch)
            return hit(output) if engine_.state.iteration == iteration else output

        trainer._process_function = train_step
        return trainer

    monkeypatch.setattr(engine.build, "create_trainer", trainer_with_a_hit)


# A user's network (a file spec) whose logits are NaN in training from the first batch: it passes the one-image check.
NAN_NET = '''
import torch
from torch import nn


class NanNet(nn.Module):
    """a net whose logits turn NaN in training"""

    def __init__(self, num_classes):
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    def forward(self, x):
        out = self.head(x)
        return out * float("nan") if self.training and x.shape[0] > 1 else out
'''
