"""One training run, end to end: data, model, engines, handlers, history. The bonus reuses it per architecture."""
from __future__ import annotations

import dataclasses
import errno
import os
import platform
import sys
from dataclasses import dataclass
from typing import Callable

import ignite
import ignite.distributed as idist
import torch
import torchvision
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, TerminateOnNan
from ignite.handlers.tensorboard_logger import TensorboardLogger
from ignite.metrics import Metric

import handlers.checkpointing
import handlers.epoch_loss
import handlers.evaluation
import handlers.progress
import handlers.sample_dump
import handlers.tensorboard_logging
import handlers.tensorboard_summary
from handlers.interrupts import GracefulStop
from engine.datasets import DATASETS, CifarData, channel_stats, load_cifar
from engine.devices import resolve_device
from engine.precision import Precision, resolve_precision
from engine.errors import UserError
from engine.loader import DeviceBatches
from engine.resume import RunIdentity, check_resumable, find_auto_resume, latest_checkpoint, load_checkpoint
from engine.rundir import create_run_dir, default_run_dir
from engine.training import create_evaluator, create_trainer
from handlers.history import History
from models import build_model, count_parameters


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in history.json."""

    arch: str = "multistage"
    dataset: str = "cifar100"
    data_dir: str = "data"
    download: bool = True
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    augment: bool = False
    blocks_per_stage: int = 2
    device: str = "auto"
    amp: str = "auto"  # bf16 autocast: "auto" (CUDA and CPUs with native bf16), "on" or "off"
    runs_root: str = "runs"
    output_dir: str | None = None
    progress: bool = True
    train_eval: int = 0  # size of the fixed training subset evaluated in eval mode each epoch (0: off)
    deterministic: bool = False  # deterministic kernels on CUDA (CPU runs repeat bit for bit anyway)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over all processes
    dump_samples: str | None = None  # debugging: per-process sample indices and losses, per epoch
    log_graph: bool = False  # TensorBoard model graph (a trace costs a few seconds)
    log_histograms: bool = False  # TensorBoard weight/gradient histograms every epoch (large files)
    compile: bool = False  # torch.compile the network the engines call (checkpoints keep the plain module)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class Interrupted(UserError):
    """Stopped by SIGINT/SIGTERM after writing a checkpoint; `exit_code` is 130 or 143."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


def load_data(config: TrainConfig) -> CifarData:
    """Load (and if allowed, download) the configured dataset."""
    return load_cifar(DATASETS[config.dataset], config.data_dir, download=config.download)


def library_versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pytorch-ignite": ignite.__version__}


def fine_to_coarse_map(data: CifarData) -> torch.Tensor | None:
    """fine class -> superclass, read off the labels of both splits (CIFAR-100 only)."""
    if data.train.coarse_labels is None:
        return None
    lookup = torch.zeros(data.num_classes, dtype=torch.int64)
    for split in (data.train, data.test):
        lookup[split.labels] = split.coarse_labels
    return lookup


@dataclass
class Run:
    """The pieces of one run, built by `build_run`; `train` and the benchmarks drive them."""

    config: TrainConfig
    device: torch.device
    precision: Precision
    data: CifarData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainer: Engine
    evaluators: dict[str, Engine]  # "test", and "train_eval" when configured
    train_batches: DeviceBatches
    test_batches: DeviceBatches
    mean: torch.Tensor
    std: torch.Tensor
    epoch_loss: Metric | None = None  # the accumulator behind trainer.state.metrics["loss_epoch"]

    @property
    def log_every(self) -> int:
        # On CPU a per-iteration look at the loss is free; on a GPU it forces a sync, so look less often.
        return 1 if self.device.type == "cpu" else 50


