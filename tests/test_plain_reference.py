"""The engine trains exactly what a plain PyTorch loop of the same recipe trains, on the machine the test runs on.

The reference below is a hand-written loop: same seed, same weights, same data order and augmentation draws (the
loader's generators and crop-flip, themselves tested in test_loader.py), Adam and cross-entropy, then its own
evaluation passes. The engine's history must equal it: every per-epoch number, not a number recorded on some other
CPU (oneDNN's kernels and roundings differ between CPUs, and training amplifies the last bits).
"""
import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

import run
from engine.data.loader import epoch_generator, random_crop_flip, train_eval_indices
from models import build_model
from synthetic_cifar import write_cifar10, write_cifar100
from helpers import learning_rate

BATCH, EPOCHS = 32, 2


def normalizer(train_x: np.ndarray):
    """uint8 (N, 3, 32, 32) -> float32 normalised by the training set's per-channel mean and std."""
    pixels = train_x.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) / 255.0
    mean, std = pixels.mean(axis=1), pixels.std(axis=1)
    # The engine folds (x / 255 - mean) / std into one multiply-add; so does the reference, to round alike.
    scale = torch.from_numpy(1.0 / (255.0 * std)).float().view(1, 3, 1, 1)
    shift = torch.from_numpy(-mean / std).float().view(1, 3, 1, 1)
    return lambda images: torch.addcmul(shift, images.float().contiguous(memory_format=torch.channels_last), scale)


def evaluate(model, normalize, images, labels, fine_to_coarse=None, flip=False) -> dict:
    """Accuracy, top-5 and mean cross-entropy over `images`, in batches of BATCH, in eval mode; with `flip`, of the
    mean logits of each image and its mirror image."""
    model.eval()

    def logits_of(batch):
        if not flip:
            return model(batch)
        return (model(batch) + model(batch.flip(3))) / 2

    with torch.no_grad():
        logits = torch.cat([logits_of(normalize(images[i:i + BATCH])) for i in range(0, len(images), BATCH)])
    predicted = logits.argmax(1)
    result = {
        "accuracy": (predicted == labels).double().mean().item(),
        "top5": (logits.topk(5, dim=1).indices == labels[:, None]).any(1).double().mean().item(),
        "loss": nn.functional.cross_entropy(logits, labels).item(),
    }
    if fine_to_coarse is not None:
        result["superclass_accuracy"] = (fine_to_coarse[predicted] == fine_to_coarse[labels]).double().mean().item()
    return result


