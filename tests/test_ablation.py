"""The ablation of a study of three or more networks: P(A > B) against hand-checked binomial bounds, the words of
the attribution rule, the properties each contrast names, and the study's contrast table against numbers computed
here from the histories (constructed, no training)."""
import json
import statistics

import pytest
from scipy import stats

from engine.compare.ablation import ablation, network_properties, probability_better, share_in_words
from engine.compare.report import write_report

ALPHA = 0.05


def test_p_better_three_of_three_has_the_closed_form_clopper_pearson_bounds():
    # 3 wins of 3: the lower bound p solves P(X >= 3) = p^3 = alpha/2; the upper bound is 1.
    result = probability_better([0.8, 0.7, 0.9], [0.7, 0.6, 0.8])
    assert (result["wins"], result["seeds"], result["probability"]) == (3, 3, 1.0)
    assert result["ci_low"] == pytest.approx((ALPHA / 2) ** (1 / 3)) == pytest.approx(0.2924, abs=1e-4)
    assert result["ci_high"] == 1.0


def test_p_better_two_of_three_and_a_tie_that_is_no_win():
    result = probability_better([0.8, 0.7, 0.5], [0.7, 0.6, 0.5])  # the third seed ties
    assert (result["wins"], result["probability"]) == (2, pytest.approx(2 / 3))
    low, high = result["ci_low"], result["ci_high"]
    assert 3 * low**2 - 2 * low**3 == pytest.approx(ALPHA / 2)  # P(X >= 2 | low) = 3p^2(1-p) + p^3
    assert high == pytest.approx((1 - ALPHA / 2) ** (1 / 3))  # P(X <= 2 | high) = 1 - p^3 = alpha/2
    none = probability_better([0.1, 0.1, 0.1], [0.2, 0.2, 0.2])
    assert (none["wins"], none["ci_low"], none["ci_high"]) == (0, 0.0, pytest.approx(1 - (ALPHA / 2) ** (1 / 3)))


@pytest.mark.parametrize("low, high, words", [
    (0.6, 1.4, "at least half of the gain"), (0.5, 0.9, "at least half of the gain"), (0.1, 0.8, "some of the gain"),
    (-0.2, 0.3, "little or none of the gain"), (-0.9, -0.1, "none: it works against the gain"),
    (-0.2, 0.7, "cannot tell")])
def test_share_in_words_follows_the_stated_rule(low, high, words):
    assert share_in_words(low, high) == words


def differing(a, b):
    from engine.compare.ablation import PROPERTIES

    pa, pb = (network_properties(arch, 10, 2) for arch in (a, b))
    return [name for name, equal in PROPERTIES.items() if not equal(pa, pb)]


def test_each_contrast_names_what_the_models_change():
    assert differing("singlestage-dilated", "singlestage") == ["receptive field"]
    assert differing("multistage-constwidth", "singlestage") == ["resolution", "receptive field", "MACs"]
    assert differing("multistage-constwidth", "multistage") == ["widths", "parameters", "MACs"]
    assert differing("multistage-narrow", "multistage") == ["widths", "parameters", "MACs"]
    facts = network_properties("multistage", 10, 2)
    assert (facts["resolution"], facts["widths"], facts["covers_image"]) == ([32, 16, 8], [16, 32, 64], True)
    assert network_properties("singlestage", 10, 2)["covers_image"] is False  # 27 px < 32 px


NETS = ["singlestage", "multistage", "singlestage-dilated"]
# Per net and seed: (train-eval accuracy, test accuracy) of the last three epochs.
RECORDS = {
    "singlestage": [[(0.70, 0.66), (0.72, 0.67), (0.74, 0.68)], [(0.69, 0.65), (0.71, 0.66), (0.73, 0.67)],
                    [(0.71, 0.64), (0.73, 0.66), (0.75, 0.68)]],
    "multistage": [[(0.82, 0.72), (0.84, 0.73), (0.86, 0.74)], [(0.80, 0.71), (0.83, 0.72), (0.85, 0.73)],
                   [(0.83, 0.70), (0.85, 0.72), (0.87, 0.73)]],
    "singlestage-dilated": [[(0.75, 0.68), (0.77, 0.69), (0.79, 0.70)], [(0.72, 0.66), (0.75, 0.68), (0.77, 0.69)],
                            [(0.76, 0.66), (0.78, 0.68), (0.80, 0.69)]],
}


