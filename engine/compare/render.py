"""How comparisons and studies look: report.md and curves.png, study.md and study.png, and the console's table and
verdict lines, from the dicts engine/compare/report.py builds. A contrast has one section layout in both, and both
figures are one drawing (core/figures.py; a study's curves are means across seeds, with ±1 sd bands)."""
from __future__ import annotations

from core.figures import plot_curves_of
from core.history_file import (EPOCH, GAP_ACCURACY, GAP_LOSS, TEST_ACCURACY, TRAIN_EVAL_ACCURACY, TRAIN_LOSS,
                               VAL_ACCURACY, is_loss, is_result, record_label)
from core.numbers import counted, loss, millions, number, percent, points, record_cell, stats_cell
from core.recipe import Recipe
from core.recipe_words import augmentation_in_words, optimisation_in_words
from core.stats import expected_half_width
from engine.compare.ablation import ablation_lines, gain_markdown
from models import ARCHITECTURES, dir_name, field_words, label, noun

# The figures the reports show below their text (engine/compare/report.py writes them beside the Markdown).
REPORT_FIGURE, STUDY_FIGURE = "curves.png", "study.png"


def figure_link(figure: str) -> str:
    """The Markdown line that shows `figure` (a file beside the report) under a report's text."""
    return f"![curves]({figure})"



def _header_lines(report: dict) -> list[str]:
    runs, config = report["runs"], report["config"]
    last = list(runs)[-1]
    has_train_eval = TRAIN_EVAL_ACCURACY in runs[last]["final"]
    recipe = Recipe.from_dict(config)
    names = [label(name) for name in runs]
    kind = " ResNet" if all(name in ARCHITECTURES for name in runs) else ""  # a user's net may be anything
    device = f"device {runs[last]['device']}" + (f" ({runs[last]['machine']})" if runs[last].get("machine") else "")
    device += f", precision {runs[last]['precision']}" if runs[last].get("precision") else ""
    lines = [f"# {names[0][0].upper() + names[0][1:]} vs {' vs '.join(names[1:])}{kind} on {config['dataset']}", "",
             f"{'Both' if len(runs) == 2 else 'All'} runs: {counted(config['epochs'], 'epoch')}, "
             f"batch {config['batch_size']}, "
             f"{optimisation_in_words(recipe)}, seed {config['seed']}, augmentation {augmentation_in_words(recipe)}, "
             f"blocks per stage {config['blocks_per_stage']}, {device}"
             + (f", train-eval on {runs[last].get('train_eval_images', config['train_eval'])} fixed training images."
                if has_train_eval else "."), ""]
    users = [f"- **{name}**: {run['model']['description']}" for name, run in runs.items() if "description" in run["model"]]
    lines += users + [""] * bool(users)
    keys = result_keys(runs)
    lines += ["## Per epoch", "", "| epoch | net | " + " | ".join(map(record_label, keys)) + " |",
              "| ---: | --- |" + " ---: |" * len(keys)]
    for index in range(max(len(r["epochs"]) for r in runs.values())):
        lines += [f"| {run['epochs'][index][EPOCH]} | {arch} | "
                  + " | ".join(record_cell(run["epochs"][index], key) for key in keys) + " |"
                  for arch, run in runs.items() if index < len(run["epochs"])]
    lines += ["", "## Final numbers (last epoch)", "", "| | " + " | ".join(runs) + " |",
              "| --- |" + " ---: |" * len(runs)]
    rows = [(record_label(key), lambda r, key=key: record_cell(r["final"], key)) for key in keys]
    if has_train_eval:
        rows += [("gap: train-eval acc - test acc", lambda r: f"{points(r['final'][GAP_ACCURACY])} pts"),
                 ("gap: test loss - train-eval loss", lambda r: loss(r['final'][GAP_LOSS]))]
    if all("best_epoch" in run for run in runs.values()):
        by_val = all(run["best_epoch"].get("chosen_by") == VAL_ACCURACY for run in runs.values())
        rows.append(("test accuracy at the best epoch " + ("by validation accuracy" if by_val else
                                                           "(not the last), chosen on the test set (optimistic)"),
                     lambda r: f"{percent(r['best_epoch'][TEST_ACCURACY])} (epoch {r['best_epoch'][EPOCH]})"))
    rows += [("parameters", lambda r: f"{r['model']['parameters']:,}"),
             ("MACs per image", lambda r: millions(r['model']['macs_per_image'])),
             ("receptive field", lambda r: field_words(r["model"])),
             ("seconds per epoch (training)", lambda r: f"{r['seconds_per_epoch']:.1f}"),
             ("images per second (training)", lambda r: f"{r['images_per_s']:.0f}")]
    lines += [f"| {name} | " + " | ".join(cell(run) for run in runs.values()) + " |" for name, cell in rows]
    return lines


