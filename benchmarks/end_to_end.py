#!/usr/bin/env python
"""Whole `run.py` runs, timed end to end: each architecture eager and/or `--compile`, in fp32, bf16 and/or fp16.

    python benchmarks/end_to_end.py --data-dir DATA --device cpu --modes eager --precisions fp32 bf16 \\
        --train-eval 10000 --keep-runs runs/end-to-end --json docs/results/end-to-end-cpu-xeon/end-to-end.json
    python benchmarks/end_to_end.py --data-dir DATA            # cuda, eager + compile, each in run.py's own precision
    python benchmarks/end_to_end.py --data-dir DATA --modes eager --precisions fp32 bf16 fp16   # the GPU's precisions

For each run: the process's wall clock (start-up, data loading, every epoch's training and test passes,
checkpoints), the training loop (sum of the epochs' train and evaluation seconds from history.json), and the
compile overhead, estimated as the first epoch's time minus the median of the others (the first epoch of an eager
run pays cuDNN autotuning, a little; of a compiled run, the compilation). "Loop excluding compile" is the loop
minus that overhead: the number the < 15 s (multi-stage) GPU goal refers to. Where fp32 ran beside bf16 or fp16,
their speed-ups over fp32 (on a GPU of compute capability 8.0 or above, fp32 means TF32) are computed from the wall
clocks and from the loops.

The runs go one after another; for every second architecture the order of the (mode, precision) pairs is
reversed (A B C, C B A), so a machine that drifts during a long measurement favours no precision. On a CPU the
best dense-kernel rates are measured before the first and after the last run: if they differ much, the host
changed under the measurement and the ratios say so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from core.history_file import (AMP_DTYPE, DEVICE_MODEL, IMAGES_PER_S, ONEDNN_ISA, TEST_ACCURACY, TF32,  # noqa: E402
                               THREADS, TRAIN_LOSS, is_seconds, read_history)
from engine.precision import PRECISION_MODES  # noqa: E402

# auto: run.py's own choice; a named precision: the --amp mode that forces it.
PRECISION_FLAGS = {"auto": [], **{name: ["--amp", mode] for name, mode in PRECISION_MODES.items()}}


def epoch_seconds(record: dict) -> float:
    """Training plus every evaluation pass of one epoch."""
    return sum(value for key, value in record.items() if is_seconds(key))


def run_command(args, arch: str, mode: str, precision: str, run_dir: str) -> list[str]:
    """The `run.py` command line of one timed run."""
    command = [sys.executable, "run.py", "--dataset", "cifar10", "--data-dir", args.data_dir, "--arch", arch,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
               "--train-eval", str(args.train_eval), "--device", args.device, "--no-progress",
               "--output-dir", run_dir]
    return command + (["--compile"] if mode == "compile" else []) + PRECISION_FLAGS[precision]


def timed_run(command: list[str], run_dir: str) -> dict:
    """Runs `command` (a run.py process writing to `run_dir`) and reads its timings and results back."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"], "wall_seconds": wall}
    history = read_history(run_dir).data
    per_epoch = [epoch_seconds(record) for record in history["epochs"]]
    steady = statistics.median(per_epoch[1:]) if len(per_epoch) > 1 else per_epoch[0]
    overhead = max(0.0, per_epoch[0] - steady)
    return {
        "wall_seconds": wall,
        "loop_seconds": sum(per_epoch),
        "epoch_seconds": per_epoch,
        "first_epoch_overhead_seconds": overhead,
        "loop_excluding_compile_seconds": sum(per_epoch) - overhead,
        "median_epoch_seconds": steady,
        "images_per_s_median": statistics.median(record[IMAGES_PER_S] for record in history["epochs"][1:] or history["epochs"]),
        "test_accuracy": history["epochs"][-1][TEST_ACCURACY],
        "final_train_loss": history["epochs"][-1][TRAIN_LOSS],
        "amp_dtype": history.get(AMP_DTYPE),
        "tf32": history.get(TF32),
        "machine": {key: history.get(key) for key in (DEVICE_MODEL, ONEDNN_ISA, THREADS)},
        "first_line": result.stdout.splitlines()[0] if result.stdout else "",
    }


def run_order(archs: list[str], modes: list[str], precisions: list[str]) -> list[tuple[str, str, str]]:
    """(arch, mode, precision) in the order they run: A B for the first architecture, B A for the second, ..."""
    order = []
    for index, arch in enumerate(archs):
        pairs = [(mode, precision) for mode in modes for precision in precisions]
        order += [(arch, mode, precision) for mode, precision in (pairs[::-1] if index % 2 else pairs)]
    return order