def build_run(config: TrainConfig, data: CifarData) -> Run:
    """Model, optimizer, device-resident batches, trainer and evaluator with their metrics; writes no files."""
    if config.batch_size > len(data.train):
        raise UserError(f"--batch-size {config.batch_size} is larger than the training set ({len(data.train)} images)")
    device = resolve_device(config.device)
    precision = resolve_precision(config.amp, device)
    torch.manual_seed(config.seed)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # picks the fastest kernels; their choice may vary run to run
    # channels_last: measured here 1.2-1.3x faster on CPU (oneDNN) and the tensor-core layout on CUDA.
    channels_last = device.type in ("cpu", "cuda")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(config.arch, data.num_classes, blocks_per_stage=config.blocks_per_stage)
    model = model.to(device, memory_format=memory_format)
    world_size, rank = idist.get_world_size(), idist.get_rank()
    network = model
    if world_size > 1:
        # DistributedDataParallel (BatchNorm per process unless --sync-bn); checkpoints keep the plain module.
        network = idist.auto_model(model, sync_bn=config.sync_bn)
        model = network.module
    optimizer = idist.auto_optim(torch.optim.Adam(model.parameters(), lr=config.lr))
    if config.compile:
        network = torch.compile(network)  # `model` stays the original module: it is what checkpoints hold

    mean, std = channel_stats(data.train.images)
    shard = {"channels_last": channels_last, "rank": rank, "world_size": world_size}
    if world_size > 1 and len(data.train) % config.batch_size and len(data.train) % config.batch_size < world_size:
        raise UserError(f"the last batch of an epoch ({len(data.train) % config.batch_size} images) is smaller than "
                        f"the number of processes ({world_size}); choose another --batch-size")
    train_batches = DeviceBatches(
        data.train.images.to(device), data.train.labels.to(device), config.batch_size, mean, std,
        shuffle=True, seed=config.seed, augment=config.augment, **shard,
    )
    test_batches = DeviceBatches(data.test.images.to(device), data.test.labels.to(device), config.batch_size, mean, std, **shard)
    trainer = create_trainer(network, optimizer, device, precision)
    evaluators = {"test": create_evaluator(network, device, precision)}
    # Ignite's engine logger would add its own "terminating due to exception" line to our one-line errors;
    # real failures still raise with a traceback.
    trainer.logger.disabled = True
    run = Run(config, device, precision, data, model, optimizer, trainer, evaluators, train_batches, test_batches, mean, std)
    trainer.add_event_handler(Events.EPOCH_STARTED, _select_epoch_data, train_batches)
    if world_size == 1:
        stop_on_nan = TerminateOnNan(lambda out: out["loss"])
        stop_on_nan.logger.disabled = True  # train() reports the stop in one line of its own
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=run.log_every), stop_on_nan)
    # Under torchrun the NaN check is agreed on by all processes (see handlers/interrupts.py), so that
    # they all stop at the same iteration instead of waiting on each other.
    run.epoch_loss = handlers.epoch_loss.attach(trainer, device)
    if config.dump_samples:
        handlers.sample_dump.attach(trainer, train_batches, config.dump_samples)
    fine_to_coarse = fine_to_coarse_map(data)
    handlers.evaluation.attach(
        trainer, evaluators["test"], test_batches, handlers.evaluation.classification_metrics(device, fine_to_coarse)
    )
    if config.train_eval > 0:
        index = handlers.evaluation.train_eval_indices(len(data.train), config.train_eval, config.seed).to(device)
        train_eval_batches = DeviceBatches(
            train_batches.images[index], train_batches.labels[index], config.batch_size, mean, std, **shard
        )
        evaluators["train_eval"] = create_evaluator(network, device, precision)
        handlers.evaluation.attach(
            trainer, evaluators["train_eval"], train_eval_batches, handlers.evaluation.classification_metrics(device)
        )
    return run


def _select_epoch_data(trainer: Engine, batches: DeviceBatches) -> None:
    # Non-zero only when resuming in the middle of an epoch: skip the batches already trained on.
    done = trainer.state.iteration - (trainer.state.epoch - 1) * len(batches)
    batches.set_epoch(trainer.state.epoch, start_batch=done)


def run_header(run: Run, run_dir: str) -> dict:
    """What history.json says about the run before its first epoch."""
    return {
        "config": dataclasses.asdict(run.config) | {"output_dir": run_dir},
        "versions": library_versions(),
        "device": str(run.device),
        "amp": run.precision.amp,
        "amp_dtype": run.precision.dtype_name,
        "world_size": idist.get_world_size(),
        "backend": idist.backend(),
        "global_batch_size": run.config.batch_size,
        "per_process_batch_size": run.config.batch_size // idist.get_world_size(),
        "num_train": len(run.data.train),
        "num_test": len(run.data.test),
        "parameters": count_parameters(run.model),
        "normalization": {"mean": run.mean.tolist(), "std": run.std.tolist()},
        "class_names": run.data.class_names,
    }


