"""Does the multi-stage design help by reducing under- or overfitting? A stated rule over stated numbers.

Every quantity is the mean over the last `window` epochs (default 3), not the last epoch alone: a single
epoch's test accuracy of these nets can swing by several points. "Fit" is measured on a fixed subset of
training images in eval mode (train-eval), like the test set, so the train-test gap compares like with like.

Margins: a difference of window means counts as clear only if it exceeds
  - accuracy: max(1.0 percentage point, 2 standard errors of the difference),
  - loss:     max(0.02, 2 standard errors of the difference),
where the standard error is sqrt(s_single^2 / n + s_multi^2 / n), s being each net's sample standard
deviation over the n epochs of the window (epoch-to-epoch noise widens the margin).

Rule (multi-stage minus single-stage):
  1. if the multi-stage net does not test clearly better  -> "inconclusive" (no improvement to explain);
  2. if it fits the training data clearly better (higher train-eval accuracy AND lower train-eval loss)
                                                           -> "reducing underfitting";
  3. if it fits no better (train-eval accuracy not clearly higher) and its generalisation gap
     (train-eval accuracy - test accuracy) is clearly smaller -> "reducing overfitting";
  4. otherwise                                              -> "mixed".
Confidence: "high" when every difference that decided exceeds twice its margin and the two nets' test
accuracies over the window do not overlap; "moderate" when they exceed their margins; "low" for
"inconclusive" and "mixed".
"""
from __future__ import annotations

import math
import statistics

ACCURACY_FLOOR = 0.01
LOSS_FLOOR = 0.02
NOISE_FACTOR = 2.0
RULE = __doc__.split("\n\n", 2)[2].strip()


def summarize(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max of a window of values."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def window_stats(epochs: list[dict], key: str, window: int) -> dict:
    """`summarize` of `key` over the last `window` epochs."""
    return summarize([e[key] for e in epochs[-window:]])


def margin(single: dict, multi: dict, floor: float) -> float:
    """The smallest difference of window means that counts as clear (see the rule above)."""
    n = len(single["values"])
    standard_error = math.sqrt(single["std"] ** 2 / n + multi["std"] ** 2 / n)
    return max(floor, NOISE_FACTOR * standard_error)


def decide(single_epochs: list[dict], multi_epochs: list[dict], window: int = 3) -> dict:
    """Apply the rule to two per-epoch histories (records with train_eval_* and test_* keys)."""
    window = max(1, min(window, len(single_epochs), len(multi_epochs)))
    keys = ("train_eval_accuracy", "train_eval_loss", "test_accuracy", "test_loss")
    if not all(key in e for e in single_epochs[-window:] + multi_epochs[-window:] for key in keys):
        return {"verdict": "inconclusive", "confidence": "low", "window": window, "reason":
                "the runs have no train-eval measurements (train with --train-eval N, as --bonus does)"}
    single = {key: window_stats(single_epochs, key, window) for key in keys}
    multi = {key: window_stats(multi_epochs, key, window) for key in keys}
    for stats in (single, multi):
        stats["gap_accuracy"] = summarize(
            [a - t for a, t in zip(stats["train_eval_accuracy"]["values"], stats["test_accuracy"]["values"])]
        )

    def difference(key: str, floor: float, sign: int = 1) -> dict:
        value = sign * (multi[key]["mean"] - single[key]["mean"])
        needed = margin(single[key], multi[key], floor)
        return {"value": value, "margin": needed, "clear": value > needed, "strong": value > 2 * needed}

    diffs = {
        "test_accuracy": difference("test_accuracy", ACCURACY_FLOOR),
        "train_eval_accuracy": difference("train_eval_accuracy", ACCURACY_FLOOR),
        "train_eval_loss": difference("train_eval_loss", LOSS_FLOOR, sign=-1),  # positive: multi-stage lower
        "gap_accuracy": difference("gap_accuracy", ACCURACY_FLOOR, sign=-1),  # positive: multi-stage smaller gap
    }
    separated = multi["test_accuracy"]["min"] > single["test_accuracy"]["max"]
    if not diffs["test_accuracy"]["clear"]:
        verdict, deciding = "inconclusive", []
        reason = "the multi-stage net does not test clearly better, so there is no improvement to attribute"
    elif diffs["train_eval_accuracy"]["clear"] and diffs["train_eval_loss"]["clear"]:
        verdict, deciding = "reducing underfitting", ["test_accuracy", "train_eval_accuracy", "train_eval_loss"]
        reason = "the multi-stage net fits the training images clearly better and tests better"
    elif not diffs["train_eval_accuracy"]["clear"] and diffs["gap_accuracy"]["clear"]:
        verdict, deciding = "reducing overfitting", ["test_accuracy", "gap_accuracy"]
        reason = "the multi-stage net fits the training images no better, yet tests better because its gap is smaller"
    else:
        verdict, deciding = "mixed", []
        reason = "the multi-stage net tests better, but neither a clearly better fit nor a clearly smaller gap explains it"
    if deciding and all(diffs[key]["strong"] for key in deciding) and separated:
        confidence = "high"
    elif deciding:
        confidence = "moderate"
    else:
        confidence = "low"
    return {"verdict": verdict, "confidence": confidence, "reason": reason, "window": window,
            "differences": diffs, "test_ranges_separated": separated,
            "window_stats": {"singlestage": single, "multistage": multi}}
