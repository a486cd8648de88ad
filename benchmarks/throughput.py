#!/usr/bin/env python
"""Training throughput, side by side in one process: ours vs a plain PyTorch loop vs the tutorial pipeline, in
fp32 and (where the CPU has native bf16, or when asked) bf16 autocast, or fp16 autocast with loss scaling when asked,
plus the share of the machine's peak that each reaches.

    python benchmarks/throughput.py --quick            # a smoke run, a few hundred images
    python benchmarks/throughput.py                     # the numbers in docs/performance.md
    python benchmarks/throughput.py --precisions fp32 bf16 fp16 --small-kernels   # what fp16 autocast costs here

Every pipeline trains the same architecture with the same batch size on the same images for whole epochs,
each epoch followed by a pass over the test images; all pipelines of all precisions take turns epoch by
epoch, in an order that rotates every epoch (so a drift in the machine's speed, or what one pipeline leaves
behind, hits all of them alike), the first epoch of each is a warm-up, and the median of the timed epochs is
reported. Images are synthetic unless --data-dir points at a CIFAR-10 copy
(speed does not depend on pixel values).

The peak of a precision is the best rate of a few dense kernels in that precision (a large matmul and a large
channels_last 3x3 convolution), measured before and after the pipelines: on some CPUs oneDNN's convolution
runs twice as fast as torch's matmul, so a matmul alone is not the machine's limit.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from ignite.engine import Events

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.recipe import Recipe, Setup  # noqa: E402
from engine.build import build_run  # noqa: E402
from engine.data.cifar_archive import DATASETS  # noqa: E402
from engine.data.datasets import CifarData, Split, load_cifar  # noqa: E402
from engine.outputs import attach_outputs  # noqa: E402
from engine.precision import PRECISION_MODES, native_bf16  # noqa: E402
from machine_peak import cpu_facts, dense_kernel_rates, training_flops_per_image  # noqa: E402
from reference_pipelines import cpu_precision, time_plain, time_tutorial  # noqa: E402

ARCHS = ("multistage", "singlestage")



def synthetic_data(n_train: int, n_test: int, seed: int = 0) -> CifarData:
    g = torch.Generator().manual_seed(seed)

    def split(n):
        return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n,), generator=g))

    return CifarData(DATASETS["cifar10"], split(n_train), split(n_test), [str(i) for i in range(10)])


def subset(data: CifarData, n_train: int, n_test: int) -> CifarData:
    def cut(s: Split, n: int) -> Split:
        return Split(s.images[:n].clone(), s.labels[:n].clone())

    return CifarData(data.spec, cut(data.train, n_train), cut(data.test, n_test), data.class_names)


def time_ours(arch: str, data: CifarData, batch_size: int, epochs: int, precision: str):
    """Our trainer as run.py builds it (metrics, checkpoints, TensorBoard, history; progress off).
    Yields (seconds of the epoch: train + test pass + handlers, seconds of its training loop alone), pausing the
    trainer in between."""
    run = build_run(Recipe(arch=arch, dataset="cifar10", batch_size=batch_size, epochs=epochs),
                    Setup(progress=False, amp=PRECISION_MODES[precision]), data)
    seconds, started, trained = [], [], []
    # Registered before the outputs' handlers, so that the epoch's clock starts before them and the training
    # loop's clock stops before the evaluation passes; the epoch's clock stops after all of them.
    run.trainer.add_event_handler(Events.EPOCH_STARTED, lambda: started.append(time.perf_counter()))
    run.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: trained.append(time.perf_counter() - started[-1]))
    with tempfile.TemporaryDirectory() as run_dir, open(os.devnull, "w") as devnull:
        outputs = attach_outputs(run, run_dir)
        run.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: seconds.append(time.perf_counter() - started[-1]))
        # Pause after each epoch so that the pipelines can take turns (Ignite resumes on the next run()).
        run.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: engine.interrupt())
        try:
            for _ in range(epochs):
                with contextlib.redirect_stdout(devnull):  # the per-epoch lines would clutter the table
                    run.trainer.run(run.train_batches, max_epochs=epochs)
                yield seconds[-1], trained[-1]
        finally:
            outputs.close()


PIPELINES = {"ours": time_ours, "plain": time_plain, "tutorial": time_tutorial}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 train / 32 test images, batch 32, 1 timed epoch, small kernels (a smoke test)")
    parser.add_argument("--train-images", type=int, default=5120)
    parser.add_argument("--test-images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per pipeline (after 1 warm-up)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--pipelines", nargs="+", choices=sorted(PIPELINES), default=list(PIPELINES))
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISION_MODES),
                        help="default: fp32, plus bf16 where the CPU has native bf16 (forcing bf16 elsewhere works, "
                             "slowly); fp16: autocast with loss scaling, slow on every CPU")
    parser.add_argument("--small-kernels", action="store_true",
                        help="peaks from kernels an eighth as wide (without native bf16 or fp16, one full-size call of "
                             "those precisions takes seconds): a lower bound of the peak, so utilisation is an upper one")
    parser.add_argument("--tutorial-bf16", action="store_true",
                        help="also time the tutorial pipeline under bf16 autocast (NCHW: slow on CPU)")
    parser.add_argument("--data-dir", help="use the CIFAR-10 copy here instead of synthetic images")
    parser.add_argument("--json", default="benchmarks/results/throughput.json", help="where to write the results")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_images, args.test_images, args.batch_size, args.epochs, args.small_kernels = 64, 32, 32, 1, True
    precisions = args.precisions or (["fp32", "bf16"] if native_bf16()[0] else ["fp32"])
    kernel_seconds = 0.2 if args.quick else 1.0
    data = load_cifar(DATASETS["cifar10"], args.data_dir, download=False) if args.data_dir else None
    data = subset(data, args.train_images, args.test_images) if data else synthetic_data(args.train_images, args.test_images)

    kernels_before = {p: dense_kernel_rates(cpu_precision(p).dtype or torch.float32, kernel_seconds, args.small_kernels)
                      for p in precisions}
    results = {"machine": {**cpu_facts(), "threads": torch.get_num_threads(), "torch": torch.__version__},
               "setup": {"train_images": args.train_images, "test_images": args.test_images, "batch_size": args.batch_size,
                         "timed_epochs": args.epochs, "data": args.data_dir or "synthetic", "precisions": precisions,
                         "small_kernels": args.small_kernels},
               "archs": {}}
    for arch in args.arch:
        flops = training_flops_per_image(arch, data.num_classes, args.batch_size)
        row = {"train_gflops_per_image": flops / 1e9}
        # All pipelines in all precisions take turns epoch by epoch, so that a drift in this shared machine's
        # speed affects them alike.
        runs = [(p, name) for p in precisions for name in args.pipelines
                if name != "tutorial" or p == "fp32" or args.tutorial_bf16]
        timers = {key: PIPELINES[key[1]](arch, data, args.batch_size, args.epochs + 1, key[0]) for key in runs}
        measured = {key: [] for key in runs}
        for epoch in range(args.epochs + 1):
            # The order rotates every epoch, so that no pipeline always follows the same one (the tutorial's
            # DataLoader workers, for one, are still exiting when the next pipeline starts).
            shift = epoch % len(runs)
            for key in runs[shift:] + runs[:shift]:
                measured[key].append(next(timers[key]))
        for timer in timers.values():
            timer.close()
        for precision, name in runs:
            seconds = [epoch for epoch, _ in measured[precision, name][1:]]  # drop the warm-up epoch
            trained = [train for _, train in measured[precision, name][1:]]
            median = statistics.median(seconds)
            row.setdefault(precision, {})[name] = {"epoch_seconds": seconds, "median_epoch_seconds": median,
                                                   "images_per_s": args.train_images / median,
                                                   "train_seconds": trained, "median_train_seconds": statistics.median(trained)}
        for precision in precisions:
            cell = row[precision]
            if "ours" in cell and "plain" in cell:
                cell["ours_over_plain"] = cell["ours"]["images_per_s"] / cell["plain"]["images_per_s"]
            # Against the course's pipeline as it is (fp32), unless it was timed in this precision too.
            tutorial = cell.get("tutorial") or row.get("fp32", {}).get("tutorial")
            if "ours" in cell and tutorial:
                cell["ours_over_tutorial"] = cell["ours"]["images_per_s"] / tutorial["images_per_s"]
        for faster in [p for p in precisions if p != "fp32" and "fp32" in row]:
            row[f"{faster}_over_fp32"] = {name: row[faster][name]["images_per_s"] / row["fp32"][name]["images_per_s"]
                                          for name in args.pipelines if name in row[faster] and name in row["fp32"]}
        results["archs"][arch] = row
    kernels_after = {p: dense_kernel_rates(cpu_precision(p).dtype or torch.float32, kernel_seconds, args.small_kernels)
                     for p in precisions}
    peaks = {}
    for p in precisions:
        best = {kernel: max(kernels_before[p][kernel], kernels_after[p][kernel]) for kernel in kernels_before[p]}
        peaks[p] = {"before_gflops": kernels_before[p], "after_gflops": kernels_after[p],
                    "best_kernel": max(best, key=best.get), "peak_gflops": max(best.values())}
    results["machine"]["dense_kernels"] = peaks
    for row in results["archs"].values():
        for p in precisions:
            for name in [name for name in args.pipelines if name in row[p]]:
                cell = row[p][name]
                cell["utilisation"] = cell["images_per_s"] * row["train_gflops_per_image"] / peaks[p]["peak_gflops"]
    print_table(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.json}")
    return results


def print_table(results: dict) -> None:
    machine, setup = results["machine"], results["setup"]
    print(f"{machine['cpu_model']}, {machine['threads']} threads; ISA: {' '.join(machine['isa_flags']) or '-'}; "
          f"native bf16: {', '.join(machine['native_bf16']) or 'none'}")
    for precision, kernels in machine["dense_kernels"].items():
        rates = ", ".join(f"{name} {max(kernels['before_gflops'][name], kernels['after_gflops'][name]):.0f}"
                          for name in kernels["before_gflops"])
        print(f"{precision} peak {kernels['peak_gflops']:.0f} GFLOP/s ({rates}; best of before/after)")
    print(f"{setup['train_images']} train + {setup['test_images']} test images per epoch, batch {setup['batch_size']}")
    print(f"{'arch':<12} {'precision':<9} {'pipeline':<9} {'img/s':>8} {'epoch s':>8} {'train s':>8} {'util':>6}")
    for arch, row in results["archs"].items():
        for precision in setup["precisions"]:
            cell = row[precision]
            for name in PIPELINES:
                if name in cell:
                    r = cell[name]
                    print(f"{arch:<12} {precision:<9} {name:<9} {r['images_per_s']:>8.0f} {r['median_epoch_seconds']:>8.2f} "
                          f"{r['median_train_seconds']:>8.2f} {100 * r['utilisation']:>5.1f}%")
            ratios = [f"{key.replace('_', ' ')} {cell[key]:.2f}" for key in ("ours_over_plain", "ours_over_tutorial")
                      if key in cell]
            if ratios:
                print(f"{'':<12} {precision:<9} " + ", ".join(ratios))
        for precision in setup["precisions"]:
            if f"{precision}_over_fp32" in row:
                print(f"{'':<12} {precision} over fp32: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in row[f"{precision}_over_fp32"].items()))


if __name__ == "__main__":
    main()