def speedups_over_fp32(runs: dict) -> dict:
    """bf16 and fp16 over fp32 for every (arch, mode) that ran in both: from the wall clocks and from the training
    loops, with the difference in test accuracy. {"multistage-eager": {"bf16": {...}, "fp16": {...}}}."""
    speedups = {}
    for key, fp32 in runs.items():
        if not key.endswith("-fp32") or "error" in fp32:
            continue
        for faster in ("bf16", "fp16"):
            other = runs.get(key.removesuffix("-fp32") + f"-{faster}")
            if other is None or "error" in other:
                continue
            speedups.setdefault(key.removesuffix("-fp32"), {})[faster] = {
                "wall": fp32["wall_seconds"] / other["wall_seconds"],
                "loop": fp32["loop_seconds"] / other["loop_seconds"],
                "test_accuracy_points": 100 * (other["test_accuracy"] - fp32["test_accuracy"]),
            }
    return speedups


def cpu_kernel_rates(seconds: float, small: bool = False) -> dict:
    """Best fp32 and bf16 dense-kernel GFLOP/s of this CPU (the throughput benchmark's own measurement)."""
    from machine_peak import dense_kernel_rates  # benchmarks/ is on sys.path when this file runs as a script
    import torch

    return {name: dense_kernel_rates(dtype, seconds, small)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="holds cifar-10-batches-py/")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-eval", type=int, default=0, help="run.py --train-eval (0: test pass only)")
    parser.add_argument("--arch", nargs="+", default=["multistage", "singlestage"])
    parser.add_argument("--modes", nargs="+", choices=("eager", "compile"), default=["eager", "compile"])
    parser.add_argument("--precisions", nargs="+", choices=tuple(PRECISION_FLAGS), default=["auto"],
                        help="auto: run.py's own choice; fp32, bf16, fp16: forced with --amp")
    parser.add_argument("--keep-runs", metavar="DIR", help="keep the run directories here (default: a temp folder)")
    parser.add_argument("--kernel-seconds", type=float, default=1.0,
                        help="CPU only: seconds per dense-kernel rate before and after the runs (0: skip)")
    parser.add_argument("--small-kernels", action="store_true",
                        help="measure small kernels: a smoke test of the measurement, not the CPU's peak")
    parser.add_argument("--json", default="benchmarks/results/end_to_end.json")
    args = parser.parse_args(argv)
    import torch
    from machine_peak import cpu_facts

    results = {"device": args.device, "epochs": args.epochs, "train_eval": args.train_eval, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "runs": {}}
    measure_kernels = args.device == "cpu" and args.kernel_seconds > 0
    if args.device == "cpu":
        results["cpu"] = cpu_facts()
    if measure_kernels:
        results["kernel_gflops_before"] = cpu_kernel_rates(args.kernel_seconds, args.small_kernels)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.keep_runs or scratch
        for arch, mode, precision in run_order(args.arch, args.modes, args.precisions):
            run_dir = os.path.join(workdir, f"{arch}-{mode}-{precision}")
            row = timed_run(run_command(args, arch, mode, precision, run_dir), run_dir)
            results["runs"][f"{arch}-{mode}-{precision}"] = row
            if "error" in row:
                print(f"{arch:<12} {mode:<8} {precision:<5} FAILED: {row['error']}", flush=True)
            else:
                print(f"{arch:<12} {mode:<8} {precision:<5} wall {row['wall_seconds']:6.1f}s  loop "
                      f"{row['loop_seconds']:6.1f}s  first-epoch overhead {row['first_epoch_overhead_seconds']:5.1f}s  "
                      f"loop excl. compile {row['loop_excluding_compile_seconds']:6.1f}s  "
                      f"test acc {100 * row['test_accuracy']:.2f}%", flush=True)
    if measure_kernels:
        results["kernel_gflops_after"] = cpu_kernel_rates(args.kernel_seconds, args.small_kernels)
    results["speedup_over_fp32"] = speedups_over_fp32(results["runs"])
    for key, by_precision in results["speedup_over_fp32"].items():
        for faster, speedup in by_precision.items():
            print(f"{key}: {faster} over fp32 {speedup['wall']:.2f}x wall clock, {speedup['loop']:.2f}x loop, "
                  f"test accuracy {speedup['test_accuracy_points']:+.2f} points", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
