"""The one configuration type of a run, in two parts.

`Recipe`: what a run learns. Two runs with the same recipe learn the same thing, so the recipe is what a resume,
`--resume auto`, a comparison report and TensorBoard's HPARAMS compare or log.
`Setup`: where and how it runs (device, precision, files, logging). A run may resume with another setup.

Each field carries its command-line flag (help, parser, choices) in its metadata, so that run.py builds the
parser from these classes and `--help` shows each field's one true default.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from core.errors import UserError


def int_at_least(minimum: int):
    """An argparse type: a whole number >= `minimum`, with a message that says what was wrong."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and less than 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = _number(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number at least 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a positive finite number."""
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def flag(default, help: str, **argparse_options):
    """A field with its command-line flag: `help`, and argparse options such as `type`, `metavar`, `action`,
    `flag` (the option string, when it is not --<field-name>), `choices_from` or `type_from` (names run.py fills in)."""
    return field(default=default, metadata={"help": help, **argparse_options})


def flag_name(config_field: dataclasses.Field) -> str:
    """The option string that sets a field: its `flag=` where it has one, else --<field-name>."""
    return config_field.metadata.get("flag", "--" + config_field.name.replace("_", "-"))


# A comparison evaluates this many fixed training images each epoch unless --train-eval says otherwise.
BONUS_TRAIN_EVAL = 10_000


