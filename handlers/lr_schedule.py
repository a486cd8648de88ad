"""The learning-rate schedule of a recipe: Ignite param schedulers that set the rate at the start of every iteration.

With W warm-up iterations of T in all, peak rate P, the rate of iteration i (from 0) is P * i / W for i < W, then
  constant: P;   onecycle: P * (T - i) / (T - W);   cosine: P * (1 + cos(pi * (i - W) / (T - W + 1))) / 2.

"constant" without warm-up attaches nothing (the assignment's Adam at a fixed rate). Every scheduler here is
stateful (its position), so the checkpoint saves it and a resume, even in the middle of an epoch, continues the
schedule exactly where it stopped.
"""
from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from ignite.handlers import CosineAnnealingScheduler, PiecewiseLinear, create_lr_scheduler_with_warmup
from ignite.handlers.param_scheduler import ParamScheduler

from core.recipe import Recipe

SCHEDULES = ("constant", "onecycle", "cosine")


def warmup_iterations(recipe: Recipe, epoch_length: int) -> int:
    """The warm-up in iterations: `--warmup` epochs, rounded to whole iterations."""
    return round(recipe.warmup * epoch_length)


def create(recipe: Recipe, optimizer: torch.optim.Optimizer, epoch_length: int) -> ParamScheduler | None:
    """The recipe's scheduler of the learning rate over `recipe.epochs` epochs of `epoch_length` iterations, or None
    for a constant rate without warm-up."""
    total, warmup, peak = recipe.epochs * epoch_length, warmup_iterations(recipe, epoch_length), recipe.lr
    if recipe.schedule != "constant":
        warmup = min(warmup, total - 1)  # a warm-up shorter than the run (Recipe refuses longer) may round up to it
    if recipe.schedule == "constant":
        return PiecewiseLinear(optimizer, "lr", [(0, 0.0), (warmup, peak)]) if warmup else None
    if recipe.schedule == "onecycle":
        milestones = ([(0, 0.0)] if warmup else []) + [(warmup, peak), (total, 0.0)]
        return PiecewiseLinear(optimizer, "lr", milestones)
    if recipe.schedule == "cosine":
        # One half-cosine over what follows the warm-up; one step longer, so that it never starts a second cycle.
        cosine = CosineAnnealingScheduler(optimizer, "lr", start_value=peak, end_value=0.0,
                                          cycle_size=total - warmup + 1)
        if not warmup:
            return cosine
        # Ignite's warm-up of N iterations hands over to the cosine at iteration N - 1: N = warmup + 1 puts the peak
        # at iteration `warmup`, as in the other schedules.
        return create_lr_scheduler_with_warmup(cosine, warmup_start_value=0.0, warmup_end_value=peak,
                                               warmup_duration=warmup + 1)
    raise ValueError(f"unknown schedule {recipe.schedule!r}; choose one of {SCHEDULES}")


def attach(trainer: Engine, recipe: Recipe, optimizer: torch.optim.Optimizer, epoch_length: int) -> ParamScheduler | None:
    """Set the learning rate at the start of every iteration by the recipe's schedule; return the scheduler (for
    the checkpoint), or None where the rate stays as the optimizer was built."""
    scheduler = create(recipe, optimizer, epoch_length)
    if scheduler is not None:
        trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    return scheduler
