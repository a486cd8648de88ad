"""What a run writes and prints: history.json, checkpoints, TensorBoard and the console, attached to a built run.

All of it happens on rank 0 only, except that every process joins the checkpoint (saving gathers the
epoch-loss sums of all processes) and runs the evaluation passes (their metrics are all-reduced).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
from dataclasses import dataclass

import ignite
import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.handlers.tensorboard_logger import TensorboardLogger

import handlers.checkpointing
import handlers.evaluation
import handlers.progress
import handlers.tensorboard_logging
import handlers.tensorboard_summary
from core.history_file import (AMP, AMP_DTYPE, CLASS_NAMES, CONFIG, DEVICE, NETWORK, NORMALIZATION, NUM_TRAIN,
                               PARAMETERS, PRESET, TEST, TF32, VAL_IMAGES, VERSIONS)
from core.recipe import config_dict, matching_preset
from engine.build import Run
from engine.data.datasets import positions_hash
from engine.devices import machine
from handlers.history import History
from models import count_parameters, user_nets


def library_versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision_version(), "pytorch-ignite": ignite.__version__}


def torchvision_version() -> str:
    """torchvision's `__version__`, read from its version.py: importing torchvision (its models and ops) would cost
    every run a second at start-up, for one string."""
    spec = importlib.util.find_spec("torchvision")
    try:
        with open(os.path.join(spec.submodule_search_locations[0], "version.py")) as f:
            return re.search(r"""^__version__ = ['"](.+)['"]""", f.read(), re.M).group(1)
    except (AttributeError, IndexError, OSError, TypeError):
        return importlib.metadata.version("torchvision")


def run_header(run: Run, run_dir: str) -> dict:
    """What history.json says about the run before its first epoch."""
    recipe, setup = run.recipe, run.setup
    computed_on = machine(run.device)  # the device's model and torch's thread count: trained numbers depend on both
    network = {NETWORK: user_nets.load(recipe.arch).record()} if user_nets.is_spec(recipe.arch) else {}  # a user's own
    return {
        CONFIG: config_dict(recipe, setup) | {"output_dir": run_dir},
        PRESET: matching_preset(recipe),  # the named recipe (--recipe) whose values the config has, or None
        VERSIONS: library_versions(),
        DEVICE: str(run.device),
        **computed_on,
        AMP: run.precision.amp,
        AMP_DTYPE: run.precision.dtype_name,
        TF32: run.precision.tf32,
        "world_size": idist.get_world_size(),
        "backend": idist.backend(),
        "global_batch_size": recipe.batch_size,
        "per_process_batch_size": recipe.batch_size // idist.get_world_size(),
        NUM_TRAIN: len(run.data.train),
        "num_test": len(run.data.test),
        **({"num_val": len(run.data.val), VAL_IMAGES: positions_hash(run.data.val_positions)} if run.data.val else {}),
        PARAMETERS: count_parameters(run.model),
        NORMALIZATION: {"mean": run.mean.tolist(), "std": run.std.tolist()},
        CLASS_NAMES: run.data.class_names,
        **network,
    }


@dataclass
class Outputs:
    """What `attach_outputs` set up: the history, what a checkpoint holds (saved and resumed alike), and the
    TensorBoard logger (None off rank 0)."""

    history: History
    to_save: dict
    tb_logger: TensorboardLogger | None

    def close(self) -> None:
        if self.tb_logger is not None:
            self.tb_logger.close()


def attach_outputs(run: Run, run_dir: str, state: dict | None = None) -> Outputs:
    """Attach everything that writes or prints. `state`: the checkpoint a resume continues from, loaded here into the
    objects of the `to_save` dict that writes checkpoints (TensorBoard then hides the points written after it).

    The end of every epoch runs these handlers, registered below in this order, which resume depends on:
      1. evaluation passes (test, train-eval, EMA, flips) their metrics feed the record
      2. the history record                               history.json rewritten
      3. TensorBoard: flush the epoch's iteration points  before 4: a resume purges points past its checkpoint
      4. the checkpoint (every process joins)             a non-finite epoch is never saved
      5. TensorBoard: the epoch's points                  after 4: only epochs with a checkpoint have points
      6. TensorBoard: histograms (--log-histograms)
      7. the console line                                 the user sees an epoch once it is on disk
    """
    trainer, rank0 = run.trainer, idist.get_rank() == 0
    header = run_header(run, run_dir)
    history = History(run_dir, header, len(run.data.train))
    if rank0 and state is None:  # a new run says what it is (recipe, data, precision) before it trains
        history.save()
    # "identity" first: a checkpoint of another run is refused before any weights are loaded.
    to_save = {"identity": handlers.checkpointing.RunIdentity(run.recipe), "model": run.model, "optimizer": run.optimizer,
               "trainer": trainer, "history": history,
               handlers.checkpointing.EPOCH_LOSS_KEY: run.epoch_loss}
    # The schedule's position and the averaged weights: a resume continues both exactly.
    if run.lr_schedule is not None:
        to_save["lr_schedule"] = run.lr_schedule
    if run.ema_model is not None:
        to_save["ema_model"] = run.ema_model
    if run.loss_scaling is not None:  # fp16: the loss scale and the epoch's skipped steps so far
        to_save["loss_scaling"] = run.loss_scaling
    if state is not None:
        handlers.checkpointing.restore(to_save, state, epoch_length=len(run.train_batches))
    tb_logger = None
    if rank0:
        purge_step = state["trainer"]["iteration"] + 1 if state else None
        tb_logger = handlers.tensorboard_logging.create_logger(run_dir, purge_step, history if state else None)
        handlers.tensorboard_logging.attach_iteration_logging(trainer, tb_logger, run.optimizer, run.log_every)

    for split, evaluator in run.evaluators.items():  # 1.
        handlers.evaluation.attach(trainer, evaluator, run.eval_batches[split])
    if rank0:
        history.attach(trainer, run.evaluators)  # 2.
        handlers.tensorboard_logging.attach_flush(trainer, tb_logger)  # 3.
    handlers.checkpointing.attach(trainer, to_save, run_dir)  # 4.
    if not rank0:
        return Outputs(history, to_save, tb_logger)
    summary = handlers.tensorboard_summary
    handlers.tensorboard_logging.attach_epoch_logging(trainer, tb_logger, history)  # 5.
    if run.setup.log_histograms:
        summary.attach_histograms(trainer, tb_logger, run.model)  # 6.
    handlers.progress.attach(trainer, history, show_bar=run.setup.progress, log_every=run.log_every)  # 7.
    # TensorBoard beyond the scalars: configuration text, HPARAMS and graph at the start of a fresh run (a resumed run
    # has them); misclassified test images and the HPARAMS metrics when the run completes.
    if state is None:
        summary.write_start(tb_logger, history, run.recipe)
        if run.setup.log_graph:
            summary.add_graph(tb_logger, run.model, run.test_batches.normalize(run.data.test.images[:1].to(run.device)))
    trainer.add_event_handler(Events.COMPLETED(event_filter=lambda engine, _: not engine.should_terminate),
                              lambda: summary.write_final(tb_logger, history))
    summary.attach_misclassified(trainer, run.evaluators[TEST], run.test_batches, tb_logger, run.data.class_names)
    return Outputs(history, to_save, tb_logger)