def plain_history(written: dict, arch: str, num_classes: int, *, seed: int, augment: bool, train_eval: int,
                  blocks_per_stage: int = 2, label_smoothing: float = 0.0, optimizer: str = "adam", lr: float = 1e-3,
                  momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0, schedule: str = "constant",
                  warmup: float = 0.0, crop_padding: int = 4, ema: float = 0.0, tta: str = "none",
                  keep: dict | None = None) -> list[dict]:
    """The per-epoch records of the recipe, trained by a plain loop (fp32, channels_last as the engine on CPU);
    `keep`, if given, receives the final model and the averaged one."""
    train_x = torch.from_numpy(written["train_x"].reshape(-1, 3, 32, 32))
    train_y = torch.from_numpy(written["train_y"]).long()
    test_x = torch.from_numpy(written["test_x"].reshape(-1, 3, 32, 32))
    test_y = torch.from_numpy(written["test_y"]).long()
    fine_to_coarse = None
    if "fine_to_coarse" in written:
        # The archive tells a class's superclass only through the images labelled with it: classes absent from
        # both splits (possible in this tiny set, never in the real one) count as superclass 0, in the engine too.
        fine_to_coarse = torch.zeros(num_classes, dtype=torch.long)
        for split in ("train", "test"):
            fine = written[f"{split}_y"]
            fine_to_coarse[fine] = torch.from_numpy(written["fine_to_coarse"][fine]).long()
    normalize = normalizer(written["train_x"].reshape(-1, 3, 32, 32))
    torch.manual_seed(seed)
    model = build_model(arch, num_classes, blocks_per_stage=blocks_per_stage).to(memory_format=torch.channels_last)
    if optimizer == "sgd":
        step = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    else:
        step = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    averaged = copy.deepcopy(model) if ema else None
    batches = -(-len(train_y) // BATCH)
    warmup_iterations, total = round(warmup * batches), EPOCHS * batches
    subset = train_eval_indices(len(train_y), train_eval, seed)
    records = []
    iteration = 0
    for epoch in range(1, EPOCHS + 1):
        model.train()
        order = torch.randperm(len(train_y), generator=epoch_generator(seed, epoch))
        loss_sum = 0.0
        for batch, start in enumerate(range(0, len(order), BATCH)):
            if schedule != "constant" or warmup_iterations:
                step.param_groups[0]["lr"] = learning_rate(schedule, lr, iteration, warmup_iterations, total)
            index = order[start:start + BATCH]
            images = train_x[index]
            if augment:
                images = random_crop_flip(images, epoch_generator(seed, epoch, batch), padding=crop_padding)
            losses = nn.functional.cross_entropy(model(normalize(images)).float(), train_y[index], reduction="none",
                                                 label_smoothing=label_smoothing)
            step.zero_grad(set_to_none=True)
            losses.mean().backward()
            step.step()
            loss_sum += losses.detach().double().sum().item()
            iteration += 1
            if averaged is not None:  # every float parameter and buffer: decay * average + (1 - decay) * now
                with torch.no_grad():
                    for mean_tensor, now in zip([*averaged.parameters(), *averaged.buffers()],
                                                [*model.parameters(), *model.buffers()]):
                        if mean_tensor.dtype.is_floating_point:
                            mean_tensor.mul_(ema).add_(now, alpha=1 - ema)
                        else:
                            mean_tensor.copy_(now)
        record = {"epoch": epoch, "train_loss": loss_sum / len(train_y)}
        for name, value in evaluate(model, normalize, test_x, test_y, fine_to_coarse).items():
            record[f"test_{name}"] = value
        if train_eval:
            for name, value in evaluate(model, normalize, train_x[subset], train_y[subset]).items():
                record[f"train_eval_{name}"] = value
        if averaged is not None:
            for name, value in evaluate(averaged, normalize, test_x, test_y).items():
                record[f"test_ema_{name}"] = value
        if tta == "flip":
            for name, value in evaluate(model, normalize, test_x, test_y, flip=True).items():
                record[f"test_flip_{name}"] = value
        records.append(record)
    if keep is not None:
        keep.update(model=model, averaged=averaged)
    return records


CASES = {
    "cifar10-multistage-augment": (write_cifar10, 10, ["--dataset", "cifar10", "--arch", "multistage", "--augment",
                                                       "--seed", "3", "--train-eval", "30"],
                                   dict(arch="multistage", seed=3, augment=True, train_eval=30)),
    "cifar100-multistage-3bps": (write_cifar100, 100, ["--dataset", "cifar100", "--arch", "multistage",
                                                       "--blocks-per-stage", "3", "--train-eval", "20"],
                                 dict(arch="multistage", seed=0, augment=False, train_eval=20, blocks_per_stage=3)),
    "cifar10-singlestage-label-smoothing": (write_cifar10, 10, ["--dataset", "cifar10", "--arch", "singlestage",
                                                                "--seed", "1", "--label-smoothing", "0.2"],
                                            dict(arch="singlestage", seed=1, augment=False, train_eval=0,
                                                 label_smoothing=0.2)),
    "cifar10-multistage-sgd-onecycle-crop2-ema-flip": (
        write_cifar10, 10, ["--dataset", "cifar10", "--arch", "multistage", "--seed", "2", "--optimizer", "sgd",
                            "--lr", "0.05", "--momentum", "0.8", "--nesterov", "--weight-decay", "5e-4",
                            "--schedule", "onecycle", "--warmup", "0.5", "--augment", "--crop-padding", "2",
                            "--ema", "0.9", "--tta", "flip"],
        dict(arch="multistage", seed=2, augment=True, train_eval=0, optimizer="sgd", lr=0.05, momentum=0.8,
             nesterov=True, weight_decay=5e-4, schedule="onecycle", warmup=0.5, crop_padding=2, ema=0.9, tta="flip")),
    "cifar10-singlestage-adam-cosine-warmup": (
        write_cifar10, 10, ["--dataset", "cifar10", "--arch", "singlestage", "--seed", "4", "--weight-decay", "1e-4",
                            "--schedule", "cosine", "--warmup", "1"],
        dict(arch="singlestage", seed=4, augment=False, train_eval=0, weight_decay=1e-4, schedule="cosine", warmup=1.0)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_history_equals_a_plain_loop_of_the_same_recipe(name, tmp_path):
    write, num_classes, flags, recipe = CASES[name]
    data_dir = str(tmp_path / "data")
    written = write(data_dir)
    run_dir = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert run.main([*flags, "--data-dir", data_dir, "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
                         "--no-progress", "--no-amp", "--output-dir", str(run_dir)]) == 0
    history = json.loads((run_dir / "history.json").read_text())
    got = [{k: v for k, v in e.items() if "seconds" not in k and k != "images_per_s"} for e in history["epochs"]]
    kept = {}
    expected = plain_history(written, num_classes=num_classes, **recipe, keep=kept)
    assert [sorted(e) for e in got] == [sorted(e) for e in expected]
    for engine_record, plain_record in zip(got, expected):
        for key, value in plain_record.items():
            if key.endswith("loss"):
                # Same weights bit for bit; the means are summed in another order (batches vs. all at once).
                assert engine_record[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (engine_record["epoch"], key)
            else:
                assert engine_record[key] == pytest.approx(value, abs=1e-12), (engine_record["epoch"], key)
    checkpoint = torch.load(run_dir / f"checkpoint_{EPOCHS}.pt", weights_only=True)
    if "test_flip_accuracy" in got[-1]:  # test-time flips of the saved model, recomputed from the checkpoint
        saved = build_model(recipe["arch"], num_classes).to(memory_format=torch.channels_last)
        saved.load_state_dict(checkpoint["model"])
        test_x = torch.from_numpy(written["test_x"].reshape(-1, 3, 32, 32))
        flipped = evaluate(saved, normalizer(written["train_x"].reshape(-1, 3, 32, 32)), test_x,
                           torch.from_numpy(written["test_y"]).long(), flip=True)
        assert got[-1]["test_flip_accuracy"] == flipped["accuracy"]
    if kept["averaged"] is not None:  # the checkpoint's averaged weights are those the loop averaged
        for name, value in kept["averaged"].state_dict().items():
            assert torch.allclose(checkpoint["ema_model"][name].float(), value.float(), rtol=1e-5, atol=1e-7), name
