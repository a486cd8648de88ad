"""`run.py --evaluate RUN_DIR_OR_CHECKPOINT`: re-test a saved model on the dataset its run names, class by class.

The test pass is the run's own (same evaluator, metrics, batch size, normalisation and precision), so for the
final checkpoint its numbers equal the run's last history record. Beyond them: per-class accuracy, a confusion
matrix (10 x 10 classes on CIFAR-10; 20 x 20 superclasses on CIFAR-100) and the most-confused class pairs. The
reports re-test final models the same way, class by class (`Retester`).
"""
from __future__ import annotations

import dataclasses
import os

import torch
from ignite.engine import Events

import handlers.checkpointing
import handlers.evaluation
from core.errors import UserError
from core.figures import pyplot, save
from core.history_file import ACCURACY, EPOCH, TEST, RunHistory, metric, read_history, write_json
from core.numbers import counted, exact, percent
from core.recipe import Setup
from engine.build import fine_to_coarse_map, model_on, uses_channels_last
from engine.console import say, warn
from engine.data.datasets import CifarData
from engine.data.loader import DeviceBatches
from engine.devices import resolve_device
from engine.precision import Precision, recorded_precision
from engine.resume import load_checkpoint, load_newest_checkpoint
from engine.rundir import create_run_dir, run_dir_of
from engine.session import load_data
from engine.steps import create_evaluator
from handlers.checkpointing import EPOCH_CHECKPOINT, epoch_checkpoints
from models import user_nets

MOST_CONFUSED_SHOWN = 10
EVALUATION_JSON, EVALUATION_MARKDOWN, CONFUSION_FIGURE = "evaluation.json", "evaluation.md", "confusion.png"


def resolve_target(target: str) -> tuple[str, str | None]:
    """A checkpoint file -> (its run directory, the file); a run directory -> (it, None: the newest of its epoch
    checkpoints that loads is re-tested)."""
    if os.path.isfile(target):
        return run_dir_of(target), target
    if not os.path.isdir(target):
        raise UserError(f"cannot evaluate: {target} is neither a run directory nor a checkpoint file")
    if not epoch_checkpoints(target):
        raise UserError(f"cannot evaluate: {target} holds no {EPOCH_CHECKPOINT}")
    return target, None


def confusion(true: torch.Tensor, predicted: torch.Tensor, n: int) -> torch.Tensor:
    """n x n counts: row = true class, column = predicted class. Counted from the predictions themselves rather
    than by ignite.metrics.ConfusionMatrix, whose compute() all-reduces under torchrun: the reports' re-test runs on
    rank 0 alone (engine/run_lock.write_on_rank_0), where that collective would wait forever."""
    return torch.bincount(true * n + predicted, minlength=n * n).view(n, n)


def per_class_accuracy(matrix: torch.Tensor, names: list[str]) -> list[dict]:
    """Accuracy of each class (diagonal over row sums), sorted from worst to best."""
    totals = matrix.sum(dim=1)
    rows = [{"class": names[i], "accuracy": (matrix[i, i] / totals[i]).item() if totals[i] else None,
             "images": int(totals[i])} for i in range(len(names))]
    return sorted(rows, key=lambda row: (row["accuracy"] is None, row["accuracy"] or 0.0))