def render_report(report: dict) -> str:
    """report.md: per-epoch tables, final numbers side by side, then each verdict against the baseline with its
    explanation and where the gain comes from, and the rule."""
    names, contrasts = list(report["runs"]), report["contrasts"]
    lines = _header_lines(report)
    if len(contrasts) > 1:
        lines += ["", "## Against the baseline", "",
                  f"Every network is judged against {names[0]} by the same rule (below).", "",
                  "| network | parameters | MACs per image | receptive field | train-eval acc | test acc | gap | verdict |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for name, run in report["runs"].items():
            contrast = contrasts.get(name)
            verdict = f"{contrast['verdict']['verdict']} ({contrast['verdict']['confidence']})" if contrast else "baseline"
            final = run["final"]
            gap = f"{points(final[GAP_ACCURACY])} pts" if GAP_ACCURACY in final else "-"
            lines.append(f"| {name} | {run['model']['parameters']:,} | {millions(run['model']['macs_per_image'])} | "
                         f"{field_words(run['model'])} | {record_cell(final, TRAIN_EVAL_ACCURACY)} | "
                         f"{percent(final[TEST_ACCURACY])} | {gap} | {verdict} |")
        lines += [""] + [f"- **{name}**: {ARCHITECTURES[name].description}" for name in names if name in ARCHITECTURES]
    lines += _contrasts_and_rule(contrasts, names, _window_contrast_lines)
    return "\n".join(lines + ["", figure_link(REPORT_FIGURE), ""])


def _contrasts_and_rule(contrasts: dict, names: list[str], contrast_lines) -> list[str]:
    """Each contrast against the baseline (headed "Verdict" where there is one), then the rule that decided them."""
    lines = []
    for name, contrast in contrasts.items():
        lines += contrast_lines(contrast, (names[0], name), f"{name} against {names[0]}" if len(contrasts) > 1 else "Verdict")
    if contrasts:
        shown = [f"Shown for {names[1]}; every other network takes its place in turn.", ""] if len(contrasts) > 1 else []
        lines += ["## The rule", "", *shown, "```", next(iter(contrasts.values()))["rule"], "```"]
    return lines


def _window_contrast_lines(contrast: dict, names: tuple[str, str], heading: str) -> list[str]:
    """A contrast decided by the window rule (one seed): its explanation and the window's numbers that decided."""
    verdict = contrast["verdict"]
    base, cand = names
    lines = []
    if "differences" in verdict:
        lines += [f"Numbers that decided (means over the last {counted(verdict['window'], 'epoch')}, {label(cand)} "
                  f"minus {label(base)}, signed so that positive favours {noun(cand)}):",
                  "", "| quantity | difference | margin | clear |", "| --- | ---: | ---: | --- |"]
        for key, d in verdict["differences"].items():
            unit, scale = ("", 1) if is_loss(key) else (" pts", 100)
            lines.append(f"| {key.replace('_', ' ')} | {scale * d['value']:+.3f}{unit} | {scale * d['margin']:.3f}{unit} | "
                         f"{'yes' if d['clear'] else 'no'} |")
        lines += ["", f"Test accuracy over the window: {base} "
                  f"{', '.join(percent(v) for v in verdict['window_stats'][base][TEST_ACCURACY]['values'])}; "
                  f"{cand} {', '.join(percent(v) for v in verdict['window_stats'][cand][TEST_ACCURACY]['values'])}"
                  f" ({'ranges do not overlap' if verdict['test_ranges_separated'] else 'ranges overlap'}).", "",
                  more_seeds_note(verdict), ""]
    return contrast_section(contrast, heading, contrast["explanation"], lines)


def missing_words(study: dict) -> str:
    """What a study's plan holds that its directory does not: 'The plan holds seed 1 too, but seed1/ is gone: left
    out of this summary'."""
    missing = study["missing"]
    places = [f"{path} is gone" if path.endswith("/") else f"{path} has no history.json"
              for paths in missing.values() for path in paths]
    return (f"The plan holds seed{'s' if len(missing) > 1 else ''} {' '.join(missing)} too, but {'; '.join(places)}: "
            "left out of this summary")


def render_study(study: dict) -> str:
    """study.md: final numbers across seeds per net, per-epoch means, the paired differences and the verdict."""
    seeds, recipe = study["seeds"], Recipe.from_dict(study["recipe"])
    lines = [f"# {recipe.dataset}: {' vs '.join(study['nets'])} across {counted(len(seeds), 'seed')}", "",
             *([f"**{missing_words(study)}.**", ""] if "missing" in study else []),
             f"Seeds {', '.join(map(str, seeds))}; {counted(recipe.epochs, 'epoch')}, batch {recipe.batch_size}, "
             f"{optimisation_in_words(recipe)}, augmentation {augmentation_in_words(recipe)}, blocks per stage "
             f"{recipe.blocks_per_stage}, train-eval {study.get('train_eval_images', recipe.train_eval)}"
             + (f", precision {study['precision']}." if study.get("precision") else "."), "",
             "Accuracies in %, losses as they are: mean ± sample sd [95 % Student-t interval, df = K - 1].", "",
             "## Last epoch", "", "| quantity | " + " | ".join(study["nets"]) + " |",
             "| --- |" + " ---: |" * len(study["nets"])]
    for key in study["nets"][next(iter(study["nets"]))]["final"]:
        lines.append(f"| {record_label(key)} | " + " | ".join(stats_cell(key, net["final"][key]) for net in study["nets"].values()) + " |")
    lines += ["", "## Per epoch (mean across seeds)", "",
              "| epoch | net | mean train loss | test acc | train-eval acc |", "| ---: | --- | ---: | ---: | ---: |"]
    for arch, net in study["nets"].items():
        for index, epoch in enumerate(net["per_epoch"], start=1):
            train_eval = epoch.get(TRAIN_EVAL_ACCURACY)
            lines.append(f"| {index} | {arch} | {stats_cell(TRAIN_LOSS, epoch[TRAIN_LOSS])} | {stats_cell(TEST_ACCURACY, epoch[TEST_ACCURACY])} | "
                         f"{stats_cell(TRAIN_EVAL_ACCURACY, train_eval) if train_eval else '-'} |")
    lines += _contrasts_and_rule(study.get("contrasts", {}), list(study["nets"]), _paired_contrast_lines)
    if "ablation" in study:
        lines += ablation_lines(study)
    lines += ["", figure_link(STUDY_FIGURE), ""]
    return "\n".join(lines)


def _paired_contrast_lines(contrast: dict, names: tuple[str, str], heading: str) -> list[str]:
    """A study's contrast: the paired differences across seeds (or, with one seed, what more seeds would give)."""
    verdict = contrast["verdict"]
    base, cand = names
    lines = []
    if "paired_differences" in verdict:
        lines += [f"Paired differences ({label(cand)} minus {label(base)} per seed, window means of the last "
                  f"{counted(verdict['window'], 'epoch')}; positive favours {noun(cand)}):", "",
                  "| quantity | per seed | mean | 95 % interval | margin | clear |", "| --- | --- | ---: | --- | ---: | --- |"]
        for key, d in verdict["paired_differences"].items():
            lines.append(f"| {record_label(key)} | {', '.join(number(key, v) for v in d['values'])} | "
                         f"{number(key, d['mean'])} | [{number(key, d['ci_low'])}, {number(key, d['ci_high'])}] | "
                         f"{number(key, d['margin'])} | {'yes' if d['clear'] else 'no'} |")
        lines.append("")
    else:
        lines += [more_seeds_note(verdict), ""]
    return contrast_section(contrast, heading, verdict["reason"] + ".", lines)


def contrast_section(contrast: dict, heading: str, opening: str, body: list[str]) -> list[str]:
    """One contrast in report.md or study.md: its heading with the verdict, an opening paragraph, the numbers that
    decided (`body`), and where the gain comes from."""
    verdict = contrast["verdict"]
    lines = ["", f"## {heading}: {verdict['verdict']} (confidence: {verdict['confidence']})", "", opening, ""] + body
    if "where_the_gain_comes_from" in contrast:
        lines += gain_markdown(contrast["where_the_gain_comes_from"])
    return lines


def console_table(report: dict) -> str:
    """A compact table for the terminal: every recorded result of the last epoch (the same keys as report.md's), the
    gap, and the verdict(s)."""
    names, runs = list(report["runs"]), report["runs"]
    widths = [max(14, len(dir_name(name)) + 2) for name in names]  # a long name never runs into the next
    lines = [f"{'':<30}" + "".join(f"{dir_name(name):>{width}}" for name, width in zip(names, widths))]
    for key in [*result_keys(runs), GAP_ACCURACY]:
        if all(key in run["final"] for run in runs.values()):
            written = loss if is_loss(key) else points
            lines.append(f"{record_label(key) + ('' if is_loss(key) else ' %'):<30}"
                         + "".join(f"{written(runs[name]['final'][key]):>{width}}" for name, width in zip(names, widths)))
    return "\n".join(lines + verdict_lines(report))


def result_keys(runs: dict) -> list[str]:
    """The trained results a report's tables show, in the order the runs recorded them: whatever metrics the registry
    (core/history_file.METRICS) had them measure, on every split they evaluated (first the baseline's)."""
    keys = {}
    for run in runs.values():
        keys.update((key, None) for key in run["epochs"][-1] if is_result(key))
    return list(keys)


def verdict_lines(record: dict, verdict_words: str = "Verdict") -> list[str]:
    """The console's lines for each contrast of a report or study: the verdict and where the gain comes from,
    naming the candidate and the baseline where there are several."""
    contrasts = record.get("contrasts", {})
    baseline = list(record.get("runs") or record.get("nets"))[0]
    lines = []
    for name, contrast in contrasts.items():
        against = f" ({name} against {baseline})" if len(contrasts) > 1 else ""
        verdict = contrast["verdict"]
        lines.append(f"{verdict_words}{against}: {verdict['verdict']} (confidence: {verdict['confidence']})")
        gain = contrast.get("where_the_gain_comes_from", {})
        if "classes" in gain:
            lines.append(f"Where the gain comes from{against}: {gain['classes']['summary']}")
    return lines


def more_seeds_note(verdict: dict) -> str:
    """With one seed: how much firmer more seeds would make the test-accuracy difference, from the observed
    epoch-to-epoch noise of the two nets over the window (a stand-in for the seed-to-seed spread)."""
    if "window_stats" not in verdict:
        return "One seed: the window rule was used; more seeds (`--seeds 0 1 2`) would give a confidence interval."
    single, multi = (stats[TEST_ACCURACY]["std"] for stats in verdict["window_stats"].values())
    noise = (single**2 + multi**2) ** 0.5
    widths = ", ".join(f"K = {k}: ± {points(expected_half_width(noise, k))} pts" for k in (3, 5, 10))
    return (f"One seed: the window rule was used. The test-accuracy difference moved by about {points(noise)} points "
            f"(sd) from epoch to epoch; if seeds spread it as much, a paired study's 95 % interval would be {widths} "
            f"(`--seeds`).")


def plot_curves(report: dict, path: str) -> None:
    """curves.png: mean train loss per epoch; train-eval (dashed) and test (solid) accuracy per epoch; every net."""
    verdicts = "; ".join(c["verdict"]["verdict"] for c in report["contrasts"].values())
    plot_curves_of({arch: run["epochs"] for arch, run in report["runs"].items()}, path,
          f"{report['config']['dataset']}: {' vs '.join(label(name) for name in report['runs'])} ResNet — {verdicts}")


def plot_study(study: dict, path: str) -> None:
    """study.png: mean training loss and test (solid) / train-eval (dashed) accuracy per epoch, ±1 sd bands."""
    verdict = "; ".join(c["verdict"]["verdict"] for c in study.get("contrasts", {}).values())
    plot_curves_of({arch: net["per_epoch"] for arch, net in study["nets"].items()}, path,
          f"{study['recipe']['dataset']}, seeds {', '.join(map(str, study['seeds']))}: mean ± sd across seeds"
          + (f" — {verdict}" if verdict else ""))