@dataclass
class Outputs:
    """What `attach_outputs` set up: the history, what a checkpoint holds, and the TensorBoard logger."""

    history: History
    to_save: dict
    tb_logger: TensorboardLogger | None

    def close(self) -> None:
        if self.tb_logger is not None:
            self.tb_logger.close()


def attach_outputs(run: Run, run_dir: str, progress: bool, purge_step: int | None = None) -> Outputs:
    """History, checkpoints, TensorBoard and console output (files and prints on rank 0 only).

    The order of the EPOCH_COMPLETED handlers matters: history record, TensorBoard iteration flush,
    checkpoint, TensorBoard epoch points, console line (see handlers/tensorboard_logging.py).
    """
    history = History(os.path.join(run_dir, "history.json"), run_header(run, run_dir), len(run.data.train))
    # "identity" first: a checkpoint of another run is refused before any weights are loaded.
    to_save = {"identity": RunIdentity(run.config), "model": run.model, "optimizer": run.optimizer,
               "trainer": run.trainer, "history": history, "epoch_loss": run.epoch_loss}
    rank0 = idist.get_rank() == 0
    tb_logger = None
    if rank0:
        history.attach(run.trainer, run.evaluators)
        tb_logger = handlers.tensorboard_logging.attach_iteration_logging(
            run.trainer, run.optimizer, run_dir, run.log_every, purge_step
        )
    # On every process: saving gathers the epoch-loss sums of all of them; only rank 0 writes the file.
    handlers.checkpointing.attach(run.trainer, to_save, run_dir)
    if rank0:
        handlers.tensorboard_logging.attach_epoch_logging(run.trainer, tb_logger, history)
        handlers.progress.attach(run.trainer, history, show_bar=progress, log_every=run.log_every)
        attach_tensorboard_summary(run, tb_logger, history, fresh=purge_step is None)
    return Outputs(history, to_save, tb_logger)


def attach_tensorboard_summary(run: Run, tb_logger: TensorboardLogger, history: History, fresh: bool) -> None:
    """Configuration text, HPARAMS, misclassified images, and on request graph and histograms."""
    if fresh:  # a resumed run already has its start-of-run summaries
        handlers.tensorboard_summary.write_start(tb_logger, history)
        if run.config.log_graph:
            example = run.test_batches.normalize(run.data.test.images[:1].to(run.device))
            handlers.tensorboard_summary.add_graph(tb_logger, run.model, example)
    run.trainer.add_event_handler(
        Events.COMPLETED(event_filter=lambda engine, _: not engine.should_terminate),
        lambda: handlers.tensorboard_summary.write_final(tb_logger, history),
    )
    handlers.tensorboard_summary.attach_misclassified(
        run.trainer, run.evaluators["test"], run.test_batches, tb_logger, run.data.class_names
    )
    if run.config.log_histograms:
        handlers.tensorboard_summary.attach_histograms(run.trainer, tb_logger, run.model)


def resolve_resume(config: TrainConfig, resume: str, epoch_length: int) -> tuple[str, str]:
    """`--resume auto | RUN_DIR | CHECKPOINT` -> (run directory, checkpoint file)."""
    if resume == "auto":
        run_dir = find_auto_resume(config, config.runs_root)
        if run_dir is None:
            raise UserError(f"--resume auto: no run under {config.runs_root}/ with this configuration has a checkpoint")
    elif os.path.isfile(resume):
        return os.path.dirname(resume) or ".", resume
    elif os.path.isdir(resume):
        run_dir = resume
    else:
        raise UserError(f"cannot resume: {resume} is neither a run directory nor a checkpoint file")
    checkpoint = latest_checkpoint(run_dir, epoch_length)
    if checkpoint is None:
        raise UserError(f"cannot resume: {run_dir} holds no checkpoint (checkpoint_<epoch>.pt)")
    return run_dir, checkpoint


