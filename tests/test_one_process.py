"""What one process carries from one run to the next: nothing that changes a trained number.

Trained numbers depend on the kernels oneDNN picked and on the thread count, both fixed once per process; the tests
compare runs in this worker with runs in fresh interpreters, so both must be what the environment says.
"""
import os
import subprocess
import sys

import pytest
import torch

from helpers import HANG_TIMEOUT, REPO, assert_same_as_reference, run_in_process, train_args

# A few steps of a small convolutional net: its weights differ in their last bits between oneDNN's kernel sets.
TINY_TRAINING = """
import torch

def tiny_training():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1),
                              torch.nn.Flatten(), torch.nn.Linear(16 * 16 * 16, 10))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    images, labels = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()
    return net.state_dict()
"""


def tiny_training_elsewhere(path, **environment):
    """The tiny training in a fresh interpreter with this environment (plus `environment`), saved to `path`."""
    script = TINY_TRAINING + f"\ntorch.save(tiny_training(), {str(path)!r})\n"
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, **environment})


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_this_worker_runs_the_kernels_its_environment_names(tmp_path):
    """A worker whose kernel set differs from its subprocesses' would fail every comparison of a run trained here with
    one trained there, in the last digits: the same tiny training must end bit for bit equal in both."""
    # The control runs another kernel set than the environment's, whatever cap that is (SSE41 and AVX differ too).
    other = "SSE41" if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX" else "AVX"
    launched = [tiny_training_elsewhere(tmp_path / "same.pt"),
                tiny_training_elsewhere(tmp_path / "other.pt", ONEDNN_MAX_CPU_ISA=other)]
    assert [process.wait(timeout=HANG_TIMEOUT) for process in launched] == [0, 0]
    namespace = {}
    exec(TINY_TRAINING, namespace)
    here = namespace["tiny_training"]()
    assert same_weights(here, torch.load(tmp_path / "same.pt", weights_only=True))
    # Another kernel set shows in the weights, or the comparison above proves nothing.
    assert not same_weights(here, torch.load(tmp_path / "other.pt", weights_only=True))


@pytest.mark.slow
def test_a_run_after_other_kinds_of_runs_equals_it_alone_and_so_does_a_study_member(reference, tmp_path, monkeypatch):
    """Forced fp16 and bf16, --deterministic, --compile and an --evaluate first, all in this process; then the
    reference run, and a study holding it as one seed: each equals the reference trained alone in a fresh process,
    bit for bit. The compiled run goes through dynamo and AOTAutograd but not inductor's C++ code generation, which
    takes from seconds to a minute on a loaded 2-core machine."""
    data_dir, reference_dir = reference
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: compile_(module, **{**kwargs, "backend": "aot_eager"}))
    one_epoch = [*train_args(data_dir, tmp_path / "unused")[:-2], "--epochs", "1"]
    for name, flags in {"fp16": ["--amp", "fp16"], "bf16": ["--amp", "bf16"], "deterministic": ["--deterministic"],
                        "compiled": ["--compile"]}.items():
        other = run_in_process([*(flag for flag in one_epoch if flag != "--no-amp"), *flags,
                                "--output-dir", str(tmp_path / name)])
        assert other.returncode == 0, (name, other.stderr)
    evaluated = run_in_process(["--evaluate", str(tmp_path / "fp16"), "--no-progress"])
    assert evaluated.returncode == 0, evaluated.stderr

    after_others = run_in_process(train_args(data_dir, tmp_path / "after"))
    assert after_others.returncode == 0, after_others.stderr
    assert_same_as_reference(tmp_path / "after", reference_dir)

    args = train_args(data_dir, tmp_path / "study")
    seed = args.index("--seed")
    study = run_in_process([*args[:seed], "--seeds", "2", args[seed + 1], *args[seed + 2:]])
    assert study.returncode == 0, study.stderr
    assert_same_as_reference(tmp_path / "study" / f"seed{args[seed + 1]}", reference_dir)