def write_study_dir(root):
    """A study directory of three nets and three seeds, its histories built from RECORDS (three epochs each)."""
    for seed in range(3):
        folder = root / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "comparison.json").write_text(json.dumps({"nets": NETS}))
        for net in NETS:
            epochs = [{"epoch": e + 1, "train_loss": 1.0 - 0.1 * e, "train_eval_accuracy": te, "train_eval_loss": 1 - te,
                       "test_accuracy": test, "test_loss": 1.1 - test, "test_top5": 0.95}
                      for e, (te, test) in enumerate(RECORDS[net][seed])]
            config = {"arch": net, "dataset": "cifar10", "epochs": 3, "batch_size": 128, "lr": 1e-3, "seed": seed,
                      "augment": False, "blocks_per_stage": 2, "train_eval": 10000}
            (folder / net).mkdir()
            (folder / net / "history.json").write_text(json.dumps(
                {"config": config, "status": "completed", "num_train": 50000, "num_test": 10000,
                 "class_names": [str(c) for c in range(10)], "epochs": epochs}))


def window_mean(net, seed, column):
    return statistics.fmean(record[column] for record in RECORDS[net][seed])


def t_interval(values):
    mean = statistics.fmean(values)
    return stats.t.interval(0.95, len(values) - 1, loc=mean, scale=statistics.stdev(values) / len(values) ** 0.5)


def test_the_study_table_shows_each_contrast_as_computed_from_the_histories(tmp_path):
    write_study_dir(tmp_path)
    write_report(str(tmp_path))
    study = json.loads((tmp_path / "study.json").read_text())["ablation"]

    gain = [window_mean("multistage", k, 0) - window_mean("singlestage", k, 0) for k in range(3)]
    assert study["gain"]["values"] == pytest.approx(gain)
    for row, (reference, sign) in zip(study["contrasts"], (("singlestage", 1), ("multistage", -1))):
        assert (row["variant"], row["reference"]) == ("singlestage-dilated", reference)
        diffs = [window_mean("singlestage-dilated", k, 0) - window_mean(reference, k, 0) for k in range(3)]
        low, high = t_interval(diffs)
        assert row["train_eval_accuracy"]["values"] == pytest.approx(diffs)
        assert (row["train_eval_accuracy"]["ci_low"], row["train_eval_accuracy"]["ci_high"]) == pytest.approx((low, high))
        share = sorted(sign * bound / statistics.fmean(gain) for bound in (low, high))
        assert (row["share"]["ci_low"], row["share"]["ci_high"]) == pytest.approx(share)
        assert row["share"]["mean"] == pytest.approx(sign * statistics.fmean(diffs) / statistics.fmean(gain))
        tests = [window_mean("singlestage-dilated", k, 1) - window_mean(reference, k, 1) for k in range(3)]
        assert row["test_accuracy"]["values"] == pytest.approx(tests)
        assert row["p_better"]["wins"] == sum(d > 0 for d in tests)

    first = study["contrasts"][0]
    assert first["differs_in"] == ["receptive field"]
    assert first["held_equal"] == ["resolution", "widths", "parameters", "MACs"]
    markdown = (tmp_path / "study.md").read_text()
    te = first["train_eval_accuracy"]
    row = ("| singlestage-dilated - singlestage | receptive field | resolution, widths, parameters, MACs | "
           + ", ".join(f"{100 * d:+.2f}" for d in te["values"])
           + f" | {100 * te['mean']:+.2f} [{100 * te['ci_low']:+.2f}, {100 * te['ci_high']:+.2f}] | ")
    assert row in markdown
    assert "## What explains the gain (ablation)" in markdown and "### The attribution rule" in markdown
    assert "\n| singlestage-dilated | 32 px | 32 | 59 px | 113,034 | 114.1 M |" in markdown


def test_no_share_is_attributed_when_there_is_no_clear_gain(tmp_path):
    write_study_dir(tmp_path)
    from core.history_file import read_history

    histories = {net: [read_history(str(tmp_path / f"seed{k}" / net)) for k in range(3)] for net in NETS}
    same = {**histories, "multistage": histories["singlestage"]}  # the target gains nothing
    result = ablation(same)
    assert result["gain"]["clear"] is False and all("share" not in row for row in result["contrasts"])