def _restore_epoch_accumulator_once(run: Run, state: dict) -> None:
    """After a mid-epoch resume, the epoch-loss accumulator is reset on EPOCH_STARTED like every epoch;
    put the saved partial sums back right after that, once."""

    def restore(engine: Engine) -> None:
        run.epoch_loss.load_state_dict(state)
        engine.remove_event_handler(restore, Events.EPOCH_STARTED)

    run.trainer.add_event_handler(Events.EPOCH_STARTED, restore)


def train(
    config: TrainConfig,
    data: CifarData | None = None,
    run_dir: str | None = None,
    resume: str | None = None,
    on_built: Callable[[Run], None] | None = None,
) -> dict:
    """Train `config.arch` on `config.dataset`, test after every epoch, and return the history dict.

    `data` may be passed in to share one loaded dataset between runs; `run_dir` overrides the configured
    one. `resume` ("auto", a run directory or a checkpoint file) continues a run from its checkpoint.
    `on_built` may attach further handlers (the bonus attaches its comparison report) before training.
    """
    data = data or load_data(config)
    run = build_run(config, data)
    rank0 = idist.get_rank() == 0
    if rank0:
        # The first line says what the run computes in; a forced bf16 where it is slow also warns.
        print(f"Device: {run.device}, {run.precision.describe()}", flush=True)
        if run.precision.warning:
            print(run.precision.warning, file=sys.stderr, flush=True)
    checkpoint = None
    if resume is not None:
        run_dir, checkpoint = resolve_resume(config, resume, len(run.train_batches))
        check_resumable(config, run_dir)
    run_dir = run_dir or config.output_dir or default_run_dir(
        config.runs_root, config.dataset, config.arch, config.blocks_per_stage, config.seed
    )
    if rank0 and checkpoint is None:
        create_run_dir(run_dir)
    state = load_checkpoint(checkpoint, run.device) if checkpoint else None
    purge_step = state["trainer"]["iteration"] + 1 if state else None
    outputs = attach_outputs(run, run_dir, config.progress, purge_step)
    if state is not None:
        to_load = {key: obj for key, obj in outputs.to_save.items() if key != "epoch_loss"}
        Checkpoint.load_objects(to_load=to_load, checkpoint=state)
        if run.trainer.state.iteration % len(run.train_batches):
            _restore_epoch_accumulator_once(run, state["epoch_loss"])
        if rank0:
            handlers.tensorboard_logging.complete_after_resume(outputs.tb_logger, run_dir, outputs.history)
    if rank0:
        resumed = (f" (resuming from {checkpoint}: {run.trainer.state.epoch} epochs done, at iteration "
                   f"{run.trainer.state.iteration})" if checkpoint else "")
        print(f"Run directory: {run_dir}{resumed}", flush=True)
    stop = GracefulStop()
    stop.attach(run.trainer, lambda engine: handlers.checkpointing.save_interrupted(engine, outputs.to_save, run_dir))
    diverged = []
    run.trainer.add_event_handler(Events.TERMINATE, lambda engine: stop.signum is None and diverged.append(True))
    if on_built is not None:
        on_built(run)
    try:
        if run.trainer.state.iteration < config.epochs * len(run.train_batches):
            run.trainer.run(run.train_batches, max_epochs=config.epochs)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"no space left on the device while writing to {run_dir}; the last complete "
                            "checkpoint there is intact: free some space and resume with --resume") from None
        raise UserError(f"cannot write to {run_dir}: {exc.strerror or exc}") from None
    finally:
        stop.restore()
        outputs.close()
    at = f"epoch {run.trainer.state.epoch}, iteration {run.trainer.state.iteration}"
    if stop.signum is not None:
        if rank0:
            outputs.history.finish(f"interrupted at {at}")
        raise Interrupted(stop.exit_code, f"interrupted at {at}; checkpoint written. "
                          f"Continue with: python run.py --resume {run_dir}")
    if diverged:
        if rank0:
            outputs.history.finish(f"stopped: loss became NaN or infinite at {at}")
        raise TrainingDiverged(
            f"training stopped: the loss became NaN or infinite at {at}; the last good checkpoint is in {run_dir}"
        )
    if rank0:
        print(f"Final test accuracy {100 * outputs.history.epochs[-1]['test_accuracy']:.2f}% after {config.epochs} "
              f"epochs; run directory: {run_dir}", flush=True)
    return outputs.history.as_dict()
