"""`--val-split N`: N training images, class-balanced and the same for every seed and net, held out of training,
evaluated every epoch, and what the best epoch is chosen by; checked against independent computations."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

import run
from core.history_file import best_epoch, chosen_by
from core.recipe import Recipe, Setup
from engine.build import build_run
from engine.data.cifar_archive import DATASETS
from engine.data.datasets import VAL_SPLIT_SEED, hold_out, load_cifar
from helpers import read_history, runs_of
from models import build_model

TINY = ["--dataset", "cifar10", "--batch-size", "32", "--no-progress", "--no-amp"]


def expected_positions(labels: np.ndarray, size: int) -> list[int]:
    """The held-out positions, worked out here: per class in class order, size // 10 (one more for the first
    size % 10 classes) of its positions, in the order a randperm of VAL_SPLIT_SEED's generator draws them."""
    generator = torch.Generator().manual_seed(VAL_SPLIT_SEED)
    held = []
    for label in range(10):
        members = np.flatnonzero(labels == label)
        count = size // 10 + (label < size % 10)
        order = torch.randperm(len(members), generator=generator)[:count].numpy()
        held += members[order].tolist()
    return sorted(held)


def fingerprint(positions) -> str:
    return hashlib.sha256(np.asarray(positions, dtype=np.int64).tobytes()).hexdigest()[:16]


def test_the_held_out_images_are_class_balanced_and_never_reach_a_training_batch(cifar10_dir):
    data_dir, written = cifar10_dir
    labels = written["train_y"]
    built = build_run(Recipe(dataset="cifar10", batch_size=32, val_split=23, train_eval=30), Setup(device="cpu"),
                      hold_out(load_cifar(DATASETS["cifar10"], data_dir), 23))
    data = built.data
    held = expected_positions(labels, 23)
    assert data.val_positions.tolist() == held
    assert sorted(np.bincount(labels[held], minlength=10).tolist()) == [2] * 7 + [3] * 3  # 23 = 10 x 2 + 3
    assert torch.equal(data.val.images, torch.from_numpy(written["train_x"][held]).view(-1, 3, 32, 32))
    remaining = sorted(set(range(len(labels))) - set(held))
    assert data.train_positions.tolist() == remaining and len(data.train) == 77
    for epoch in (1, 2):  # every image each epoch, a held-out one never (the batch's index is a place in the split)
        built.train_batches.set_epoch(epoch)
        seen = torch.cat([index for _images, _labels, index in built.train_batches])
        assert sorted(data.train_positions[seen].tolist()) == remaining
    train_eval = built.eval_batches["train_eval"]  # drawn from the remaining images only
    assert len(train_eval.images) == 30 and set(map(bytes, train_eval.images.cpu().numpy())) <= set(
        map(bytes, built.train_batches.images.cpu().numpy()))
    mean = data.train.images.double().div(255).mean(dim=(0, 2, 3))  # normalised by the images it trains on
    assert torch.allclose(built.mean.double(), mean)


@pytest.mark.parametrize("size, message", [
    (100, "error: --val-split 100 is not smaller than the training set (100 images)\n"),
    (95, None),  # 10 per class, more than some classes hold
])
def test_too_many_held_out_images_are_one_line_and_nothing_is_written(cifar10_dir, tmp_path, capsys, size, message):
    data_dir, written = cifar10_dir
    counts = np.bincount(written["train_y"], minlength=10)
    if message is None:
        label = next(c for c in range(10) if counts[c] <= 9 + (c < 5))
        message = (f"error: --val-split 95 would leave class {written['names'][label]!r} without training images "
                   f"(it has {counts[label]}, {9 + (label < 5)} would be held out)\n")
    for command in ([], ["--bonus", "--seeds", "0", "1"]):
        capsys.readouterr()
        assert run.main([*command, *TINY, "--data-dir", data_dir, "--val-split", str(size),
                         "--output-dir", str(tmp_path / "out")]) == 1
        assert capsys.readouterr().err == message
        assert not (tmp_path / "out").exists()


def test_the_best_epoch_is_chosen_by_validation_accuracy_where_there_is_one():
    records = [{"epoch": 1, "test_accuracy": 0.30, "val_accuracy": 0.40},
               {"epoch": 2, "test_accuracy": 0.50, "val_accuracy": 0.35},
               {"epoch": 3, "test_accuracy": 0.45, "val_accuracy": 0.40}]
    assert chosen_by(records) == "val_accuracy" and best_epoch(records)["epoch"] == 1  # the earliest of equals
    plain = [{k: v for k, v in record.items() if k != "val_accuracy"} for record in records]
    assert chosen_by(plain) == "test_accuracy" and best_epoch(plain)["epoch"] == 2


