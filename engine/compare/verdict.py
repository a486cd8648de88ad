"""Does the multi-stage design help by reducing under- or overfitting? A stated rule over stated numbers, for any
pair of architectures (a baseline and a candidate), by default the bonus pair.

Every quantity is the mean over the last `window` epochs (default `WINDOW`), not the last epoch alone: a single
epoch's test accuracy of these nets can swing by several points. "Fit" is measured on a fixed subset of
training images in eval mode (train-eval), like the test set, so the train-test gap compares like with like.

The rules are `rule(names)` and `rule_paired(names)`: templates filled with the constants below and the pair's
names, printed in every report (and still there under `python -OO`, which strips docstrings). Across seeds, the
statistics are the mean, the sample standard deviation and a Student-t interval (core/stats.py). Where a gain comes
from, class by class (broad, concentrated, mixed), is judged here too: `compare_classes`, by `gain_rule(names)`.
"""
from __future__ import annotations

import math
import statistics

from core.history_file import GAP_ACCURACY, TEST_ACCURACY, TEST_LOSS, TRAIN_EVAL_ACCURACY, TRAIN_EVAL_LOSS, gap_accuracy
from core.numbers import points
from core.stats import CONFIDENCE, interval
from models import BONUS_PAIR, label, noun

# Which rule decided a contrast, as a report records it: the window of one seed's last epochs, or paired differences
# across seeds.
WINDOW_RULE, PAIRED = "window", "paired"

ACCURACY_FLOOR = 0.01
LOSS_FLOOR = 0.02
NOISE_FACTOR = 2.0
STRONG_FACTOR = 2  # one seed: a difference beyond this many margins is strong (confidence "high")
WINDOW = 3  # epochs at the end of a run whose mean each quantity is
# Where a gain comes from, class by class:
TOP_FRACTION = 0.2  # "a few classes" = the most-improved fifth
CONCENTRATED_SHARE = 0.5  # ... carrying more than half of what the improving classes gained
BROAD_FRACTION = 0.75  # "broad" = at least three classes in four improve
# The quantities that decide, in the order reports list them: the sign that makes a positive difference favour the
# candidate (a lower train-eval loss, a smaller gap) and the practical floor of a clear difference.
DECIDING = {TEST_ACCURACY: (1, ACCURACY_FLOOR), TRAIN_EVAL_ACCURACY: (1, ACCURACY_FLOOR),
            TRAIN_EVAL_LOSS: (-1, LOSS_FLOOR), GAP_ACCURACY: (-1, ACCURACY_FLOOR)}
RULE_TEMPLATE = """Margins: a difference of window means counts as clear only if it exceeds
  - accuracy: max({accuracy_floor} percentage point, {noise} standard errors of the difference),
  - loss:     max({loss_floor}, {noise} standard errors of the difference),
where the standard error is sqrt(s_{base_short}^2 / n + s_{cand_short}^2 / n), s being each net's sample standard
deviation over the n epochs of the window (epoch-to-epoch noise widens the margin).

Rule ({cand} minus {base}):
  1. if {cand_noun} does not test clearly better  -> "inconclusive" (no improvement to explain);
  2. if it fits the training data clearly better (higher train-eval accuracy AND lower train-eval loss)
                                                           -> "reducing underfitting";
  3. if it fits no better (train-eval accuracy not clearly higher) and its generalisation gap
     (train-eval accuracy - test accuracy) is clearly smaller -> "reducing overfitting";
  4. otherwise                                              -> "mixed".
Confidence: "high" when every difference that decided exceeds {strong} its margin and the two nets' test
accuracies over the window do not overlap; "moderate" when they exceed their margins; "low" for
"inconclusive" and "mixed"."""


def rule(names: tuple[str, str] = BONUS_PAIR) -> str:
    """The one-seed rule for the pair (baseline, candidate), in their names."""
    return RULE_TEMPLATE.format(**_words(names))