@dataclass(frozen=True)
class Recipe:
    """What a run learns: architecture, data, optimisation, seed."""

    arch: str = flag("multistage", "network to train: one of {architectures}, or your own as MODULE:CALLABLE or "
                                   "FILE.py:CALLABLE", type_from="architectures", metavar="ARCH")
    dataset: str = flag("cifar100", "dataset", choices_from="datasets")
    blocks_per_stage: int = flag(2, "residual blocks per stage of the multi-stage net (3 gives ResNet-20)", type=positive_int)
    epochs: int = flag(10, "training epochs", type=positive_int)
    batch_size: int = flag(128, "training batch size", type=positive_int)
    lr: float = flag(1e-3, "learning rate (under a schedule: its peak)", type=positive_float)
    seed: int = flag(0, "seed for weights and data order; a CPU run repeats bit for bit", type=non_negative_int)
    augment: bool = flag(False, "random crop (see --crop-padding) + horizontal flip, batched on the device (off: as the "
                                "assignment)", action="store_true")
    crop_padding: int = flag(4, "zero padding of --augment's random crop, in pixels: the crop shifts each image by up to "
                                "this much each way (0: flips only)", type=non_negative_int, metavar="PX")
    train_eval: int = flag(0, f"also evaluate N fixed training images in eval mode each epoch (--bonus: {BONUS_TRAIN_EVAL})",
                           type=non_negative_int, metavar="N")
    val_split: int = flag(0, "hold out N training images, class-balanced and the same for every seed and net, never "
                             "trained on: evaluated each epoch as val_*, and what the best epoch is chosen by (0: none, "
                             "as the assignment)", type=non_negative_int, metavar="N")
    label_smoothing: float = flag(0.0, "label smoothing of the training loss (0: plain cross-entropy, as the "
                                       "assignment; test and train-eval losses stay plain)", type=fraction, metavar="EPS")
    optimizer: str = flag("adam", "optimizer (adam: the assignment's)", choices_from="optimizers")
    momentum: float = flag(0.9, "SGD momentum (Adam does not use it)", type=fraction)
    nesterov: bool = flag(False, "Nesterov momentum for SGD (Adam does not use it)", action="store_true")
    weight_decay: float = flag(0.0, "L2 weight decay, added to the gradient by the optimizer (0: none, as the "
                                    "assignment)", type=non_negative_float)
    schedule: str = flag("constant", "learning-rate schedule, set every iteration: constant (the assignment's), "
                                     "onecycle (linear up to --lr over the warm-up, then linearly down to 0 at the "
                                     "end), cosine (cosine from --lr down to 0 after the warm-up)",
                         choices_from="schedules")
    warmup: float = flag(0.0, "warm-up epochs (fractions allowed): the rate rises linearly from 0 to --lr",
                         type=non_negative_float, metavar="EPOCHS")
    ema: float = flag(0.0, "also evaluate an exponential moving average of the weights, updated every iteration with "
                           "this decay (e.g. 0.999), as test_ema_* (0: off)", type=fraction, metavar="DECAY")
    tta: str = flag("none", "test-time augmentation, evaluated as test_flip_* beside the plain test numbers: flip = "
                            "the mean of the logits of each image and its mirror image", choices_from="tta")

    def check(self) -> None:
        """Refuse, in one line, a recipe that cannot run as written (run.py asks before new work loads data or
        writes anything; a resume refuses any changed field by name instead, and what a resume may change, more
        epochs under a constant rate, keeps a recipe runnable)."""
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise UserError("--nesterov needs --optimizer sgd with a --momentum above 0")
        if self.crop_padding != Recipe.crop_padding and not self.augment:
            raise UserError("--crop-padding needs --augment (without it no image is cropped)")
        if self.schedule != "constant" and self.warmup >= self.epochs:
            raise UserError(f"--warmup {self.warmup} is as long as the whole run ({self.epochs} epochs): the "
                            f"{self.schedule} schedule would never leave its warm-up")

    def differing_field(self, stored: dict, ignore: frozenset[str] = frozenset()) -> str | None:
        """The first field (outside `ignore`) in which this recipe differs from a stored one, or None; a field the
        stored dict lacks is not compared."""
        for name, value in dataclasses.asdict(self).items():
            if name not in ignore and name in stored and stored[name] != value:
                return name
        return None

    def difference(self, stored: dict, ignore: frozenset[str] = frozenset()) -> str | None:
        """`differing_field` in words: "'lr' was 0.001, now 0.01"; for the epochs, why they may not change."""
        name = self.differing_field(stored, ignore)
        if name is None:
            return None
        why = (f" (the {self.schedule} schedule is laid out over the epochs: train a new run for more)"
               if name == "epochs" and self.schedule != "constant" else "")
        return f"'{name}' was {stored[name]!r}, now {getattr(self, name)!r}{why}"

    def resumable(self) -> frozenset[str]:
        """The fields a resume may change: the epochs, unless the schedule is stretched over them."""
        return RESUMABLE if self.schedule == "constant" else frozenset()

    @classmethod
    def from_dict(cls, stored: dict) -> Recipe:
        """The recipe inside a stored configuration (history.json's "config"), other keys ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in stored.items() if key in names})


# Named recipes (`--recipe NAME`): values for the fields of how a net is trained. Flags given beside one win.
# "assignment" is every field's default: the course assignment's recipe, bit for bit.
PRESET_FIELDS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "warmup", "label_smoothing",
                 "augment", "crop_padding", "ema", "tta")
PRESETS = {
    "assignment": {f.name: f.default for f in dataclasses.fields(Recipe) if f.name in PRESET_FIELDS},
    # For runs of about 10 epochs: SGD with Nesterov momentum and weight decay (the published CIFAR ResNet recipe),
    # a one-cycle schedule to a high peak after one warm-up epoch, label smoothing, flips and 2-pixel translations,
    # test-time flips (docs/results.md: three seeds against the alternatives tried).
    "fast": {"optimizer": "sgd", "lr": 0.4, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
             "schedule": "onecycle", "warmup": 1.0, "label_smoothing": 0.1, "augment": True, "crop_padding": 2, "ema": 0.0,
             "tta": "flip"},
}
DEFAULT_PRESET = "assignment"


def matching_preset(recipe: Recipe) -> str | None:
    """The name of the preset whose values `recipe` has, or None for a recipe of its own."""
    return next((name for name, values in PRESETS.items()
                 if all(getattr(recipe, key) == value for key, value in values.items())), None)


# A resumed run may train for more epochs (unless its schedule is laid out over them: `Recipe.resumable`); a
# comparison compares architectures.
RESUMABLE = frozenset({"epochs"})
COMPARED = frozenset({"arch"})


@dataclass(frozen=True)
class Setup:
    """Where and how a run runs: device, precision, files, logging."""

    data_dir: str = flag("data", "folder holding cifar-100-python/ or cifar-10-batches-py/ (downloaded there if absent)")
    download: bool = flag(True, "never download; fail with a clear message if the dataset is missing",
                          flag="--no-download", action="store_false")
    device: str = flag("auto", "auto picks CUDA, then MPS, then CPU", choices_from="devices")
    amp: str = flag("auto", "autocast precision: auto = bf16 on CUDA GPUs of compute capability 8.0 and above and on "
                            "CPUs with native bf16 (AVX512-BF16/AMX), fp16 with loss scaling on CUDA 7.x (V100, T4), "
                            "fp32 elsewhere (with TF32 on CUDA 8.0 and above); bf16, fp16 or off force one (on, or "
                            "--amp alone: bf16); a resume keeps the run's", choices_from="amp_modes", nargs="?",
                    const="bf16", negation=("--no-amp", "off", "fp32 throughout (same as --amp off)"))
    compile: bool = flag(False, "torch.compile the network (pays off on GPUs; checkpoints store the plain module)",
                         action="store_true")
    deterministic: bool = flag(False, "deterministic kernels on CUDA, slower (CPU runs with a fixed seed repeat bit for "
                                      "bit anyway)", action="store_true")
    sync_bn: bool = flag(False, "under torchrun: BatchNorm statistics over all processes instead of per process",
                         action="store_true")
    parallel: str = flag("data", "under torchrun: data = each run's batches split over the processes (one big run); "
                                 "members = the runs of a --seeds/--bonus/--compare plan dealt to the processes, each "
                                 "trained alone on its own device: a GPU (LOCAL_RANK modulo the GPUs), or its share of the CPU "
                                 "cores unless OMP_NUM_THREADS is given to torchrun (studies of small nets)",
                         choices_from="parallel_modes")
    log_graph: bool = flag(False, "add the model graph to TensorBoard (a few seconds)", action="store_true")
    log_histograms: bool = flag(False, "weight and gradient histograms in TensorBoard every epoch (large event files)",
                                action="store_true")
    runs_root: str = flag("runs", "where run directories are created when --output-dir is not given")
    output_dir: str | None = flag(None, "the run directory itself (default: a new folder under RUNS_ROOT named after the "
                                        "dataset, the net, the seed and the time); never overwritten")
    progress: bool = flag(True, "no progress bar (it is also off when stdout is not a terminal)",
                          flag="--no-progress", action="store_false")


def config_dict(recipe: Recipe, setup: Setup) -> dict:
    """The flat configuration that history.json stores under "config": the recipe, then the setup."""
    return dataclasses.asdict(recipe) | dataclasses.asdict(setup)
