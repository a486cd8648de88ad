"""Building one run: model, optimizer, device-resident batches, trainer and evaluators with their metrics.

Nothing here writes a file or prints: engine/outputs.py attaches what writes, engine/session.py runs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler, TerminateOnNan
from ignite.handlers.param_scheduler import ParamScheduler
from ignite.metrics import Metric

import handlers.epoch_loss
import handlers.evaluation
import handlers.lr_schedule
from core.errors import UserError
from core.history_file import EMA, FLIP, TEST, TRAIN_EVAL, VAL, metric
from core.recipe import Recipe, Setup
from engine.data.datasets import CifarData, Split
from engine.data.loader import DeviceBatches, channel_stats, train_eval_indices
from engine.devices import resolve_device
from engine.precision import Precision, resolve_precision
from engine.steps import create_evaluator, create_trainer
from handlers.loss_scaling import LossScaling
from models import build_model


@dataclass
class Run:
    """The pieces of one run, built by `build_run`; engine/session.py and the benchmarks drive them."""

    recipe: Recipe
    setup: Setup
    device: torch.device
    precision: Precision
    data: CifarData
    model: torch.nn.Module  # the plain module: what checkpoints hold (not the DDP or compiled wrapper)
    optimizer: torch.optim.Optimizer
    trainer: Engine
    epoch_loss: Metric  # the accumulator behind the trainer's epoch-mean loss (a mid-epoch checkpoint saves it)
    train_batches: DeviceBatches
    evaluators: dict[str, Engine]  # TEST, and VAL, TRAIN_EVAL, TEST_EMA, TEST_FLIP, VAL_EMA... when the recipe asks
    eval_batches: dict[str, DeviceBatches]  # the same keys
    mean: torch.Tensor
    std: torch.Tensor
    lr_schedule: ParamScheduler | None = None  # None: the rate stays constant
    ema_model: torch.nn.Module | None = None  # the averaged weights (--ema)
    loss_scaling: LossScaling | None = None  # fp16 only: the GradScaler and its skipped steps

    @property
    def test_batches(self) -> DeviceBatches:
        return self.eval_batches[TEST]

    @property
    def log_every(self) -> int:
        return log_every(self.device)


def log_every(device: torch.device) -> int:
    """Iterations between looks at the loss (NaN check, TensorBoard, progress bar): on CPU a look is free, on a
    GPU it forces a host sync, so look less often."""
    return 1 if device.type == "cpu" else 50


def fine_to_coarse_map(data: CifarData) -> torch.Tensor | None:
    """fine class -> superclass, read off the labels of every split (CIFAR-100 only)."""
    if data.train.coarse_labels is None:
        return None
    lookup = torch.zeros(data.num_classes, dtype=torch.int64)
    for split in (data.train, data.test, data.val):
        if split is not None:
            lookup[split.labels] = split.coarse_labels
    return lookup


def uses_channels_last(device: torch.device) -> bool:
    """channels_last: measured 1.2-1.3x faster on CPU (oneDNN; bf16 needs it) and the tensor-core layout on CUDA."""
    return device.type in ("cpu", "cuda")


def model_on(device: torch.device, recipe: Recipe, num_classes: int) -> torch.nn.Module:
    """The recipe's network, freshly initialised, on `device` in the memory format its batches come in."""
    model = build_model(recipe.arch, num_classes, blocks_per_stage=recipe.blocks_per_stage)
    return model.to(device, memory_format=torch.channels_last if uses_channels_last(device) else torch.contiguous_format)


OPTIMIZERS = ("adam", "sgd")
TTA_MODES = ("none", "flip")  # flip: the mean of the logits of each test image and its mirror image


def create_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over the model's parameters: Adam (the assignment's), or SGD with momentum."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                               weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose one of {OPTIMIZERS}")


