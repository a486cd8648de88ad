#!/usr/bin/env python
"""Training throughput, side by side in one process: ours vs a plain PyTorch loop vs the tutorial pipeline,
plus the share of the machine's fp32 matmul peak that each reaches.

    python benchmarks/throughput.py --quick            # a smoke run, a few hundred images
    python benchmarks/throughput.py                     # the numbers in README "Performance"

Every pipeline trains the same architecture with the same batch size on the same images for whole epochs,
each epoch followed by a pass over the test images; the pipelines take turns epoch by epoch (so a drift in
the machine's speed hits all of them alike), the first epoch of each is a warm-up, and the median of the
timed epochs is reported. Images are synthetic unless --data-dir points at a CIFAR-10 copy (speed
does not depend on pixel values).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.datasets import DATASETS, CifarData, Split, load_cifar  # noqa: E402
from engine.experiment import TrainConfig, attach_outputs, build_run  # noqa: E402
from engine.loader import DeviceBatches  # noqa: E402
from ignite.engine import Events  # noqa: E402
from models import build_model  # noqa: E402

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


def time_ours(arch: str, data: CifarData, batch_size: int, epochs: int):
    """Our trainer as run.py builds it (metrics, checkpoints, TensorBoard, history; progress off).
    Yields the seconds of each epoch (train + test pass + handlers), pausing the trainer in between."""
    config = TrainConfig(arch=arch, dataset="cifar10", batch_size=batch_size, epochs=epochs, progress=False)
    run = build_run(config, data)
    seconds, started = [], []
    with tempfile.TemporaryDirectory() as run_dir:
        outputs = attach_outputs(run, run_dir, progress=False)
        run.trainer.add_event_handler(Events.EPOCH_STARTED, lambda: started.append(time.perf_counter()))
        run.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: seconds.append(time.perf_counter() - started[-1]))
        # Pause after each epoch so that the pipelines can take turns (Ignite resumes on the next run()).
        run.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: engine.interrupt())
        try:
            for _ in range(epochs):
                stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # the per-epoch lines would clutter the table
                try:
                    run.trainer.run(run.train_batches, max_epochs=epochs)
                finally:
                    sys.stdout.close()
                    sys.stdout = stdout
                yield seconds[-1]
        finally:
            outputs.close()


def time_plain(arch: str, data: CifarData, batch_size: int, epochs: int):
    """A minimal hand-written loop over the same device-resident batches and model (channels_last); yields
    the seconds of each epoch (train + test pass)."""
    torch.manual_seed(0)
    mean = data.train.images.double().mean(dim=(0, 2, 3)) / 255
    std = (data.train.images.double() / 255).std(dim=(0, 2, 3))
    train = DeviceBatches(data.train.images, data.train.labels, batch_size, mean, std, shuffle=True, channels_last=True)
    test = DeviceBatches(data.test.images, data.test.labels, batch_size, mean, std, channels_last=True)
    model = build_model(arch, data.num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train.set_epoch(epoch)
        model.train()
        for images, labels in train:
            loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.inference_mode():
            for images, labels in test:
                correct += (model(images).argmax(1) == labels).sum().item()
        yield time.perf_counter() - start


class TutorialDataset(torch.utils.data.Dataset):
    """What the course tutorial does: a PIL image per sample through ToTensor + Normalize."""

    def __init__(self, split: Split):
        from torchvision import transforms

        self.images = split.images.permute(0, 2, 3, 1).numpy()
        self.labels = split.labels.tolist()
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))]
        )

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def time_tutorial(arch: str, data: CifarData, batch_size: int, epochs: int):
    """DataLoader(shuffle, 2 workers) over PIL images, NCHW model, the tutorial's loop; yields epoch seconds."""
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(TutorialDataset(data.train), batch_size=batch_size, shuffle=True, num_workers=2)
    test_loader = torch.utils.data.DataLoader(TutorialDataset(data.test), batch_size=batch_size, num_workers=2)
    model = build_model(arch, data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for images, labels in loader:
            loss = criterion(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images, labels in test_loader:
                (model(images).argmax(1) == labels).sum().item()
        yield time.perf_counter() - start


def training_flops_per_image(arch: str, num_classes: int, batch_size: int) -> float:
    """Forward + backward FLOPs of one training image, counted by torch.utils.flop_counter."""
    model = build_model(arch, num_classes).to(memory_format=torch.channels_last)
    images = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(images), labels).backward()
    return counter.get_total_flops() / batch_size


def matmul_flops_per_second(sizes=(1024, 2048), seconds: float = 1.0) -> float:
    """fp32 matmul throughput of this machine, the reference for utilisation: the best rate over a few
    square sizes (this shared machine's speed drifts, so main() takes the best of a measurement before
    and one after the pipelines)."""
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        for _ in range(2):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        best = max(best, 2 * size**3 * count / (time.perf_counter() - start))
    return best


PIPELINES = {"ours": time_ours, "plain": time_plain, "tutorial": time_tutorial}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256 train / 128 test images, 1 timed epoch (a smoke test)")
    parser.add_argument("--train-images", type=int, default=5120)
    parser.add_argument("--test-images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per pipeline (after 1 warm-up)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--pipelines", nargs="+", choices=sorted(PIPELINES), default=list(PIPELINES))
    parser.add_argument("--data-dir", help="use the CIFAR-10 copy here instead of synthetic images")
    parser.add_argument("--json", default="benchmarks/results/throughput.json", help="where to write the results")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_images, args.test_images, args.epochs = 256, 128, 1
    data = load_cifar(DATASETS["cifar10"], args.data_dir, download=False) if args.data_dir else None
    data = subset(data, args.train_images, args.test_images) if data else synthetic_data(args.train_images, args.test_images)

    peak_before = matmul_flops_per_second()
    results = {"machine": {"threads": torch.get_num_threads(), "torch": torch.__version__},
               "setup": {"train_images": args.train_images, "test_images": args.test_images, "batch_size": args.batch_size,
                         "timed_epochs": args.epochs, "data": args.data_dir or "synthetic"},
               "archs": {}}
    for arch in args.arch:
        flops = training_flops_per_image(arch, data.num_classes, args.batch_size)
        row = {"train_gflops_per_image": flops / 1e9}
        # The pipelines take turns epoch by epoch, so that this shared machine's drifting speed affects all alike.
        timers = {name: PIPELINES[name](arch, data, args.batch_size, args.epochs + 1) for name in args.pipelines}
        measured = {name: [] for name in args.pipelines}
        for _ in range(args.epochs + 1):
            for name, timer in timers.items():
                measured[name].append(next(timer))
        for timer in timers.values():
            timer.close()
        for name in args.pipelines:
            seconds = measured[name][1:]  # drop the warm-up epoch
            median = statistics.median(seconds)
            images_per_s = args.train_images / median
            row[name] = {"epoch_seconds": seconds, "median_epoch_seconds": median, "images_per_s": images_per_s}
        if "ours" in row and "plain" in row:
            row["ours_over_plain"] = row["ours"]["images_per_s"] / row["plain"]["images_per_s"]
        if "ours" in row and "tutorial" in row:
            row["ours_over_tutorial"] = row["ours"]["images_per_s"] / row["tutorial"]["images_per_s"]
        results["archs"][arch] = row
    peak_after = matmul_flops_per_second()
    peak = max(peak_before, peak_after)
    results["machine"].update(matmul_fp32_gflops=peak / 1e9, matmul_fp32_gflops_before=peak_before / 1e9,
                              matmul_fp32_gflops_after=peak_after / 1e9)
    for row in results["archs"].values():
        for name in args.pipelines:
            row[name]["utilisation"] = row[name]["images_per_s"] * row["train_gflops_per_image"] * 1e9 / peak
    print_table(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.json}")
    return results


def print_table(results: dict) -> None:
    machine = results["machine"]
    print(f"fp32 matmul: {machine['matmul_fp32_gflops']:.0f} GFLOP/s (best of {machine['matmul_fp32_gflops_before']:.0f} "
          f"before, {machine['matmul_fp32_gflops_after']:.0f} after), {machine['threads']} threads; "
          f"{results['setup']['train_images']} train + {results['setup']['test_images']} test images per epoch, "
          f"batch {results['setup']['batch_size']}")
    print(f"{'arch':<12} {'pipeline':<9} {'img/s':>8} {'epoch s':>8} {'util':>6}")
    for arch, row in results["archs"].items():
        for name in PIPELINES:
            if name in row:
                r = row[name]
                print(f"{arch:<12} {name:<9} {r['images_per_s']:>8.0f} {r['median_epoch_seconds']:>8.2f} "
                      f"{100 * r['utilisation']:>5.1f}%")
        ratios = [f"{key.replace('_', ' ')} {row[key]:.2f}" for key in ("ours_over_plain", "ours_over_tutorial") if key in row]
        if ratios:
            print(f"{'':<12} " + ", ".join(ratios))


if __name__ == "__main__":
    main()