def most_confused(matrix: torch.Tensor, names: list[str], shown: int = MOST_CONFUSED_SHOWN) -> list[dict]:
    """The largest off-diagonal counts: (true class, predicted as, images)."""
    off_diagonal = matrix.clone().fill_diagonal_(0)
    counts, flat = off_diagonal.flatten().sort(descending=True)
    n = len(names)
    return [{"true": names[i // n], "predicted": names[i % n], "images": int(c)}
            for c, i in zip(counts[:shown].tolist(), flat[:shown].tolist()) if c > 0]


@dataclasses.dataclass
class Retest:
    """One pass of a saved model over the test set: its predictions and (when asked for) the run's metrics."""

    run_dir: str
    checkpoint: str
    history: RunHistory
    data: CifarData
    device: torch.device
    precision: Precision
    epoch: int  # whole epochs the checkpoint had trained
    into_epoch: int  # iterations of the next epoch, for a checkpoint written mid-epoch (interrupted_<iteration>.pt)
    true: torch.Tensor
    predicted: torch.Tensor
    metrics: dict

    @property
    def fine_to_coarse(self) -> torch.Tensor | None:
        return fine_to_coarse_map(self.data)

    @property
    def trained(self) -> str:
        """How far the checkpoint had trained: 'epoch 2', or 'epoch 2 + 3 iterations' mid-epoch."""
        return f"epoch {self.epoch}" + (f" + {counted(self.into_epoch, 'iteration')}" if self.into_epoch else "")


def retest(target: str, setup: Setup, data: CifarData | None = None, with_metrics: bool = True,
           history: RunHistory | None = None) -> Retest:
    """Load the model of `target` (run directory or checkpoint) and run the run's own evaluator over the test set.
    `data` and the run's `history` may be passed in when already read. Without metrics there are no collective
    operations, so one process of a torchrun job may call it alone."""
    run_dir, checkpoint = resolve_target(target)
    history = history or read_history(run_dir)
    recipe = history.recipe
    changed = user_nets.change(history.network)
    if changed:  # the checkpoint's load below still checks every parameter's name and shape
        warn(f"warning: {run_dir}: {changed}; re-testing with the file as it is now")
    # A re-test reads the test images alone, so nothing is held out of the training set.
    data = data or load_data(dataclasses.replace(recipe, val_split=0), setup)
    device = resolve_device(setup.device)
    # The run's own precision, so that the numbers are the run's (a forced --amp on a slow CPU is only slow).
    precision = recorded_precision(history.amp_dtype)
    if checkpoint is None:  # the newest epoch checkpoint that loads (a damaged newer one is skipped, and said)
        checkpoint, state = load_newest_checkpoint(run_dir, 1, device, keep_aside=False, kind=handlers.checkpointing.EPOCH)
    else:
        state = load_checkpoint(checkpoint, device)
    model = model_on(device, recipe, data.num_classes)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"cannot evaluate {checkpoint}: its weights do not fit {recipe.arch} ({str(exc).splitlines()[0]})") from None
    normalization = history.normalization  # what the model was trained with, whatever --data-dir holds
    mean, std = (torch.tensor(normalization[key], dtype=torch.float64) for key in ("mean", "std"))
    batches = DeviceBatches.of_split(data.test, device, recipe.batch_size, mean, std, channels_last=uses_channels_last(device))
    evaluator = create_evaluator(model, device, precision)
    if with_metrics:
        handlers.evaluation.attach_metrics(evaluator, handlers.evaluation.classification_metrics(
            device, fine_to_coarse_map(data), data.num_coarse))
    predictions, labels = [], []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: (
        predictions.append(engine.state.output["y_pred"].argmax(dim=1).cpu()), labels.append(engine.state.output["y"].cpu())))
    evaluator.run(batches)
    epoch, into_epoch = divmod(state["trainer"]["iteration"], state["trainer"]["epoch_length"])
    metrics = {metric(TEST, name): value for name, value in evaluator.state.metrics.items()}
    return Retest(run_dir=run_dir, checkpoint=checkpoint, history=history, data=data, device=device,
                  precision=precision, epoch=epoch, into_epoch=into_epoch, true=torch.cat(labels),
                  predicted=torch.cat(predictions), metrics=metrics)


def evaluate(target: str, setup: Setup) -> str:
    """Re-test the model of `target` and write evaluation.md/.json and confusion.png; returns the folder."""
    tested = retest(target, setup)
    data, metrics, lookup = tested.data, tested.metrics, tested.fine_to_coarse
    # The history records numbers at the end of epochs: a mid-epoch checkpoint has none to compare with.
    recorded = None if tested.into_epoch else next((e for e in tested.history.epochs if e[EPOCH] == tested.epoch), None)
    classes = confusion(tested.true, tested.predicted, data.num_classes)
    result = {"checkpoint": tested.checkpoint, "epoch": tested.epoch, "trained": tested.trained,
              "recipe": tested.history.config,
              "device": str(tested.device), "precision": tested.precision.dtype_name or "float32", "metrics": metrics,
              "recorded_in_history": {key: recorded[key] for key in metrics if key in recorded} if recorded else None,
              "per_class_accuracy": per_class_accuracy(classes, data.class_names),
              "most_confused": most_confused(classes, data.class_names)}
    if lookup is not None:
        result["superclass_confusion"] = confusion(lookup[tested.true], lookup[tested.predicted], data.num_coarse).tolist()
        result["superclass_names"] = data.coarse_class_names
        result["per_superclass_accuracy"] = per_class_accuracy(torch.tensor(result["superclass_confusion"]),
                                                               data.coarse_class_names)
        matrix, names = result["superclass_confusion"], data.coarse_class_names
    else:
        result["confusion"], result["class_names"] = classes.tolist(), data.class_names
        matrix, names = result["confusion"], data.class_names

    stem = os.path.splitext(os.path.basename(tested.checkpoint))[0]
    folder = create_run_dir(setup.output_dir or os.path.join(tested.run_dir, f"evaluation-{stem}"),
                            numbered=setup.output_dir is None)
    recipe = tested.history.recipe
    write_json(os.path.join(folder, EVALUATION_JSON), result)
    with open(os.path.join(folder, EVALUATION_MARKDOWN), "w") as f:
        f.write(render_evaluation(result, recipe.dataset))
    plot_confusion(matrix, names, os.path.join(folder, CONFUSION_FIGURE),
                   f"{recipe.dataset} {recipe.arch}, {tested.trained}: "
                   f"{'superclass' if lookup is not None else 'class'} confusion")
    say(f"Test accuracy {percent(metrics[metric(TEST, ACCURACY)])} ({tested.trained} of {tested.run_dir}); "
        f"evaluation: {folder}")
    return folder


