"""history.json: the one reader and writer of the file, and the names of the per-epoch record's fields.

A record is a plain dict (it is JSON, and the set of metrics depends on the run), but every key that crosses
modules is named here, and every number derived from a record (the generalisation gap) is computed here once.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from core.errors import UserError
from core.recipe import Recipe

HISTORY_FILE = "history.json"

# The top level: a header written at the start of a run (engine/outputs.run_header), then STATUS, EPOCHS (one record
# each) and FINAL (the last record, with EPOCHS_TRAINED), which handlers/history.History adds.
CONFIG, PRESET, VERSIONS, DEVICE, AMP, AMP_DTYPE, TF32 = "config", "preset", "versions", "device", "amp", "amp_dtype", "tf32"
# The machine (engine/devices.machine): trained numbers depend on it. ONEDNN_ISA: the CPU kernels' instruction-set level.
DEVICE_MODEL, THREADS, ONEDNN_ISA = "device_model", "threads", "onednn_isa"
PARAMETERS, NORMALIZATION, CLASS_NAMES = "parameters", "normalization", "class_names"
NUM_TRAIN = "num_train"  # the training images a run trained on (after --val-split held its images out)
VAL_IMAGES = "val_images"  # --val-split: a fingerprint of the held-out images' positions (datasets.positions_hash)
# A user's own network (models/user_nets.py): {"spec": as given, "file": the file it resolved to, "sha256": its hash}.
NETWORK = "network"
STATUS, EPOCHS, FINAL, EPOCHS_TRAINED = "status", "epochs", "final", "epochs_trained"
RUNNING, COMPLETED = "running", "completed"  # the status while a run trains, and once it finished; else why it ended

# Per-epoch record fields. Evaluation metrics are "<split>_<metric>" for the splits below.
EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
TRAIN_SECONDS = "train_seconds"  # = metric("train", SECONDS)
IMAGES_PER_S = "images_per_s"
# fp16 runs only (handlers/loss_scaling.py): optimizer steps skipped for an overflow, and the loss scale, at the end of
# each epoch.
SKIPPED_STEPS, LOSS_SCALE = "skipped_steps", "loss_scale"
LOSS_SCALING_KEYS = (SKIPPED_STEPS, LOSS_SCALE)
TEST, TRAIN_EVAL, VAL = "test", "train_eval", "val"  # VAL: the training images --val-split holds out
# The test set again, for --ema (the averaged weights) and --tta flip (the mean over each image and its mirror); the
# validation split the same way.
EMA, FLIP = "ema", "flip"
TEST_EMA, TEST_FLIP = f"{TEST}_{EMA}", f"{TEST}_{FLIP}"
ACCURACY, TOP5, LOSS, SUPERCLASS_ACCURACY = "accuracy", "top5", "loss", "superclass_accuracy"


def metric(split: str, name: str) -> str:
    """The record key of an evaluation metric, e.g. metric(TEST, ACCURACY) == "test_accuracy"."""
    return f"{split}_{name}"


TEST_ACCURACY, TEST_TOP5, TEST_LOSS = metric(TEST, ACCURACY), metric(TEST, TOP5), metric(TEST, LOSS)
TRAIN_EVAL_ACCURACY, TRAIN_EVAL_LOSS = metric(TRAIN_EVAL, ACCURACY), metric(TRAIN_EVAL, LOSS)
VAL_ACCURACY, VAL_LOSS = metric(VAL, ACCURACY), metric(VAL, LOSS)
GAP_ACCURACY, GAP_LOSS = "gap_accuracy", "gap_loss"


SECONDS = "seconds"  # an evaluation pass's duration: metric(split, SECONDS)


def is_seconds(key: str) -> bool:
    """Whether a record key holds a duration (`train_seconds`, `test_seconds`, ...)."""
    return key.endswith("_" + SECONDS)


def is_loss(key: str) -> bool:
    """Whether a record key (or a difference named after one) holds a loss: lower is better, shown as a plain
    number rather than a percentage."""
    return key.endswith(LOSS)


def is_result(key: str) -> bool:
    """Whether a record key holds a trained result (a loss, an accuracy), not the epoch, a timing or fp16's
    bookkeeping."""
    return key not in (EPOCH, IMAGES_PER_S, *LOSS_SCALING_KEYS) and not is_seconds(key)


def has_train_eval(record: dict) -> bool:
    return TRAIN_EVAL_ACCURACY in record


def gap_accuracy(record: dict) -> float:
    """Generalisation gap in accuracy: train-eval accuracy minus test accuracy (train-eval runs in eval mode on
    fixed training images, so it compares like with like)."""
    return record[TRAIN_EVAL_ACCURACY] - record[TEST_ACCURACY]


def gap_loss(record: dict) -> float:
    """Generalisation gap in loss: test loss minus train-eval loss."""
    return record[TEST_LOSS] - record[TRAIN_EVAL_LOSS]


def precision_in_words(amp_dtype: str | None) -> str:
    """A run's recorded `amp_dtype` in words: 'bf16 autocast', 'fp16 autocast' or 'fp32'."""
    return {"bfloat16": "bf16 autocast", "float16": "fp16 autocast"}.get(amp_dtype, "fp32")


# The test accuracy at the best epoch: reported beside the last epoch's numbers, never instead of them. The epoch is
# chosen by validation accuracy where the run held images out (--val-split), else on the test set itself, which
# makes the number optimistic, and the label says so.
BEST_TEST_ACCURACY = "best_test_accuracy"
BEST_BY_VAL_TEST_ACCURACY = "best_by_val_test_accuracy"


