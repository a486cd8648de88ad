"""The throughput benchmark runs (quick mode) and reports every field, consistently.

Nothing here depends on how fast this machine is or how its kernels compare (a network may well beat a
matmul): only presence, positivity and arithmetic consistency are asserted.
"""
import contextlib
import io
import json
import os
import sys

import pytest

from helpers import device_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = ("ours", "plain", "tutorial")


@pytest.fixture(scope="module")
def quick_benchmark(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "throughput.json"
    # Both precisions, forced, so that the bf16 axis is exercised on CPUs without native bf16 too; one
    # architecture keeps it short (the single-stage net's FLOP count is checked in-process below).
    # Its main() runs in the test process (one interpreter start fewer); the file must hold what it returned.
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from throughput import main as throughput

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        returned = throughput(["--quick", "--arch", "multistage", "--precisions", "fp32", "bf16", "--json", str(out)])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    return results, printed.getvalue()


@pytest.mark.slow
def test_machine_facts_and_peaks_are_consistent(quick_benchmark):
    results, stdout = quick_benchmark
    machine = results["machine"]
    assert machine["cpu_model"] and machine["threads"] >= 1
    assert isinstance(machine["isa_flags"], list) and isinstance(machine["native_bf16"], list)
    for precision in ("fp32", "bf16"):
        kernels = machine["dense_kernels"][precision]
        measured = [rate for when in ("before_gflops", "after_gflops") for rate in kernels[when].values()]
        assert set(kernels["before_gflops"]) == {"matmul", "conv3x3_channels_last"}
        assert all(rate > 0 for rate in measured)
        assert kernels["peak_gflops"] == max(measured)  # the peak is the best kernel, not one chosen in advance
        best = kernels["best_kernel"]
        assert kernels["peak_gflops"] == max(kernels["before_gflops"][best], kernels["after_gflops"][best])
        assert f"{precision} peak {kernels['peak_gflops']:.0f} GFLOP/s" in stdout
    assert machine["cpu_model"] in stdout


@pytest.mark.slow
def test_every_pipeline_in_every_precision_is_timed_and_utilisation_is_consistent(quick_benchmark):
    results, stdout = quick_benchmark
    assert results["setup"]["train_images"] == 64 and results["setup"]["timed_epochs"] == 1
    assert results["setup"]["precisions"] == ["fp32", "bf16"]
    assert list(results["archs"]) == ["multistage"]
    row = results["archs"]["multistage"]
    assert row["train_gflops_per_image"] > 0
    for precision in ("fp32", "bf16"):
        peak = results["machine"]["dense_kernels"][precision]["peak_gflops"]
        cell = row[precision]
        assert ("tutorial" in cell) == (precision == "fp32")  # the course's loop is timed as it is: fp32
        for pipeline in [p for p in PIPELINES if p in cell]:
            numbers = cell[pipeline]
            assert len(numbers["epoch_seconds"]) == 1 and numbers["median_epoch_seconds"] > 0
            assert numbers["images_per_s"] == pytest.approx(64 / numbers["median_epoch_seconds"])
            # The training loop is part of the epoch, not all of it (the test pass follows).
            assert len(numbers["train_seconds"]) == 1 and 0 < numbers["median_train_seconds"] < numbers["median_epoch_seconds"]
            assert numbers["utilisation"] == pytest.approx(numbers["images_per_s"] * row["train_gflops_per_image"] / peak)
            assert numbers["utilisation"] > 0
        assert cell["ours_over_plain"] == pytest.approx(cell["ours"]["images_per_s"] / cell["plain"]["images_per_s"])
        tutorial = row["fp32"]["tutorial"]["images_per_s"]
        assert cell["ours_over_tutorial"] == pytest.approx(cell["ours"]["images_per_s"] / tutorial)
    assert sorted(row["bf16_over_fp32"]) == ["ours", "plain"]
    for pipeline in ("ours", "plain"):
        assert row["bf16_over_fp32"][pipeline] == pytest.approx(
            row["bf16"][pipeline]["images_per_s"] / row["fp32"][pipeline]["images_per_s"])
    assert "ours over plain" in stdout and "bf16 over fp32" in stdout


def test_training_flops_are_about_three_forward_passes():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from machine_peak import training_flops_per_image

    from models import build_model
    from models.stats import macs_per_image

    for arch in ("singlestage", "multistage"):
        forward_flops = 2 * macs_per_image(build_model(arch, 10))
        # Forward + backward (input and weight gradients) is about 3 forward passes.
        assert 2.5 < training_flops_per_image(arch, 10, batch_size=8) / forward_flops < 3.5


@pytest.mark.slow
def test_end_to_end_script_runs_and_reports_consistent_numbers(cifar10_dir, tmp_path, capsys):
    """benchmarks/end_to_end.py (what gpu_check.sh times) on CPU and tiny data: the same code path, minus the GPU.
    One fp32 run forced with `--amp off` (which the run must record; bf16 and fp16 are slow on CPUs without native
    instructions, and their flags are tested in-process elsewhere), and the speed-up arithmetic is checked on its own
    below. (Its main() runs here; the timed run is a run.py
    process, as always.)"""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from end_to_end import main as end_to_end

    data_dir, _ = cifar10_dir
    out, kept = tmp_path / "end_to_end.json", tmp_path / "runs"
    returned = end_to_end(["--data-dir", data_dir, "--device", "cpu", "--epochs", "2", "--batch-size", "50",
                           "--arch", "multistage", "--modes", "eager", "--precisions", "fp32",
                           "--kernel-seconds", "0.05", "--small-kernels", "--keep-runs", str(kept), "--json", str(out)])
    stdout = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))  # the file holds what main() computed
    row = results["runs"]["multistage-eager-fp32"]
    assert "error" not in row, row
    assert row["loop_excluding_compile_seconds"] == pytest.approx(row["loop_seconds"] - row["first_epoch_overhead_seconds"])
    assert row["loop_seconds"] == pytest.approx(sum(row["epoch_seconds"])) and len(row["epoch_seconds"]) == 2
    assert 0 < row["loop_seconds"] < row["wall_seconds"] and row["first_epoch_overhead_seconds"] >= 0
    assert 0 <= row["test_accuracy"] <= 1 and row["first_line"] == device_line("fp32 (--no-amp)")
    history = json.loads((kept / "multistage-eager-fp32" / "history.json").read_text())
    assert row["amp_dtype"] is None and (history["amp_dtype"], history["config"]["amp"]) == (None, "off")
    assert results["speedup_over_fp32"] == {}  # nothing to compare with
    assert row["machine"] == {key: history[key] for key in ("device_model", "onednn_isa", "threads")}
    assert set(results["kernel_gflops_before"]) == set(results["kernel_gflops_after"]) == {"fp32", "bf16"}
    assert "multistage   eager    fp32" in stdout


