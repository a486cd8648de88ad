#!/usr/bin/env python
"""Where a training step's time goes on this machine: torch.profiler over a few steps, grouped by kind of op.

    python benchmarks/profile_step.py [--arch multistage] [--batch-size 128] [--steps 10] [--precision bf16]

Prints the share of CPU time in convolutions (forward and backward), BatchNorm, ReLU, the optimizer and the
rest, for the same channels_last model and batch the trainer uses, in fp32 or under bf16 autocast; that is
what limits utilisation, and what bf16 does not speed up.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model  # noqa: E402

GROUPS = {  # first matching substring of the op name wins
    "convolution": ("conv", "mkldnn_convolution"),
    "batch norm": ("batch_norm",),
    "relu / add": ("relu", "threshold", "add_", "aten::add"),
    "dtype conversions": ("aten::to", "_to_copy", "copy_"),
    "optimizer (Adam)": ("_foreach", "adam", "lerp", "addcdiv", "sqrt"),
    "pooling / linear / loss": ("mean", "addmm", "mm", "cross_entropy", "log_softmax", "nll", "avg_pool"),
}


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, needles in GROUPS.items():
        if any(needle in lowered for needle in needles):
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="multistage")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(args.arch, 100).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(args.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 100, (args.batch_size,))

    dtype = torch.bfloat16 if args.precision == "bf16" else None

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    totals = defaultdict(float)
    for event in prof.key_averages():
        # Self time: each microsecond counted once, in the op that spent it.
        totals[group_of(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values())
    print(f"{args.arch}, {args.precision}, batch {args.batch_size}, {torch.get_num_threads()} threads: "
          f"{whole / args.steps / 1e3:.1f} ms per step (profiled)")
    for group, micros in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<26} {100 * micros / whole:5.1f}%")


if __name__ == "__main__":
    main()
