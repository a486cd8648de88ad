"""What TensorBoard shows beside the scalars: the configuration (TEXT), the HPARAMS tab, a grid of
misclassified test images (IMAGES), and optionally the model graph and weight/gradient histograms."""
from __future__ import annotations

import dataclasses
import warnings

import torch
from ignite.engine import Engine, Events
from ignite.handlers.tensorboard_logger import GradsHistHandler, TensorboardLogger, WeightsHistHandler
from torch.utils.tensorboard.summary import hparams

from core.figures import pyplot
from core.history_file import (AMP_DTYPE, CONFIG, DEVICE, DEVICE_MODEL, EPOCH, PARAMETERS, TEST_ACCURACY, TF32, THREADS,
                               VAL_ACCURACY,
                               TRAIN_LOSS, gap_accuracy, has_train_eval)
from core.recipe import Recipe
from handlers.history import History

MISCLASSIFIED_SHOWN = 32


def config_markdown(config: dict, extra: dict) -> str:
    """The run's configuration as a Markdown table (TensorBoard's TEXT tab renders Markdown)."""
    rows = [f"| {key} | {value} |" for key, value in {**config, **extra}.items()]
    return "\n".join(["| setting | value |", "| --- | --- |", *rows])


def write_start(logger: TensorboardLogger, history: History, recipe: Recipe) -> None:
    """Configuration text and the HPARAMS entry of the run: its recipe and precision (its metrics follow at the end)."""
    header = history.header
    extra = {key: header[key] for key in (DEVICE, DEVICE_MODEL, THREADS, AMP_DTYPE, TF32, "world_size", PARAMETERS)
             if key in header}
    logger.writer.add_text("config", config_markdown(header[CONFIG], extra), 0)
    metrics = {"hparam/test_accuracy": 0.0, "hparam/train_loss": 0.0}
    if recipe.train_eval:
        metrics["hparam/gap_accuracy"] = 0.0
    if recipe.val_split:
        metrics["hparam/val_accuracy"] = 0.0
    precision = {"precision": header.get(AMP_DTYPE) or "float32"}
    for summary in hparams(dataclasses.asdict(recipe) | precision, metrics):
        logger.writer.file_writer.add_summary(summary)


def write_final(logger: TensorboardLogger, history: History) -> None:
    """The metrics the HPARAMS tab sorts by: final test accuracy, train loss, (with train-eval) the gap and (with
    --val-split) the validation accuracy."""
    last = history.epochs[-1]
    logger.writer.add_scalar("hparam/test_accuracy", last[TEST_ACCURACY], last[EPOCH])
    logger.writer.add_scalar("hparam/train_loss", last[TRAIN_LOSS], last[EPOCH])
    if has_train_eval(last):
        logger.writer.add_scalar("hparam/gap_accuracy", gap_accuracy(last), last[EPOCH])
    if VAL_ACCURACY in last:
        logger.writer.add_scalar("hparam/val_accuracy", last[VAL_ACCURACY], last[EPOCH])
    logger.writer.flush()


def misclassified_figure(images: torch.Tensor, true: list[str], predicted: list[str]):
    """A matplotlib grid of uint8 images (N, 3, H, W), each under its title 'true → predicted'.

    One axes shows one mosaic and the titles are plain texts on it: an axes per image, laid out by tight_layout, took
    about a second per run, spent at the end of every run."""
    columns, title_band, gap = 8, 15, 8  # in image pixels: room for a two-line title above each image, between images
    rows = max(1, -(-len(images) // columns))
    height, width = images.shape[2] + title_band + 1, images.shape[3] + gap
    mosaic = torch.full((rows * height, columns * width, 3), 255, dtype=torch.uint8)
    figure = pyplot().figure(figsize=(columns * width / 25, rows * height / 25))  # 25 image pixels per inch
    axes = figure.add_axes((0, 0, 1, 1))
    axes.axis("off")
    for k, (image, t, p) in enumerate(zip(images, true, predicted)):
        top, left = (k // columns) * height, (k % columns) * width
        mosaic[top + title_band: top + height - 1, left + gap // 2: left + width - gap // 2] = image.permute(1, 2, 0)
        axes.text(left + width / 2, top + title_band - 1, f"{t}\n→ {p}", fontsize=7, ha="center", va="bottom")
    axes.imshow(mosaic.numpy(), interpolation="nearest")
    return figure


def attach_misclassified(trainer: Engine, evaluator: Engine, test_batches, logger: TensorboardLogger,
                         class_names: list[str]) -> None:
    """During the last epoch's test pass, keep the first misclassified images; then log them as a figure."""
    found: list[tuple[int, int]] = []  # (test index, predicted class)

    def last_epoch(_engine: Engine, _event: int) -> bool:
        return trainer.state.epoch == trainer.state.max_epochs

    @evaluator.on(Events.ITERATION_COMPLETED(event_filter=last_epoch))
    def collect(engine: Engine) -> None:
        if len(found) >= MISCLASSIFIED_SHOWN:
            return
        output, index = engine.state.output, engine.state.batch[2]  # the batch's positions in the test split
        predicted = output["y_pred"].argmax(dim=1)
        wrong = (predicted != output["y"]).nonzero().flatten()[: MISCLASSIFIED_SHOWN - len(found)]
        found.extend(zip(index[wrong].tolist(), predicted[wrong].tolist()))

    @trainer.on(Events.COMPLETED)
    def write(engine: Engine) -> None:
        if engine.should_terminate or not found:
            return
        index = torch.tensor([i for i, _ in found])
        images = test_batches.images[index.to(test_batches.images.device)].cpu()
        true = [class_names[label] for label in test_batches.labels[index.to(test_batches.labels.device)].tolist()]
        predicted = [class_names[p] for _, p in found]
        logger.writer.add_figure("test/misclassified", misclassified_figure(images, true, predicted), engine.state.epoch)


def add_graph(logger: TensorboardLogger, model: torch.nn.Module, example: torch.Tensor) -> None:
    """The model graph (a trace: a couple of seconds, hence behind --log-graph)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation notice
        logger.writer.add_graph(model, example)


def attach_histograms(trainer: Engine, logger: TensorboardLogger, model: torch.nn.Module) -> None:
    """Weight and gradient histograms once per epoch (--log-histograms; large event files)."""
    logger.attach(trainer, WeightsHistHandler(model), Events.EPOCH_COMPLETED)
    logger.attach(trainer, GradsHistHandler(model), Events.EPOCH_COMPLETED)