# Every record key in words, as the rows of report tables name them ("test accuracy, with test-time flips").
_SPLITS = {TEST: "test", TRAIN_EVAL: "train-eval", TEST_EMA: "test", TEST_FLIP: "test", VAL: "validation",
           metric(VAL, EMA): "validation", metric(VAL, FLIP): "validation"}
_SPLIT_SUFFIXES = {TEST_EMA: ", EMA weights", TEST_FLIP: ", with test-time flips", metric(VAL, EMA): ", EMA weights",
                   metric(VAL, FLIP): ", with test-time flips"}
# Every evaluation metric (handlers/evaluation.classification_metrics measures it): its words in report tables, and its
# label on the epoch line for the test split. A new metric is an entry here and one there.
METRICS = {ACCURACY: ("accuracy", "test acc"), TOP5: ("top-5", "top-5"), LOSS: ("loss", "test loss"),
           SUPERCLASS_ACCURACY: ("superclass accuracy", "superclass")}


def record_label(key: str) -> str:
    """A record key in words, as the rows of report tables name it ("test accuracy, with test-time flips")."""
    fixed = {TRAIN_LOSS: "mean train loss", GAP_ACCURACY: "gap: train-eval - test accuracy",
             BEST_TEST_ACCURACY: "test accuracy at each seed's best epoch (not the last), chosen on the test set (optimistic)",
             BEST_BY_VAL_TEST_ACCURACY: "test accuracy at each seed's best epoch by validation accuracy"}
    words = {metric(split, name): f"{word} {words}{_SPLIT_SUFFIXES.get(split, '')}"
             for split, word in _SPLITS.items() for name, (words, _line) in METRICS.items()}
    return {**fixed, **words}.get(key, key)


def chosen_by(epochs: list[dict]) -> str:
    """What the best epoch is chosen by: validation accuracy where the records hold it, else test accuracy."""
    return VAL_ACCURACY if VAL_ACCURACY in epochs[-1] else TEST_ACCURACY


def best_epoch(epochs: list[dict]) -> dict:
    """The record with the highest accuracy by `chosen_by` (the earliest of equals)."""
    key = chosen_by(epochs)
    return max(epochs, key=lambda record: (record[key], -record[EPOCH]))


# Every file written atomically goes first to `<its name>.tmp`, then is renamed: a kill leaves at most such a file.
TEMP_SUFFIX = ".tmp"


def temp_path(path: str) -> str:
    """Where an atomic write of `path` writes before it renames."""
    return path + TEMP_SUFFIX


def write_json(path: str, obj) -> None:
    """Write `obj` as indented JSON atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = temp_path(path)
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    except OSError as exc:
        exc.filename = exc.filename or path  # a failed write names no file; the caller's message should
        raise
    os.replace(tmp, path)


@dataclass(frozen=True)
class RunHistory:
    """A run's history.json as read back: its directory and the parsed file, with named accessors."""

    run_dir: str
    data: dict

    @property
    def config(self) -> dict:
        return self.data[CONFIG]

    @property
    def recipe(self) -> Recipe:
        return Recipe.from_dict(self.config)

    @property
    def status(self) -> str | None:
        return self.data.get(STATUS)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def epochs(self) -> list[dict]:
        return self.data[EPOCHS]

    @property
    def amp_dtype(self) -> str | None:
        """The autocast dtype the run trained in ("bfloat16", "float16"; None for fp32 or where not recorded)."""
        return self.data.get(AMP_DTYPE)

    @property
    def precision(self) -> str | None:
        """'bf16 autocast', 'fp16 autocast' or 'fp32'; None for a history that recorded no `amp_dtype`."""
        return precision_in_words(self.amp_dtype) if AMP_DTYPE in self.data else None

    @property
    def machine(self) -> dict | None:
        """{DEVICE_MODEL, THREADS, and on a CPU ONEDNN_ISA} the run trained on, as far as it recorded them; None where
        it recorded none."""
        if DEVICE_MODEL not in self.data:
            return None
        return {key: self.data[key] for key in (DEVICE_MODEL, THREADS, ONEDNN_ISA) if key in self.data}

    @property
    def normalization(self) -> dict:
        """The per-channel mean and std the model was trained with."""
        return self.data[NORMALIZATION]

    @property
    def network(self) -> dict | None:
        """The user's network the run trained (`NETWORK`), or None for one of the registry."""
        return self.data.get(NETWORK)

    @property
    def num_classes(self) -> int:
        return len(self.data[CLASS_NAMES])

    @property
    def train_eval_images(self) -> int:
        """How many training images train-eval measured: --train-eval N, or all of them where there were fewer."""
        asked = self.recipe.train_eval
        return min(asked, self.data.get(NUM_TRAIN, asked))


def read_history(run_dir: str) -> RunHistory:
    """history.json of `run_dir`; a one-line UserError if it is missing, unreadable or not a run's history."""
    return read_history_file(os.path.join(run_dir, HISTORY_FILE))


def read_history_file(path: str) -> RunHistory:
    """A history file by its path (history.json, or a copy kept elsewhere); `run_dir` is its folder."""
    run_dir = os.path.dirname(path) or "."
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        if os.path.basename(path) == HISTORY_FILE:
            raise UserError(f"{run_dir} is not a run directory: it has no {HISTORY_FILE}") from None
        raise UserError(f"{path}: no such history file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(CONFIG), dict) or not isinstance(data.get(EPOCHS), list):
        raise UserError(f"cannot read {path}: not a run's history (no 'config' and 'epochs')")
    return RunHistory(run_dir, data)