def _words(names: tuple[str, str]) -> dict:
    base, cand = names
    return {"base": label(base), "cand": label(cand), "cand_noun": noun(cand), "base_noun": noun(base),
            "base_short": label(base).split("-")[0], "cand_short": label(cand).split("-")[0],
            "accuracy_floor": points(ACCURACY_FLOOR, 1), "loss_floor": f"{LOSS_FLOOR:g}", "noise": f"{NOISE_FACTOR:g}",
            "strong": "twice" if STRONG_FACTOR == 2 else f"{STRONG_FACTOR:g} times", "window": WINDOW,
            "confidence": points(CONFIDENCE, 0)}


def summarize(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max of a window of values."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def window_stats(epochs: list[dict], key: str, window: int) -> dict:
    """`summarize` of `key` over the last `window` epochs."""
    return summarize([e[key] for e in epochs[-window:]])


def margin(baseline: dict, candidate: dict, floor: float) -> float:
    """The smallest difference of window means that counts as clear (see the rule above)."""
    n = len(baseline["values"])
    standard_error = math.sqrt(baseline["std"] ** 2 / n + candidate["std"] ** 2 / n)
    return max(floor, NOISE_FACTOR * standard_error)


def fitting_window(window: int, histories: list[list[dict]]) -> int:
    """`window`, shortened to the shortest of `histories` (each a run's per-epoch records), and at least 1."""
    return max(1, min([window] + [len(epochs) for epochs in histories]))


def judge(baseline_runs: list[list[dict]], candidate_runs: list[list[dict]], names: tuple[str, str] = BONUS_PAIR) -> dict:
    """A candidate against the baseline over their runs, paired by seed: the rule that fits (the paired rule for two
    seeds or more, the window rule for one), which one it was (`decided_by`) and its verdict, as a report's contrast
    holds them."""
    if len(baseline_runs) >= 2:
        return {"verdict": decide_paired(baseline_runs, candidate_runs, names=names), "rule": rule_paired(names),
                "decided_by": PAIRED}
    return {"verdict": decide(baseline_runs[0], candidate_runs[0], names=names), "rule": rule(names),
            "decided_by": WINDOW_RULE}


def decide(baseline_epochs: list[dict], candidate_epochs: list[dict], window: int = WINDOW,
           names: tuple[str, str] = BONUS_PAIR) -> dict:
    """Apply the rule to two per-epoch histories (records with train_eval_* and test_* keys): the baseline's, then
    the candidate's, named by `names`."""
    window = fitting_window(window, [baseline_epochs, candidate_epochs])
    keys = (TRAIN_EVAL_ACCURACY, TRAIN_EVAL_LOSS, TEST_ACCURACY, TEST_LOSS)
    if not all(key in e for e in baseline_epochs[-window:] + candidate_epochs[-window:] for key in keys):
        return {"verdict": "inconclusive", "confidence": "low", "window": window, "reason":
                "the runs have no train-eval measurements (train with --train-eval N, as --bonus does)"}
    baseline = {key: window_stats(baseline_epochs, key, window) for key in keys}
    candidate = {key: window_stats(candidate_epochs, key, window) for key in keys}
    for stats, epochs in ((baseline, baseline_epochs), (candidate, candidate_epochs)):
        stats[GAP_ACCURACY] = summarize([gap_accuracy(e) for e in epochs[-window:]])

    diffs = {}
    for key, (sign, floor) in DECIDING.items():
        value = sign * (candidate[key]["mean"] - baseline[key]["mean"])
        needed = margin(baseline[key], candidate[key], floor)
        diffs[key] = {"value": value, "margin": needed, "clear": value > needed, "strong": value > STRONG_FACTOR * needed}
    separated = candidate[TEST_ACCURACY]["min"] > baseline[TEST_ACCURACY]["max"]
    verdict, deciding, reason = classify(diffs, noun(names[1]))
    confidence = rate_confidence(diffs, deciding, extra_condition=separated)
    return {"verdict": verdict, "confidence": confidence, "reason": reason, "window": window,
            "differences": diffs, "test_ranges_separated": separated,
            "window_stats": {names[0]: baseline, names[1]: candidate}}


def classify(diffs: dict, candidate: str) -> tuple[str, list[str], str]:
    """The rule's decision from which differences are clear: (verdict, the differences that decided, reason), the
    reason speaking of `candidate`."""
    if not diffs[TEST_ACCURACY]["clear"]:
        return ("inconclusive", [],
                f"{candidate} does not test clearly better, so there is no improvement to attribute")
    if diffs[TRAIN_EVAL_ACCURACY]["clear"] and diffs[TRAIN_EVAL_LOSS]["clear"]:
        return ("reducing underfitting", [TEST_ACCURACY, TRAIN_EVAL_ACCURACY, TRAIN_EVAL_LOSS],
                f"{candidate} fits the training images clearly better and tests better")
    if not diffs[TRAIN_EVAL_ACCURACY]["clear"] and diffs[GAP_ACCURACY]["clear"]:
        return ("reducing overfitting", [TEST_ACCURACY, GAP_ACCURACY],
                f"{candidate} fits the training images no better, yet tests better because its gap is smaller")
    return ("mixed", [],
            f"{candidate} tests better, but neither a clearly better fit nor a clearly smaller gap explains it")


def rate_confidence(diffs: dict, deciding: list[str], extra_condition: bool = True) -> str:
    """"high" when every deciding difference is strong (and `extra_condition`), "moderate" when they decided,
    "low" when nothing decided ("inconclusive", "mixed")."""
    if deciding and all(diffs[key]["strong"] for key in deciding) and extra_condition:
        return "high"
    return "moderate" if deciding else "low"


RULE_PAIRED_TEMPLATE = """Several seeds (K >= 2), paired: seed k trains both nets on the same data order. For each seed, each
quantity is its mean over the last `window` epochs (default {window}); the seed's difference is {cand} minus
{base}, signed so that positive favours {cand_noun} (lower train-eval loss, smaller gap).
Across the K seeds: the mean difference and its {confidence} % Student-t confidence interval (df = K - 1).
A difference is clear only when its interval excludes zero AND its mean exceeds the practical margin
(accuracy: {accuracy_floor} percentage point; loss: {loss_floor}).
Rule: as for one seed -- 1. {cand_noun} does not test clearly better -> "inconclusive";
2. it fits the training images clearly better (train-eval accuracy and loss) -> "reducing underfitting";
3. it fits no better but its gap (train-eval accuracy - test accuracy) is clearly smaller -> "reducing
overfitting"; 4. otherwise -> "mixed".
Confidence: "high" when the whole interval of every deciding difference lies beyond its margin; "moderate"
when they are clear; "low" for "inconclusive" and "mixed"."""


def rule_paired(names: tuple[str, str] = BONUS_PAIR) -> str:
    """The several-seeds rule for the pair (baseline, candidate), in their names."""
    return RULE_PAIRED_TEMPLATE.format(**_words(names))


def seed_window_means(epochs: list[dict], window: int) -> dict[str, float]:
    """One seed's deciding quantities, each the mean over the last `window` epochs."""
    last = epochs[-window:]
    means = {key: statistics.fmean(e[key] for e in last) for key in (TEST_ACCURACY, TRAIN_EVAL_ACCURACY, TRAIN_EVAL_LOSS)}
    means[GAP_ACCURACY] = statistics.fmean(gap_accuracy(e) for e in last)
    return means


def decide_paired(baseline_runs: list[list[dict]], candidate_runs: list[list[dict]], window: int = WINDOW,
                  names: tuple[str, str] = BONUS_PAIR) -> dict:
    """The K >= 2 rule (`rule_paired`) over per-seed histories of a baseline and a candidate, paired by position
    (= by seed)."""
    window = fitting_window(window, baseline_runs + candidate_runs)
    per_seed = [(seed_window_means(b, window), seed_window_means(c, window))
                for b, c in zip(baseline_runs, candidate_runs)]
    diffs = {}
    for key, (sign, floor) in DECIDING.items():
        stats = interval([sign * (candidate[key] - baseline[key]) for baseline, candidate in per_seed])
        stats.update(margin=floor, clear=stats["ci_low"] > 0 and stats["mean"] > floor, strong=stats["ci_low"] > floor)
        diffs[key] = stats
    verdict, deciding, reason = classify(diffs, noun(names[1]))
    confidence = rate_confidence(diffs, deciding)
    reason = "across seeds " + reason
    return {"verdict": verdict, "confidence": confidence, "reason": reason, "window": window, "seeds": len(per_seed),
            "paired_differences": diffs,
            "per_seed": [{names[0]: baseline, names[1]: candidate} for baseline, candidate in per_seed]}


def gain_rule(nets: tuple[str, str] = BONUS_PAIR) -> str:
    """How "where the gain comes from" names a pattern, for the pair (baseline, candidate), in their names."""
    base, cand = (label(name) for name in nets)
    return (f"Gain of a class = {cand} minus {base} test accuracy on its images, averaged over seeds. "
            f"No gain: the mean gain over classes is <= 0. Concentrated: the most-improved {TOP_FRACTION:.0%} of the "
            f"classes carry more than {CONCENTRATED_SHARE:.0%} of the summed gains of all improving classes. Broad: "
            f"otherwise, when at least {BROAD_FRACTION:.0%} of the classes improve. Mixed: neither.")


def compare_classes(baseline: list[dict[str, float]], candidate: list[dict[str, float]],
                    nets: tuple[str, str] = BONUS_PAIR) -> dict:
    """`baseline[k]`, `candidate[k]`: accuracy per class name of seed k's baseline and candidate, named by `nets`
    (the same seeds in the same order).

    Returns the per-class rows sorted from most to least improved, the mean gain, how many classes improved,
    the share of the improving classes' summed gain carried by the top fifth (losses elsewhere do not inflate
    it), and the pattern with a one-sentence summary."""
    if not baseline or len(baseline) != len(candidate):
        raise ValueError("compare_classes needs the same, non-zero number of seeds for both nets")
    names = list(baseline[0])
    rows = []
    for name in names:
        gains = [c[name] - b[name] for b, c in zip(baseline, candidate)]
        rows.append({"class": name, nets[0]: statistics.fmean(b[name] for b in baseline),
                     nets[1]: statistics.fmean(c[name] for c in candidate), "gain": statistics.fmean(gains),
                     "seeds_improved": sum(g > 0 for g in gains)})
    rows.sort(key=lambda row: row["gain"], reverse=True)
    gains = [row["gain"] for row in rows]
    mean_gain = statistics.fmean(gains)
    improved = sum(g > 0 for g in gains)
    top = max(1, math.ceil(TOP_FRACTION * len(rows)))
    top_share = sum(gains[:top]) / sum(g for g in gains if g > 0) if mean_gain > 0 else None
    if mean_gain <= 0:
        pattern = "no gain"
    elif top_share > CONCENTRATED_SHARE:
        pattern = "concentrated"
    elif improved >= BROAD_FRACTION * len(rows):
        pattern = "broad"
    else:
        pattern = "mixed"
    summary = (f"{pattern}: {improved} of {len(rows)} classes improve, mean gain {points(mean_gain, signed=True)} pts"
               + (f"; the top {top} carry {top_share:.0%} of what the improving classes gained" if top_share is not None else "")
               + f"; most improved: {rows[0]['class']} ({points(rows[0]['gain'], 1, signed=True)}), least: {rows[-1]['class']} "
               f"({points(rows[-1]['gain'], 1, signed=True)})")
    return {"seeds": len(baseline), "classes": rows, "mean_gain": mean_gain, "improved": improved, "top": top,
            "top_share": top_share, "pattern": pattern, "summary": summary, "rule": gain_rule(nets)}