def render_evaluation(result: dict, dataset: str) -> str:
    lines = [f"# Evaluation of {result['checkpoint']} ({result['trained']}, {dataset})", "",
             "| metric | now | recorded in history.json |", "| --- | ---: | ---: |"]
    recorded = result["recorded_in_history"] or {}
    for key, value in result["metrics"].items():
        lines.append(f"| {key} | {exact(value)} | {exact(recorded[key]) if key in recorded else '-'} |")
    lines += ["", "## Per-class accuracy (worst first)", "", "| class | accuracy | images |", "| --- | ---: | ---: |"]
    lines += [f"| {row['class']} | {percent(row['accuracy'], 1)} | {row['images']} |" for row in result["per_class_accuracy"]
              if row["accuracy"] is not None]
    if "per_superclass_accuracy" in result:
        lines += ["", "## Per-superclass accuracy (worst first)", "", "| superclass | accuracy | images |",
                  "| --- | ---: | ---: |"]
        lines += [f"| {row['class']} | {percent(row['accuracy'], 1)} | {row['images']} |"
                  for row in result["per_superclass_accuracy"] if row["accuracy"] is not None]
    lines += ["", "## Most confused (true -> predicted)", "", "| true | predicted as | images |", "| --- | --- | ---: |"]
    lines += [f"| {row['true']} | {row['predicted']} | {row['images']} |" for row in result["most_confused"]]
    lines += ["", f"![confusion]({CONFUSION_FIGURE})", ""]
    return "\n".join(lines)


def plot_confusion(matrix: list[list[int]], names: list[str], path: str, title: str) -> None:
    """confusion.png: row-normalised counts (true class down, predicted across)."""
    counts = torch.tensor(matrix, dtype=torch.float64)
    shares = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    size = 4 + 0.35 * len(names)
    figure, axes = pyplot().subplots(figsize=(size, size * 0.9))
    image = axes.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.set(xlabel="predicted", ylabel="true", title=title)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    save(figure, path)


@dataclasses.dataclass
class Retester:
    """Re-tests final models class by class for the reports: on `setup`'s device, on `data` when loaded (else the
    dataset each run names), each run directory once per process, so that a study reuses what its comparisons'
    reports re-tested."""

    setup: Setup
    data: CifarData | None = None
    done: dict = dataclasses.field(default_factory=dict)  # real path of a run directory -> its class accuracies

    def __post_init__(self):
        self.setup = dataclasses.replace(self.setup, download=False)  # a report re-tests on data there is

    def class_accuracy(self, history: RunHistory) -> dict:
        """Per-class (and on CIFAR-100 per-superclass) test accuracy of the run's newest checkpoint, which must be its
        last epoch's: what the reports' "where the gain comes from" compares."""
        run_dir, key = history.run_dir, os.path.realpath(history.run_dir)
        if key in self.done:
            return self.done[key]
        tested = retest(run_dir, self.setup, self.data, with_metrics=False, history=history)
        last_epoch = tested.history.epochs[-1][EPOCH] if tested.history.epochs else None
        if tested.epoch != last_epoch:
            raise UserError(f"{run_dir}: its newest checkpoint is of epoch {tested.epoch}, not of its last epoch {last_epoch}")

        def by_name(matrix: torch.Tensor, names: list[str]) -> dict[str, float]:
            return {row["class"]: row["accuracy"] for row in per_class_accuracy(matrix, names) if row["accuracy"] is not None}

        data, lookup = tested.data, tested.fine_to_coarse
        self.done[key] = {"epoch": tested.epoch,
                          "classes": by_name(confusion(tested.true, tested.predicted, data.num_classes), data.class_names)}
        if lookup is not None:
            self.done[key]["superclasses"] = by_name(confusion(lookup[tested.true], lookup[tested.predicted],
                                                               data.num_coarse), data.coarse_class_names)
        return self.done[key]
