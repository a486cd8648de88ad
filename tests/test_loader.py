import itertools

import torch

from engine.data.loader import DeviceBatches, random_crop_flip


def make_batches(n=50, batch_size=16, **kwargs):
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 3, 4, 4)
    labels = torch.arange(n)
    mean, std = torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64), torch.tensor([0.2, 0.25, 0.3], dtype=torch.float64)
    return DeviceBatches(images, labels, batch_size, mean, std, **kwargs)


def epoch_labels(batches, epoch):
    batches.set_epoch(epoch)
    return [label for _, labels, _ in batches for label in labels.tolist()]


def test_every_sample_once_per_epoch_and_last_batch_kept():
    batches = make_batches(shuffle=True, seed=3)
    assert len(batches) == 4
    sizes = [len(labels) for _, labels, _ in batches]
    assert sizes == [16, 16, 16, 2]
    for epoch in (1, 2, 3):
        assert sorted(epoch_labels(batches, epoch)) == list(range(50))


def test_order_depends_on_seed_and_epoch_only():
    a, b = make_batches(shuffle=True, seed=3), make_batches(shuffle=True, seed=3)
    assert epoch_labels(a, 2) == epoch_labels(b, 2)
    assert epoch_labels(a, 1) != epoch_labels(a, 2)
    assert epoch_labels(a, 1) != epoch_labels(make_batches(shuffle=True, seed=4), 1)
    # Epoch 5 straight away gives the same order as after epochs 1..4: resuming needs no RNG state.
    fresh = make_batches(shuffle=True, seed=3)
    for epoch in range(1, 5):
        epoch_labels(a, epoch)
    assert epoch_labels(fresh, 5) == epoch_labels(a, 5)


def test_unshuffled_batches_come_in_order():
    assert epoch_labels(make_batches(), 1) == list(range(50))


def test_images_are_normalised_per_channel():
    batches = make_batches(n=5, batch_size=5)
    images, labels, _ = next(iter(batches))
    raw = batches.images.double() / 255.0
    mean = torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3], dtype=torch.float64).view(1, 3, 1, 1)
    assert images.dtype == torch.float32
    torch.testing.assert_close(images.double(), (raw - mean) / std, rtol=1e-5, atol=1e-5)


def test_channels_last_layout():
    images, _, _ = next(iter(make_batches(channels_last=True)))
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_random_crop_flip_is_a_padded_crop_or_its_mirror():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, generator, padding=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flipped_count = 0
    for i in range(len(images)):
        candidates = {
            (dy, dx, flip): padded[i, :, dy:dy + 8, dx:dx + 8].flip(2) if flip else padded[i, :, dy:dy + 8, dx:dx + 8]
            for dy, dx, flip in itertools.product(range(5), range(5), (False, True))
        }
        matches = [key for key, crop in candidates.items() if torch.equal(crop, out[i])]
        assert matches, f"image {i} is not a crop of its padded original"
        flipped_count += all(key[2] for key in matches)
    assert 10 < flipped_count < 54  # about half are mirrored


def test_augmentation_is_reproducible_per_epoch():
    a = make_batches(shuffle=True, seed=1, augment=True)
    b = make_batches(shuffle=True, seed=1, augment=True)
    a.set_epoch(2)
    b.set_epoch(2)
    for (xa, ya, _), (xb, yb, _) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_batches_carry_the_indices_of_their_samples():
    batches = make_batches(shuffle=True, seed=2, world_size=2, rank=1)
    batches.set_epoch(1)
    for _, labels, index in batches:
        assert torch.equal(labels, batches.labels[index])  # labels are arange(n): index and label coincide
