"""The CUDA path, on a real GPU: `pytest -m cuda` (benchmarks/gpu_check.sh runs these). Skipped without CUDA.

What only a GPU can show: the precision `auto` picks for this GPU really in use, fp16 with loss scaling and TF32
for fp32, channels_last tensors, no host synchronisation inside the training loop between two looks at the loss,
`--deterministic` repeating bit for bit, an exact resume in bf16 and in fp16, and a real `torch.compile` run whose
checkpoints hold the plain module.
"""
import os

import pytest
import torch
from ignite.engine import Events

import engine.build
import run
from engine.precision import CUDA_TF32, resolve_precision
from helpers import read_history

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def gpu_run(data_dir, run_dir, *flags, epochs=2):
    return run.main(["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", str(epochs), "--batch-size", "32",
                     "--device", "cuda", "--no-progress", "--output-dir", str(run_dir), *flags])


def without_timings(history):
    return [{k: v for k, v in e.items() if "seconds" not in k and k != "images_per_s"} for e in history["epochs"]]


@pytest.fixture
def watched(monkeypatch):
    """Patch the build so that tests can look at the run the engine trains: conv output dtypes, layouts,
    and a hook point for per-iteration checks."""
    seen = {"conv_dtypes": set(), "input_channels_last": set(), "runs": []}
    build_run = engine.build.build_run

    def build_and_watch(recipe, setup, data):
        built = build_run(recipe, setup, data)
        seen["runs"].append(built)
        for module in built.model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.register_forward_hook(lambda _m, _i, out: seen["conv_dtypes"].add(out.dtype))
        built.trainer.add_event_handler(
            Events.ITERATION_STARTED,
            lambda e: seen["input_channels_last"].add(e.state.batch[0].is_contiguous(memory_format=torch.channels_last)))
        return built

    monkeypatch.setattr(engine.build, "build_run", build_and_watch)
    return seen


def test_default_is_autos_precision_channels_last_on_the_gpu(cifar10_dir, tmp_path, capsys, watched):
    data_dir, _ = cifar10_dir
    expected = resolve_precision("auto", torch.device("cuda"))  # bf16 from compute capability 8.0, fp16 on 7.x
    assert gpu_run(data_dir, tmp_path / "run") == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"Device: cuda ({torch.cuda.get_device_name()}, ") and first.endswith(expected.describe())
    assert watched["conv_dtypes"] == {expected.dtype or torch.float32}
    assert watched["input_channels_last"] == {True}
    model = watched["runs"][0].model
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    history = read_history(str(tmp_path / "run"))
    assert (history["device"], history["amp_dtype"]) == ("cuda", expected.dtype_name)
    assert history["device_model"] == torch.cuda.get_device_name()
    assert isinstance(history["epochs"][-1]["train_loss"], float)


def test_fp16_scales_the_loss_and_records_its_skipped_steps(cifar10_dir, tmp_path, watched):
    data_dir, _ = cifar10_dir
    assert gpu_run(data_dir, tmp_path / "run", "--amp", "fp16") == 0
    assert watched["conv_dtypes"] == {torch.float16}
    assert watched["runs"][0].loss_scaling is not None
    history = read_history(str(tmp_path / "run"))
    assert history["amp_dtype"] == "float16" and history["status"] == "completed"
    skipped = [e["skipped_steps"] for e in history["epochs"]]
    assert history["epochs"][-1]["loss_scale"] == 2.0**16 * 0.5 ** sum(skipped)  # no growth within 2,000 steps


def test_fp32_uses_tf32_from_compute_capability_8_on(cifar10_dir, tmp_path, capsys, watched):
    data_dir, _ = cifar10_dir
    tf32 = torch.cuda.get_device_capability() >= CUDA_TF32
    assert gpu_run(data_dir, tmp_path / "run", "--no-amp", epochs=1) == 0
    assert watched["conv_dtypes"] == {torch.float32}
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32)
    assert read_history(str(tmp_path / "run"))["tf32"] is tf32
    assert ("with TF32" in capsys.readouterr().out.splitlines()[0]) is tf32


def test_no_host_sync_inside_the_training_loop_between_looks_at_the_loss(cifar10_dir, tmp_path, monkeypatch):
    """torch.cuda.set_sync_debug_mode("error") while a batch is fetched and trained on, except in iterations that
    look at the loss on purpose (every `log_every`) and the first batch of an epoch (its permutation)."""
    data_dir, _ = cifar10_dir
    guarded = []
    build_run = engine.build.build_run

    def build_with_guard(recipe, setup, data):
        built = build_run(recipe, setup, data)
        epoch_length = len(built.train_batches)

        def guard_on(trainer):
            upcoming = trainer.state.iteration + 1
            if upcoming % built.log_every and (upcoming - 1) % epoch_length:
                torch.cuda.set_sync_debug_mode("error")
                guarded.append(upcoming)

        # GET_BATCH_STARTED comes before the batch is drawn; the guard ends after the per-iteration handlers
        # registered before it (the epoch-loss accumulator among them) have run.
        built.trainer.add_event_handler(Events.GET_BATCH_STARTED, guard_on)
        built.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda: torch.cuda.set_sync_debug_mode("default"))
        return built

    monkeypatch.setattr(engine.build, "build_run", build_with_guard)
    try:
        # bf16: fp16's GradScaler checks the gradients for infs on the host before every optimizer step.
        assert gpu_run(data_dir, tmp_path / "run", "--batch-size", "8", "--amp", "bf16") == 0
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(guarded) > 10  # 13 batches per epoch, 2 epochs: most iterations were guarded


def test_deterministic_runs_repeat_bit_for_bit(cifar10_dir, tmp_path):
    data_dir, _ = cifar10_dir
    for name in ("a", "b"):
        assert gpu_run(data_dir, tmp_path / name, "--deterministic", "--augment", "--seed", "5") == 0
    assert without_timings(read_history(str(tmp_path / "a"))) == without_timings(read_history(str(tmp_path / "b")))
    weights = [torch.load(tmp_path / name / "checkpoint_2.pt", weights_only=True)["model"] for name in ("a", "b")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_resume_is_exact_with_deterministic_kernels(cifar10_dir, tmp_path, precision):
    data_dir, _ = cifar10_dir
    assert gpu_run(data_dir, tmp_path / "whole", "--deterministic", "--amp", precision, epochs=3) == 0
    assert gpu_run(data_dir, tmp_path / "part", "--deterministic", "--amp", precision, epochs=1) == 0
    assert run.main(["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "3", "--batch-size", "32",
                     "--device", "cuda", "--deterministic", "--no-progress", "--resume", str(tmp_path / "part")]) == 0
    assert without_timings(read_history(str(tmp_path / "part"))) == without_timings(read_history(str(tmp_path / "whole")))
    resumed, whole = (torch.load(tmp_path / name / "checkpoint_3.pt", weights_only=True)["model"] for name in ("part", "whole"))
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)


def test_compiled_run_saves_the_plain_module(cifar10_dir, tmp_path):
    data_dir, _ = cifar10_dir
    assert gpu_run(data_dir, tmp_path / "run", "--compile", epochs=1) == 0
    state = torch.load(os.path.join(tmp_path, "run", "checkpoint_1.pt"), weights_only=True)["model"]
    assert state and not any(key.startswith("_orig_mod.") for key in state)
    assert gpu_run(data_dir, tmp_path / "run", "--resume", str(tmp_path / "run"), epochs=2) == 0  # eager resume
