"""TensorBoard: per-iteration loss and learning rate, per-epoch train loss and test metrics indexed by epoch."""
from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from ignite.handlers import global_step_from_engine
from ignite.handlers.tensorboard_logger import OptimizerParamsHandler, OutputHandler, TensorboardLogger


def attach(
    trainer: Engine, evaluators: dict[str, Engine], optimizer: torch.optim.Optimizer, log_dir: str, log_every: int = 1
) -> TensorboardLogger:
    """Log under `log_dir`, each evaluator's metrics under its name (`test/accuracy`, `train_eval/loss`);
    returns the logger, which the caller closes when the run ends."""
    logger = TensorboardLogger(log_dir=log_dir)
    every = Events.ITERATION_COMPLETED(every=log_every)
    logger.attach(trainer, OutputHandler(tag="train", output_transform=lambda out: {"loss_iter": out["loss"]}), every)
    logger.attach(trainer, OptimizerParamsHandler(optimizer, param_name="lr", tag="train"), every)
    logger.attach(
        trainer,
        OutputHandler(tag="train", metric_names=["loss_epoch"], global_step_transform=global_step_from_engine(trainer)),
        Events.EPOCH_COMPLETED,
    )
    for tag, evaluator in evaluators.items():
        logger.attach(
            evaluator,
            OutputHandler(tag=tag, metric_names="all", global_step_transform=global_step_from_engine(trainer)),
            Events.COMPLETED,
        )
    return logger