def configure_torch(recipe: Recipe, setup: Setup, device: torch.device, precision: Precision) -> None:
    """Process-wide torch settings of a run: the seed, deterministic or autotuned kernels, and on CUDA whether fp32
    convolutions and matmuls may use TF32. Each is set, on or off, for every run, so that nothing one run set
    carries over to the next run of the same process (a study, a comparison, the test suite)."""
    torch.manual_seed(recipe.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision.tf32
    if setup.deterministic:
        # Required by deterministic cuBLAS, read when cuBLAS starts; left set, it changes no result of a later run.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.are_deterministic_algorithms_enabled() != setup.deterministic:  # it imports inductor's config: 0.6 s
        torch.use_deterministic_algorithms(setup.deterministic)
    torch.backends.cudnn.deterministic = setup.deterministic
    # cuDNN's autotuner picks the fastest kernels; their choice may vary run to run.
    torch.backends.cudnn.benchmark = device.type == "cuda" and not setup.deterministic


def build_run(recipe: Recipe, setup: Setup, data: CifarData) -> Run:
    """Model, optimizer, device-resident batches, trainer and evaluators with their metrics; writes no files.
    `data` holds the recipe's validation split out already (load_data), before anything sees the training set.

    The trainer gets what every run needs whether or not it writes anything: the epoch's data order, the
    epoch-mean loss and (in one process) the NaN stop. The end-of-epoch passes are attached by engine/outputs.py.
    """
    if recipe.val_split != (len(data.val) if data.val is not None else 0):
        raise ValueError(f"build_run needs the data with --val-split {recipe.val_split} held out "
                         "(engine/session.py: load_data, engine/data/datasets.py: hold_out)")
    if recipe.batch_size > len(data.train):
        raise UserError(f"--batch-size {recipe.batch_size} is larger than the training set ({len(data.train)} images)")
    world_size, rank = idist.get_world_size(), idist.get_rank()
    if world_size > 1 and 0 < len(data.train) % recipe.batch_size < world_size:
        raise UserError(f"the last batch of an epoch ({len(data.train) % recipe.batch_size} images) is smaller than "
                        f"the number of processes ({world_size}); choose another --batch-size")
    device = resolve_device(setup.device)
    precision = resolve_precision(setup.amp, device, setup.deterministic)
    configure_torch(recipe, setup, device, precision)
    model = model_on(device, recipe, data.num_classes)
    network = model
    if world_size > 1:
        # DistributedDataParallel (BatchNorm per process unless --sync-bn); checkpoints keep the plain module.
        network = idist.auto_model(model, sync_bn=setup.sync_bn)
        model = network.module
    optimizer = idist.auto_optim(create_optimizer(recipe, model))
    if setup.compile:
        network = torch.compile(network)  # `model` stays the original module: it is what checkpoints hold
    fine_to_coarse = fine_to_coarse_map(data)

    mean, std = channel_stats(data.train.images)
    common = {"device": device, "batch_size": recipe.batch_size, "mean": mean, "std": std,
              "channels_last": uses_channels_last(device), "rank": rank, "world_size": world_size}
    train_batches = DeviceBatches.of_split(data.train, shuffle=True, seed=recipe.seed, augment=recipe.augment,
                                           crop_padding=recipe.crop_padding, **common)
    eval_batches = {TEST: DeviceBatches.of_split(data.test, **common)}
    if data.val is not None:  # the held-out training images, tested like the test set
        eval_batches[VAL] = DeviceBatches.of_split(data.val, **common)
    if recipe.train_eval > 0:
        index = train_eval_indices(len(data.train), recipe.train_eval, recipe.seed)  # the same for every net
        eval_batches[TRAIN_EVAL] = DeviceBatches.of_split(Split(data.train.images[index], data.train.labels[index]),
                                                          **common)
    loss_scaling = LossScaling(device) if precision.loss_scaling else None
    trainer = create_trainer(network, optimizer, device, precision, label_smoothing=recipe.label_smoothing,
                             loss_scaling=loss_scaling)
    lr_schedule = handlers.lr_schedule.attach(trainer, recipe, optimizer, len(train_batches))
    ema_model = None
    if recipe.ema:
        # Ignite's EMAHandler averages the weights after every optimizer step, ema = decay * ema + (1 - decay) *
        # weights, BatchNorm statistics included (its momentum is the new value's weight); the averaged copy stays
        # in eval mode: the checkpoint saves it, an evaluator tests it.
        ema = EMAHandler(model, momentum=1.0 - recipe.ema, handle_buffers="update")
        ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
        ema_model = ema.ema_model

    # The test (and validation) set again: through the averaged weights, and with each image's mirror.
    variants = {EMA: ema_model} if ema_model is not None else {}
    if recipe.tta == "flip":
        variants[FLIP] = network
    elif recipe.tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {recipe.tta!r}; choose one of {TTA_MODES}")
    tested = {split: network for split in eval_batches}
    for variant, variant_model in variants.items():
        for base in [split for split in (TEST, VAL) if split in eval_batches]:
            tested[metric(base, variant)] = variant_model
            eval_batches[metric(base, variant)] = eval_batches[base]
    evaluators = {}
    for split, split_model in tested.items():
        evaluators[split] = create_evaluator(split_model, device, precision, flip=split.endswith("_" + FLIP))
        by_class = fine_to_coarse if split in (TEST, VAL) else None  # the superclass accuracy of CIFAR-100
        handlers.evaluation.attach_metrics(evaluators[split], handlers.evaluation.classification_metrics(
            device, by_class, data.num_coarse))

    # Ignite's engine logger would add its own "terminating due to exception" line to our one-line errors;
    # real failures still raise with a traceback.
    trainer.logger.disabled = True
    trainer.add_event_handler(Events.EPOCH_STARTED, _select_epoch_data, train_batches)
    if world_size == 1:
        stop_on_nan = TerminateOnNan(lambda out: out["loss"])
        stop_on_nan.logger.disabled = True  # the session reports the stop in one line of its own
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=log_every(device)), stop_on_nan)
    # Under torchrun the NaN check is agreed on by all processes (handlers/interrupts.py), so that they all
    # stop at the same iteration instead of waiting on each other.
    epoch_loss = handlers.epoch_loss.attach(trainer, device)
    if loss_scaling is not None:
        loss_scaling.attach(trainer)  # at each epoch's end before the outputs: a collapsed epoch is never saved
    return Run(recipe=recipe, setup=setup, device=device, precision=precision, data=data, model=model,
               optimizer=optimizer, trainer=trainer, epoch_loss=epoch_loss, train_batches=train_batches,
               evaluators=evaluators, eval_batches=eval_batches, mean=mean, std=std, lr_schedule=lr_schedule,
               ema_model=ema_model, loss_scaling=loss_scaling)


def _select_epoch_data(trainer: Engine, batches: DeviceBatches) -> None:
    # Non-zero only when resuming in the middle of an epoch: skip the batches already trained on.
    done = trainer.state.iteration - (trainer.state.epoch - 1) * len(batches)
    batches.set_epoch(trainer.state.epoch, start_batch=done)
