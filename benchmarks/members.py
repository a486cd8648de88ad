#!/usr/bin/env python
"""A study's wall clock, its runs one after another in one process against the same runs dealt to torchrun's
processes (`--parallel members`), side by side: the two in turn, A B A B ..., each pair's ratio and their median.

    python benchmarks/members.py --data-dir DATA                       # CPU: 2 processes of 1 thread vs 1 of 2
    python benchmarks/members.py --data-dir DATA --device cuda --nproc 4 --sequential-threads 1 \\
        --json OUT/members.json                                        # 4 processes sharing one GPU vs 1

The study is `--bonus --seeds 0 1` (2 nets x 2 seeds; `--seeds` for others), fp32 unless --amp is given; the sequential process gets
`--sequential-threads` threads (default: every core), each dealt process OMP_NUM_THREADS=`--member-threads`.
Both write into a fresh temporary folder each time; what the study prints is thrown away, its exit code checked.
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

from engine.devices import cpu_model  # noqa: E402


def timed(command: list[str], threads: int) -> float:
    """Seconds of wall clock of `command`, run from the repository with `threads` threads per process."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="holds cifar-10-batches-py/")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--nproc", type=int, default=2, help="torchrun's processes")
    parser.add_argument("--member-threads", type=int, default=1)
    parser.add_argument("--sequential-threads", type=int, default=os.cpu_count())
    parser.add_argument("--pairs", type=int, default=3, help="A B pairs timed, after the warm-up pairs")
    parser.add_argument("--warmup", type=int, default=1, help="A B pairs run first and not counted (caches, disk)")
    parser.add_argument("--seeds", nargs="+", default=["0", "1"], help="the bonus study's seeds")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    study = ["--bonus", "--seeds", *args.seeds, "--dataset", "cifar10", "--data-dir", os.path.abspath(args.data_dir),
             "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device", args.device, "--amp", args.amp, "--no-progress"]
    sequential, dealt = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.warmup + args.pairs):
            out = os.path.join(scratch, str(pair))
            seconds_a = timed([sys.executable, "run.py", *study, "--output-dir", f"{out}-sequential"],
                              args.sequential_threads)
            seconds_b = timed([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={args.nproc}", "run.py", *study, "--parallel", "members",
                               "--output-dir", f"{out}-dealt"], args.member_threads)
            if pair >= args.warmup:
                sequential.append(seconds_a)
                dealt.append(seconds_b)
            print(f"pair {pair}{' (warm-up)' if pair < args.warmup else ''}: sequential {seconds_a:.1f}s, "
                  f"dealt {seconds_b:.1f}s", flush=True)
    ratios = [a / b for a, b in zip(sequential, dealt)]
    figures = {"machine": cpu_model() if args.device == "cpu" else args.device, "cores": os.cpu_count(),
               "study": f"--bonus --seeds {' '.join(args.seeds)}", "epochs": args.epochs, "nproc": args.nproc,
               "member_threads": args.member_threads, "sequential_threads": args.sequential_threads,
               "sequential_seconds": sequential, "dealt_seconds": dealt, "speed_up_per_pair": ratios,
               "median_speed_up": statistics.median(ratios)}
    print(f"{figures['machine']}, {figures['cores']} cores: one process of {args.sequential_threads} threads "
          f"{statistics.median(sequential):.1f}s, {args.nproc} dealt processes of {args.member_threads} thread(s) "
          f"{statistics.median(dealt):.1f}s; speed-up (pairwise) median {figures['median_speed_up']:.2f}x, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main()
