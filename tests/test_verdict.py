"""The verdict rule, driven by hand-made histories for each branch."""
import math

import pytest

from engine.compare.verdict import decide, margin, summarize


def history(train_eval_acc, train_eval_loss, test_acc, test_loss=None):
    test_loss = test_loss or [1.0] * len(test_acc)
    return [
        {"epoch": i + 1, "train_eval_accuracy": a, "train_eval_loss": l, "test_accuracy": t, "test_loss": tl}
        for i, (a, l, t, tl) in enumerate(zip(train_eval_acc, train_eval_loss, test_acc, test_loss))
    ]


def test_reference_runs_of_the_plain_loop_are_underfitting():
    # Our plain-loop CIFAR-10 reference: single-stage test accuracy swings 61.3 -> 56.9 -> 73.0 %.
    single = history([0.70, 0.73, 0.765], [0.80, 0.72, 0.678], [0.613, 0.569, 0.730])
    multi = history([0.84, 0.855, 0.868], [0.43, 0.40, 0.375], [0.750, 0.757, 0.763])
    result = decide(single, multi)
    assert result["verdict"] == "reducing underfitting"
    test = result["differences"]["test_accuracy"]
    assert test["value"] == pytest.approx((0.750 + 0.757 + 0.763 - 0.613 - 0.569 - 0.730) / 3)
    # The noisy single-stage window widens the margin: 2 standard errors, computed here by hand.
    s_single = math.sqrt(sum((v - 0.637333) ** 2 for v in (0.613, 0.569, 0.730)) / 2)
    s_multi = math.sqrt(sum((v - 0.756667) ** 2 for v in (0.750, 0.757, 0.763)) / 2)
    assert test["margin"] == pytest.approx(2 * math.sqrt(s_single**2 / 3 + s_multi**2 / 3), rel=1e-4)
    assert test["clear"] and not test["strong"]
    assert result["confidence"] == "moderate"  # clear, but the noisy window keeps it from "high"


def test_steady_large_improvement_with_better_fit_is_high_confidence_underfitting():
    single = history([0.60, 0.61, 0.62], [1.2, 1.18, 1.16], [0.55, 0.555, 0.56])
    multi = history([0.80, 0.81, 0.82], [0.60, 0.58, 0.56], [0.70, 0.705, 0.71])
    result = decide(single, multi)
    assert (result["verdict"], result["confidence"]) == ("reducing underfitting", "high")
    assert result["test_ranges_separated"]


def test_same_fit_smaller_gap_is_overfitting():
    single = history([0.95, 0.96, 0.97], [0.15, 0.13, 0.11], [0.60, 0.61, 0.60])
    multi = history([0.95, 0.955, 0.965], [0.16, 0.14, 0.12], [0.70, 0.71, 0.72])
    result = decide(single, multi)
    assert result["verdict"] == "reducing overfitting"
    assert result["differences"]["gap_accuracy"]["value"] == pytest.approx(((0.96 - 0.603333) - (0.956667 - 0.71)), abs=1e-5)
    assert result["confidence"] in ("high", "moderate")


def test_no_clear_test_improvement_is_inconclusive():
    single = history([0.80, 0.81, 0.82], [0.6, 0.58, 0.56], [0.70, 0.66, 0.74])
    multi = history([0.90, 0.91, 0.92], [0.3, 0.28, 0.26], [0.71, 0.72, 0.73])
    result = decide(single, multi)
    assert (result["verdict"], result["confidence"]) == ("inconclusive", "low")
    assert not result["differences"]["test_accuracy"]["clear"]


def test_better_test_without_better_fit_or_smaller_gap_is_mixed():
    # Fits better in accuracy but not in loss, and the gap is not smaller.
    single = history([0.80, 0.80, 0.80], [0.50, 0.50, 0.50], [0.60, 0.60, 0.60])
    multi = history([0.85, 0.85, 0.85], [0.51, 0.50, 0.50], [0.65, 0.65, 0.65])
    result = decide(single, multi)
    assert (result["verdict"], result["confidence"]) == ("mixed", "low")


def test_window_uses_only_the_last_epochs():
    early_chaos = [0.1, 0.9]
    single = history(early_chaos + [0.60] * 3, [2.0, 0.1] + [1.0] * 3, early_chaos + [0.55] * 3)
    multi = history(early_chaos + [0.80] * 3, [2.0, 0.1] + [0.5] * 3, early_chaos + [0.70] * 3)
    result = decide(single, multi, window=3)
    assert result["window_stats"]["singlestage"]["test_accuracy"]["values"] == [0.55] * 3
    assert result["verdict"] == "reducing underfitting"


def test_missing_train_eval_is_inconclusive():
    records = [{"epoch": 1, "test_accuracy": 0.5, "test_loss": 1.0}]
    result = decide(records, records)
    assert result["verdict"] == "inconclusive" and "--train-eval" in result["reason"]


def test_margin_has_a_floor():
    steady = summarize([0.5, 0.5, 0.5])
    assert margin(steady, steady, 0.01) == 0.01
