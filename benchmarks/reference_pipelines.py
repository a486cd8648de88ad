"""The hand-written pipelines the throughput benchmark holds ours against: a minimal loop over the same
device-resident batches, and the course tutorial's (a DataLoader of PIL images, NCHW)."""
from __future__ import annotations

import os
import sys
import time

import torch
from PIL import Image
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.data.datasets import CifarData, Split  # noqa: E402
from engine.data.loader import DeviceBatches  # noqa: E402
from engine.precision import PRECISION_MODES, Precision, resolve_precision  # noqa: E402
from models import build_model  # noqa: E402

CPU = torch.device("cpu")


def cpu_precision(name: str) -> Precision:
    """The precision `name` (fp32, bf16, fp16) forced on the CPU, as run.py's --amp would give it."""
    return resolve_precision(PRECISION_MODES[name], CPU)


def train_step(model, optimizer, scaler, precision: Precision, images, labels) -> None:
    """One step of the hand-written loops: autocast forward, fp32 loss, (scaled, under fp16) backward and step."""
    with precision.autocast(CPU):
        logits = model(images)
    loss = nn.functional.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def time_plain(arch: str, data: CifarData, batch_size: int, epochs: int, precision: str):
    """A minimal hand-written loop over the same device-resident batches and model (channels_last); yields
    (seconds of the epoch: train + test pass, seconds of its training loop alone)."""
    chosen = cpu_precision(precision)
    torch.manual_seed(0)
    mean = data.train.images.double().mean(dim=(0, 2, 3)) / 255
    std = (data.train.images.double() / 255).std(dim=(0, 2, 3))
    train = DeviceBatches(data.train.images, data.train.labels, batch_size, mean, std, shuffle=True, channels_last=True)
    test = DeviceBatches(data.test.images, data.test.labels, batch_size, mean, std, channels_last=True)
    model = build_model(arch, data.num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=chosen.loss_scaling)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train.set_epoch(epoch)
        model.train()
        for images, labels, _ in train:
            train_step(model, optimizer, scaler, chosen, images, labels)
        trained = time.perf_counter() - start
        model.eval()
        correct = 0
        with torch.inference_mode(), chosen.autocast(CPU):
            for images, labels, _ in test:
                correct += (model(images).argmax(1) == labels).sum().item()
        yield time.perf_counter() - start, trained


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


def time_tutorial(arch: str, data: CifarData, batch_size: int, epochs: int, precision: str):
    """DataLoader(shuffle, 2 workers) over PIL images, NCHW model, the tutorial's loop; yields (epoch seconds,
    training-loop seconds).
    The course's loop is fp32; under bf16 autocast (--tutorial-bf16) its NCHW convolutions run far slower on CPU
    than in fp32 (oneDNN wants channels_last for bf16), so by default it is timed in fp32 only."""
    chosen = cpu_precision(precision)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(TutorialDataset(data.train), batch_size=batch_size, shuffle=True, num_workers=2)
    test_loader = torch.utils.data.DataLoader(TutorialDataset(data.test), batch_size=batch_size, num_workers=2)
    model = build_model(arch, data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=chosen.loss_scaling)
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for images, labels in loader:
            train_step(model, optimizer, scaler, chosen, images, labels)
        trained = time.perf_counter() - start
        model.eval()
        with torch.no_grad(), chosen.autocast(CPU):
            for images, labels in test_loader:
                (model(images).argmax(1) == labels).sum().item()
        yield time.perf_counter() - start, trained
