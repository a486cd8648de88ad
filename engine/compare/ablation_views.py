"""How the ablation looks in study.md (the numbers come from engine/compare/ablation.py)."""
from __future__ import annotations

from core.history_file import GAP_ACCURACY, TEST_ACCURACY, TRAIN_EVAL_ACCURACY
from core.numbers import millions, points


def field_words(facts: dict) -> str:
    """A measured receptive field in a table: "53 px", or "n/a (why)" where no exact figure could be had."""
    if facts["receptive_field"] is None:
        return f"n/a ({facts['receptive_field_note']})"
    return f"{facts['receptive_field']} px"


def field_phrase(facts: dict) -> str:
    """The same in a sentence: "a 53-pixel receptive field", or "no exact receptive field (why)"."""
    if facts["receptive_field"] is None:
        return f"no exact receptive field ({facts['receptive_field_note']})"
    return f"a {facts['receptive_field']}-pixel receptive field"


def _interval(stats: dict) -> str:
    if stats["ci_low"] is None:
        return "-"
    return f"[{points(stats['ci_low'], signed=True)}, {points(stats['ci_high'], signed=True)}]"


def _facts(properties: dict) -> list[str]:
    field = field_words(properties) + ("" if properties["covers_image"] is not False else " (less than the image)")
    return [" → ".join(map(str, properties["resolution"])) + " px", " → ".join(map(str, properties["widths"])), field,
            f"{properties['parameters']:,}", millions(properties['macs_per_image'])]


def _final(net: dict, key: str) -> str:
    stats = net["final"].get(key)
    if stats is None:
        return "-"
    return f"{points(stats['mean'])}" + (f" ± {points(stats['sd'])}" if stats["sd"] is not None else "")


def ablation_summary(row: dict) -> str:
    """One contrast in one line (for the console)."""
    text = (f"{row['variant']} - {row['reference']}: differs in {', '.join(row['differs_in']) or 'nothing measured'}; "
            f"train-eval {points(row['train_eval_accuracy']['mean'], signed=True)} pts {_interval(row['train_eval_accuracy'])}")
    if "share" in row:
        text += f", {row['share']['words']} (share {row['share']['mean']:.2f})"
    return text


def ablation_lines(study: dict) -> list[str]:
    """The section of study.md: one row per network, the gain, one row per contrast, the rule."""
    ablation, nets = study["ablation"], study["nets"]
    baseline, target = ablation["baseline"], ablation["target"]
    contrasts = study.get("contrasts", {})
    lines = ["", "## What explains the gain (ablation)", "",
             f"Last epoch, mean ± sd over {len(study['seeds'])} seeds; verdicts against {baseline} by the rule above.", "",
             "| network | resolution | widths | receptive field | parameters | MACs per image | train-eval acc | "
             "test acc | gap (pts) | verdict |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, properties in ablation["properties"].items():
        verdict = contrasts[name]["verdict"] if name in contrasts else None
        cell = f"{verdict['verdict']} ({verdict['confidence']})" if verdict else "baseline"
        lines.append(f"| {name} | " + " | ".join(_facts(properties)) + " | "
                     + " | ".join(_final(nets[name], key) for key in (TRAIN_EVAL_ACCURACY, TEST_ACCURACY, GAP_ACCURACY))
                     + f" | {cell} |")
    gain = ablation["gain"]
    lines += ["", f"The gain to explain: {target} minus {baseline} in train-eval accuracy, "
                  f"{points(gain['mean'], signed=True)} pts {_interval(gain)} (per seed "
                  f"{', '.join(points(v, signed=True) for v in gain['values'])})"
              + ("." if gain["clear"] else "; its interval contains 0, so there is no gain to explain."), "",
              f"Paired contrasts (window means of the last {ablation['window']} epochs, differences in points, "
              "95 % intervals across seeds):", "",
              "| contrast | differs in | held equal | train-eval acc, per seed | mean [95 %] | share of the gain | "
              "test acc, mean [95 %] | P(variant > reference), test [95 %] |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in ablation["contrasts"]:
        train_eval, test, better = row["train_eval_accuracy"], row["test_accuracy"], row["p_better"]
        share = row.get("share")
        share_cell = (f"{share['mean']:.2f} [{share['ci_low']:.2f}, {share['ci_high']:.2f}]: {share['words']}"
                      if share else "-")
        lines.append(f"| {row['variant']} - {row['reference']} | {', '.join(row['differs_in']) or '-'} | "
                     f"{', '.join(row['held_equal']) or '-'} | {', '.join(points(v, signed=True) for v in train_eval['values'])} | "
                     f"{points(train_eval['mean'], signed=True)} {_interval(train_eval)} | {share_cell} | "
                     f"{points(test['mean'], signed=True)} {_interval(test)} | {better['wins']} of {better['seeds']} = "
                     f"{better['probability']:.2f} [{better['ci_low']:.2f}, {better['ci_high']:.2f}] |")
    lines += ["", "### The attribution rule", "", "```", ablation["rule"], "```"]
    return lines