@pytest.fixture(scope="module")
def held_out_study(tmp_path_factory):
    """`--bonus --seeds 0 1 --val-split 20`, 3 epochs: (data_dir, written, study_dir)."""
    from synthetic_cifar import write_cifar10

    root = tmp_path_factory.mktemp("val")
    written = write_cifar10(str(root / "data"))
    study_dir = root / "study"
    assert run.main(["--bonus", "--seeds", "0", "1", *TINY, "--data-dir", str(root / "data"), "--epochs", "3",
                     "--train-eval", "40", "--val-split", "20", "--output-dir", str(study_dir)]) == 0
    return str(root / "data"), written, study_dir


@pytest.mark.slow
def test_every_seed_and_net_holds_out_the_same_images_and_the_validation_numbers_are_the_saved_models(held_out_study):
    _data_dir, written, study_dir = held_out_study
    held = expected_positions(written["train_y"], 20)
    for seed in (0, 1):
        for arch in ("singlestage", "multistage"):
            history = read_history(str(study_dir / f"seed{seed}" / arch))
            assert (history["config"]["val_split"], history["num_val"], history["num_train"]) == (20, 20, 80)
            assert history["val_images"] == fingerprint(held)
            last = history["epochs"][-1]
            # The final model on the held-out images, normalised by the 80 it trained on: computed here.
            checkpoint = torch.load(study_dir / f"seed{seed}" / arch / "checkpoint_3.pt", weights_only=True)
            model = build_model(arch, 10)
            model.load_state_dict(checkpoint["model"])
            model.eval()
            remaining = np.setdiff1d(np.arange(100), held)
            train = written["train_x"][remaining].reshape(-1, 3, 1024) / 255.0
            mean, std = train.mean(axis=(0, 2)), train.std(axis=(0, 2))
            images = (written["train_x"][held].reshape(-1, 3, 32, 32) / 255.0 - mean[:, None, None]) / std[:, None, None]
            with torch.no_grad():
                logits = model(torch.from_numpy(images).float())
            labels = torch.from_numpy(written["train_y"][held])
            assert last["val_accuracy"] == pytest.approx(float((logits.argmax(1) == labels).double().mean()), abs=1e-12)
            assert last["val_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-4)


@pytest.mark.slow
def test_reports_choose_the_best_epoch_by_validation_accuracy_and_say_so(held_out_study):
    _data_dir, _written, study_dir = held_out_study
    runs = {arch: [read_history(str(study_dir / f"seed{s}" / arch))["epochs"] for s in (0, 1)]
            for arch in ("singlestage", "multistage")}
    study = json.loads((study_dir / "study.json").read_text())
    for arch, seeds in runs.items():
        at_best_val = [max(epochs, key=lambda e: (e["val_accuracy"], -e["epoch"]))["test_accuracy"] for epochs in seeds]
        final = study["nets"][arch]["final"]
        assert final["best_by_val_test_accuracy"]["values"] == at_best_val and "best_test_accuracy" not in final
        assert final["val_accuracy"]["values"] == [epochs[-1]["val_accuracy"] for epochs in seeds]
    assert "| test accuracy at each seed's best epoch by validation accuracy | " in (study_dir / "study.md").read_text()
    report = json.loads((study_dir / "seed0" / "report.json").read_text())
    best = max(runs["multistage"][0], key=lambda e: (e["val_accuracy"], -e["epoch"]))
    assert runs_of(report)["multistage"]["best_epoch"] == {"epoch": best["epoch"], "test_accuracy": best["test_accuracy"],
                                                          "chosen_by": "val_accuracy"}
    markdown = (study_dir / "seed0" / "report.md").read_text()
    assert "| test accuracy at the best epoch by validation accuracy | " in markdown
    assert "| validation accuracy | " in markdown


@pytest.mark.slow
def test_a_resume_keeps_the_split_and_refuses_another_by_name(held_out_study, tmp_path, capsys):
    data_dir, _written, study_dir = held_out_study
    run_dir = tmp_path / "run"
    shutil.copytree(study_dir / "seed0" / "multistage", run_dir)
    capsys.readouterr()
    assert run.main(["--resume", str(run_dir), "--val-split", "30"]) == 1
    assert capsys.readouterr().err == f"error: cannot resume {run_dir}: 'val_split' was 20, now 30\n"
    before = read_history(str(run_dir))
    assert run.main(["--resume", str(run_dir), "--epochs", "4", "--no-progress"]) == 0
    after = read_history(str(run_dir))
    assert after["val_images"] == before["val_images"] and after["epochs"][:3] == before["epochs"]
    assert len(after["epochs"]) == 4 and os.path.isfile(run_dir / "checkpoint_4.pt")
    # Another copy of the dataset would hold out other images: the resume is refused, not trained on them.
    history = json.loads((run_dir / "history.json").read_text())
    (run_dir / "history.json").write_text(json.dumps(dict(history, val_images="0123456789abcdef")))
    capsys.readouterr()
    assert run.main(["--resume", str(run_dir), "--epochs", "5", "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        f"error: cannot resume {run_dir}: its --val-split held out other training images than this data folder's "
        "would be (fingerprint 0123456789abcdef); resume with the data folder it trained on\n")
    assert len(read_history(str(run_dir))["epochs"]) == 4