@pytest.mark.slow
def test_the_members_benchmark_times_both_ways_in_turn_and_reports_their_ratio(cifar10_dir, tmp_path, capsys):
    """benchmarks/members.py on tiny data, one counted pair of a one-seed bonus (2 runs, one per process) and no
    warm-up: both studies ran (it exits otherwise), the ratio is the sequential time over the dealt one, and the file
    holds what main() computed."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from members import main as members

    data_dir, _ = cifar10_dir
    out = tmp_path / "members.json"
    # One thread for the sequential study, the test worker's share of the cores: its default, every core, would
    # oversubscribe them beside the other workers and slow both several-fold.
    figures = members(["--data-dir", data_dir, "--epochs", "1", "--batch-size", "32", "--seeds", "0", "--warmup", "0",
                       "--pairs", "1", "--sequential-threads", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == figures
    (sequential,), (dealt,) = figures["sequential_seconds"], figures["dealt_seconds"]
    assert figures["speed_up_per_pair"] == [pytest.approx(sequential / dealt)]
    assert figures["median_speed_up"] == pytest.approx(sequential / dealt) and figures["nproc"] == 2
    assert (figures["sequential_threads"], figures["member_threads"]) == (1, 1)
    assert figures["study"] == "--bonus --seeds 0"
    assert "pair 0: sequential " in capsys.readouterr().out


def test_the_members_benchmark_counts_no_warm_up_pair(monkeypatch, capsys):
    """The warm-up pairs run (and print) first, and only the pairs after them make the figures."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import members

    seconds = iter([9.0, 8.0, 4.0, 2.0, 6.0, 2.0])  # warm-up A B, then two counted pairs
    commands = []
    monkeypatch.setattr(members, "timed", lambda command, threads: commands.append(command) or next(seconds))
    figures = members.main(["--data-dir", "data", "--warmup", "1", "--pairs", "2"])
    assert (figures["sequential_seconds"], figures["dealt_seconds"]) == ([4.0, 6.0], [2.0, 2.0])
    assert figures["speed_up_per_pair"] == [2.0, 3.0] and figures["median_speed_up"] == 2.5
    assert len(commands) == 6 and "--parallel" in commands[1] and "--parallel" not in commands[0]
    assert "pair 0 (warm-up): sequential 9.0s, dealt 8.0s\npair 1: sequential 4.0s" in capsys.readouterr().out


def test_end_to_end_speedup_is_fp32_time_over_the_other_precisions_time_where_both_ran():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from end_to_end import speedups_over_fp32

    def row(wall, loop, accuracy):
        return {"wall_seconds": wall, "loop_seconds": loop, "test_accuracy": accuracy}

    runs = {"multistage-eager-fp32": row(300.0, 280.0, 0.70), "multistage-eager-bf16": row(200.0, 140.0, 0.71),
            "multistage-eager-fp16": row(150.0, 112.0, 0.68),
            "singlestage-eager-fp32": row(900.0, 880.0, 0.65),  # no partner
            "multistage-compile-fp32": row(100.0, 90.0, 0.7), "multistage-compile-bf16": {"error": ["boom"]}}
    speedups = speedups_over_fp32(runs)
    assert list(speedups) == ["multistage-eager"] and list(speedups["multistage-eager"]) == ["bf16", "fp16"]
    bf16, fp16 = speedups["multistage-eager"]["bf16"], speedups["multistage-eager"]["fp16"]
    assert (bf16["wall"], bf16["loop"], bf16["test_accuracy_points"]) == pytest.approx((1.5, 2.0, 1.0))
    assert (fp16["wall"], fp16["loop"], fp16["test_accuracy_points"]) == pytest.approx((2.0, 2.5, -2.0))


def test_end_to_end_order_alternates_between_architectures():
    """A B for the first net, B A for the second: drift of the host during a long measurement favours neither."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from end_to_end import run_order

    assert run_order(["multistage", "singlestage"], ["eager"], ["fp32", "bf16", "fp16"]) == [
        ("multistage", "eager", "fp32"), ("multistage", "eager", "bf16"), ("multistage", "eager", "fp16"),
        ("singlestage", "eager", "fp16"), ("singlestage", "eager", "bf16"), ("singlestage", "eager", "fp32")]
