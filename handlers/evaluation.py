"""Evaluation after every training epoch: test metrics on all test images, and optionally the same metrics on
a fixed subset of training images in eval mode ("train-eval"), so the train-test gap compares like with like."""
from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss, TopKCategoricalAccuracy
from torch import nn

from core.history_file import ACCURACY, LOSS, SUPERCLASS_ACCURACY, TOP5


def _logits_and_labels(output: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return output["y_pred"], output["y"]


def classification_metrics(device: torch.device, fine_to_coarse: torch.Tensor | None = None, num_coarse: int = 0) -> dict:
    """top-1 / top-5 accuracy and mean cross-entropy; with `fine_to_coarse` (CIFAR-100: fine class -> one of
    `num_coarse` superclasses), also the accuracy of the superclass implied by the predicted fine class."""
    metrics = {
        ACCURACY: Accuracy(output_transform=_logits_and_labels, device=device),
        TOP5: TopKCategoricalAccuracy(k=5, output_transform=_logits_and_labels, device=device),
        LOSS: Loss(nn.CrossEntropyLoss(), output_transform=_logits_and_labels, device=device),
    }
    if fine_to_coarse is not None:
        lookup = fine_to_coarse.to(device)

        def coarse(output: dict) -> tuple[torch.Tensor, torch.Tensor]:
            predicted = lookup[output["y_pred"].argmax(dim=1)]
            # One-hot "logits" so Accuracy treats the superclass prediction as a multiclass argmax.
            return nn.functional.one_hot(predicted, num_coarse), lookup[output["y"]]

        metrics[SUPERCLASS_ACCURACY] = Accuracy(output_transform=coarse, device=device)
    return metrics


def attach_metrics(evaluator: Engine, metrics: dict) -> None:
    """Attach `metrics` (name -> Ignite metric) to `evaluator`."""
    for name, metric in metrics.items():
        metric.attach(evaluator, name)


def attach(trainer: Engine, evaluator: Engine, batches) -> None:
    """Run `evaluator` over `batches` at the end of every training epoch."""
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(batches))
