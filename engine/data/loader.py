"""Batches from device-resident tensors (after airbench): no DataLoader workers, no per-sample PIL work.

The whole split sits on the device as one uint8 tensor; each epoch draws a seeded `randperm`, gathers the
batch by index, optionally augments it as a batch, and normalises it on the device.
"""
from __future__ import annotations

import torch

from engine.data.datasets import Split


def epoch_generator(seed: int, epoch: int, batch: int | None = None) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, epoch[, batch]), so the data order of any epoch and
    the augmentation of any batch can be reproduced without replaying what came before: resuming, even in
    the middle of an epoch, needs no saved RNG state."""
    key = seed * 1_000_003 + epoch if batch is None else (seed * 1_000_003 + epoch) * 1_000_033 + batch + 1
    return torch.Generator().manual_seed(key)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with zero padding `padding` and random horizontal flip, for a whole uint8 batch at once."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(images.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    rows = (shifts[0][:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (shifts[1][:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    cropped = padded[batch, channel, rows, cols]
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped)


class DeviceBatches:
    """Iterable of normalised `(images, labels, index)` batches over device-resident uint8 images; `index` holds
    the samples' positions in the split, for whoever needs to know which images a batch held.

    With `shuffle`, each epoch's order is `randperm` seeded by (seed, epoch); call `set_epoch` before
    iterating (a trainer handler does it on EPOCH_STARTED). Without it, samples come in order. The last
    batch is kept even if smaller, so every sample counts once per epoch. `set_epoch(epoch, start_batch)`
    skips the first batches of the epoch, for a run resumed in the middle of one.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: bool = False,
        crop_padding: int = 4,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.crop_padding = crop_padding
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        device = images.device
        # x_norm = (x / 255 - mean) / std, folded into one multiply-add per element.
        self.scale = (1.0 / (255.0 * std)).to(device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self.shift = (-mean / std).to(device=device, dtype=torch.float32).view(1, 3, 1, 1)
        self.epoch = 1
        self.start_batch = 0
        # Under torchrun every process holds the whole split and takes every world_size-th sample of each
        # global batch: each sample is used exactly once per epoch across all processes.
        self.rank = rank
        self.world_size = world_size

    @classmethod
    def of_split(cls, split: Split, device: torch.device, batch_size: int, mean: torch.Tensor, std: torch.Tensor,
                 **options) -> DeviceBatches:
        """`split`'s images and labels moved to `device`, normalised by `mean` and `std` (the training images')."""
        return cls(split.images.to(device), split.labels.to(device), batch_size, mean, std, **options)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the data order (and augmentation draws) of `epoch`; begin at batch `start_batch`."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float32 in the loader's memory format."""
        x = images.to(torch.float32).contiguous(memory_format=self.memory_format)
        return torch.addcmul(self.shift, x, self.scale)

    def __iter__(self):
        # A generator body runs at the first next(), i.e. after the trainer's EPOCH_STARTED handlers
        # have called set_epoch.
        n = len(self.labels)
        order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)).to(self.images.device) if self.shuffle else None
        for batch_index in range(self.start_batch, len(self)):
            start = batch_index * self.batch_size
            if order is None:
                index = torch.arange(start, min(start + self.batch_size, n), device=self.images.device)
            else:
                index = order[start:start + self.batch_size]
            images = self.images[index]
            if self.augment:
                # Drawn for the whole global batch, so the augmentation does not depend on the world size.
                images = random_crop_flip(images, epoch_generator(self.seed, self.epoch, batch_index), self.crop_padding)
            if self.world_size > 1:
                images, index = images[self.rank::self.world_size], index[self.rank::self.world_size]
            yield self.normalize(images), self.labels[index], index


def train_eval_indices(num_train: int, size: int, seed: int) -> torch.Tensor:
    """A fixed, seeded subset of `size` training images (sorted), the same for every architecture."""
    generator = torch.Generator().manual_seed(seed + 12_345)
    return torch.randperm(num_train, generator=generator)[: min(size, num_train)].sort().values


def channel_stats(images: torch.Tensor, chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, 3, H, W) in [0, 1] units, in float64, chunked to save memory."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean, std
