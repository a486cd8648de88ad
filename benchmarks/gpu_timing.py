#!/usr/bin/env python
"""10-epoch runs of both nets, eager and `--compile`, each as a real `run.py` process; times what matters on a GPU.

    python benchmarks/gpu_timing.py --data-dir DATA [--device cuda] [--json benchmarks/results/gpu/gpu_check.json]

For each run: the process's wall clock, the training loop (sum of the epochs' train and evaluation seconds from
history.json), and the compile overhead, estimated as the first epoch's time minus the median of the others
(the first epoch of an eager run pays cuDNN autotuning, a little; of a compiled run, the compilation). "Loop
excluding compile" is the loop minus that overhead: the number the < 15 s (multi-stage) goal refers to.
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


def epoch_seconds(record: dict) -> float:
    """Training plus every evaluation pass of one epoch."""
    return sum(value for key, value in record.items() if key.endswith("_seconds"))


def timed_run(data_dir: str, arch: str, compile_: bool, epochs: int, device: str, workdir: str, batch_size: int) -> dict:
    run_dir = os.path.join(workdir, f"{arch}-{'compile' if compile_ else 'eager'}")
    command = [sys.executable, "run.py", "--dataset", "cifar10", "--data-dir", data_dir, "--arch", arch, "--epochs",
               str(epochs), "--batch-size", str(batch_size), "--device", device, "--no-progress", "--output-dir", run_dir]
    command += ["--compile"] if compile_ else []
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"], "wall_seconds": wall}
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    per_epoch = [epoch_seconds(record) for record in history["epochs"]]
    steady = statistics.median(per_epoch[1:]) if len(per_epoch) > 1 else per_epoch[0]
    overhead = max(0.0, per_epoch[0] - steady)
    return {
        "wall_seconds": wall,
        "loop_seconds": sum(per_epoch),
        "first_epoch_overhead_seconds": overhead,
        "loop_excluding_compile_seconds": sum(per_epoch) - overhead,
        "median_epoch_seconds": steady,
        "images_per_s_median": statistics.median(record["images_per_s"] for record in history["epochs"][1:] or history["epochs"]),
        "test_accuracy": history["epochs"][-1]["test_accuracy"],
        "final_train_loss": history["epochs"][-1]["train_loss"],
        "amp_dtype": history.get("amp_dtype"),
        "first_line": result.stdout.splitlines()[0] if result.stdout else "",
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="holds cifar-10-batches-py/")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--arch", nargs="+", default=["multistage", "singlestage"])
    parser.add_argument("--modes", nargs="+", choices=("eager", "compile"), default=["eager", "compile"])
    parser.add_argument("--json", default="benchmarks/results/gpu/gpu_check.json")
    args = parser.parse_args(argv)
    import torch

    results = {"device": args.device, "epochs": args.epochs, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "runs": {}}
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.arch:
            for mode in args.modes:
                row = timed_run(args.data_dir, arch, mode == "compile", args.epochs, args.device, workdir, args.batch_size)
                results["runs"][f"{arch}-{mode}"] = row
                if "error" in row:
                    print(f"{arch:<12} {mode:<8} FAILED: {row['error']}", flush=True)
                else:
                    print(f"{arch:<12} {mode:<8} wall {row['wall_seconds']:6.1f}s  loop {row['loop_seconds']:6.1f}s  "
                          f"first-epoch overhead {row['first_epoch_overhead_seconds']:5.1f}s  loop excl. compile "
                          f"{row['loop_excluding_compile_seconds']:6.1f}s  test acc {100 * row['test_accuracy']:.2f}%", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
