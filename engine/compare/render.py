"""How a report looks, from the one dict engine/compare/report.py builds for any plan: its Markdown (report.md of a
comparison, study.md of a study), its figure (curves.png, study.png) and what the console shows. One seed shows each
run's numbers, several seeds their means and spreads; a contrast has one section, laid out by the rule that decided
it; the figure is one drawing (core/figures.py; across seeds means with ±1 sd bands)."""
from __future__ import annotations

from core.figures import plot_curves_of
from core.history_file import (EPOCH, GAP_ACCURACY, GAP_LOSS, TEST_ACCURACY, TRAIN_EVAL_ACCURACY, TRAIN_LOSS,
                               VAL_ACCURACY, is_loss, is_result, record_label)
from core.numbers import counted, loss, millions, number, percent, points, record_cell, stats_cell
from core.recipe import Recipe
from core.recipe_words import augmentation_in_words, optimisation_in_words
from core.stats import expected_half_width
from engine.compare.ablation import ablation_lines, ablation_summary, gain_markdown
from engine.compare.verdict import PAIRED
from models import ARCHITECTURES, dir_name, field_words, label, noun

# The figures the reports show below their text (engine/compare/report.py writes them beside the Markdown).
REPORT_FIGURE, STUDY_FIGURE = "curves.png", "study.png"


def figure_link(figure: str) -> str:
    """The Markdown line that shows `figure` (a file beside the report) under a report's text."""
    return f"![curves]({figure})"


def _runs_lines(report: dict) -> list[str]:
    """One seed: the recipe, then each run's numbers per epoch and at the end, side by side."""
    runs = {arch: net["runs"][0] for arch, net in report["nets"].items()}
    config = {**report["recipe"], "seed": report["seeds"][0]}
    last = list(runs)[-1]
    has_train_eval = TRAIN_EVAL_ACCURACY in runs[last]["final"]
    recipe = Recipe.from_dict(config)
    kind = " ResNet" if all(name in ARCHITECTURES for name in runs) else ""  # a user's net may be anything
    device = f"device {runs[last]['device']}" + (f" ({runs[last]['machine']})" if runs[last].get("machine") else "")
    device += f", precision {runs[last]['precision']}" if runs[last].get("precision") else ""
    title = " vs ".join(label(name) for name in runs)
    lines = [f"# {title[0].upper() + title[1:]}{kind} on {config['dataset']}", "",
             f"{({1: 'The run', 2: 'Both runs'}).get(len(runs), 'All runs')}: {counted(config['epochs'], 'epoch')}, "
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
             ("seconds per epoch (training)", lambda r: "-" if r["seconds_per_epoch"] is None else f"{r['seconds_per_epoch']:.1f}"),
             ("images per second (training)", lambda r: "-" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}")]
    lines += [f"| {name} | " + " | ".join(cell(run) for run in runs.values()) + " |" for name, cell in rows]
    return lines


def _against_lines(report: dict) -> list[str]:
    """One seed, three nets or more: each against the baseline in one table."""
    names, contrasts = list(report["nets"]), report["contrasts"]
    lines = ["", "## Against the baseline", "",
             f"Every network is judged against {names[0]} by the same rule (below).", "",
             "| network | parameters | MACs per image | receptive field | train-eval acc | test acc | gap | verdict |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, net in report["nets"].items():
        (run, *_), contrast = net["runs"], contrasts.get(name)
        verdict = f"{contrast['verdict']['verdict']} ({contrast['verdict']['confidence']})" if contrast else "baseline"
        final = run["final"]
        gap = f"{points(final[GAP_ACCURACY])} pts" if GAP_ACCURACY in final else "-"
        lines.append(f"| {name} | {run['model']['parameters']:,} | {millions(run['model']['macs_per_image'])} | "
                     f"{field_words(run['model'])} | {record_cell(final, TRAIN_EVAL_ACCURACY)} | "
                     f"{percent(final[TEST_ACCURACY])} | {gap} | {verdict} |")
    return lines + [""] + [f"- **{name}**: {ARCHITECTURES[name].description}" for name in names if name in ARCHITECTURES]


def render(report: dict, figure: str) -> str:
    """report.md or study.md, for any plan: the recipe and the numbers (with one seed each run's, per epoch and at the
    end; across seeds their mean ± sd), each net's contrast against the baseline and the rule that decided it, the
    ablation where there is one, and `figure` below."""
    one_seed = len(report["seeds"]) == 1
    lines = _runs_lines(report) if one_seed else _seeds_lines(report)
    if "missing" in report:  # under the title
        lines[2:2] = [f"**{missing_words(report)}.**", ""]
    contrasts, names = report.get("contrasts", {}), list(report["nets"])
    if one_seed and len(contrasts) > 1:
        lines += _against_lines(report)
    for name, contrast in contrasts.items():
        lines += _contrast_lines(contrast, (names[0], name), f"{name} against {names[0]}" if len(contrasts) > 1 else "Verdict")
    if contrasts:
        shown = [f"Shown for {names[1]}; every other network takes its place in turn.", ""] if len(contrasts) > 1 else []
        lines += ["## The rule", "", *shown, "```", next(iter(contrasts.values()))["rule"], "```"]
    if "ablation" in report:
        lines += ablation_lines(report)
    return "\n".join(lines + ["", figure_link(figure), ""])


def _seeds_lines(report: dict) -> list[str]:
    """Several seeds: the recipe, then each net's numbers across seeds, at the last epoch and per epoch."""
    seeds, recipe, nets = report["seeds"], Recipe.from_dict(report["recipe"]), report["nets"]
    lines = [f"# {recipe.dataset}: {' vs '.join(nets)} across {counted(len(seeds), 'seed')}", "",
             f"Seeds {', '.join(map(str, seeds))}; {counted(recipe.epochs, 'epoch')}, batch {recipe.batch_size}, "
             f"{optimisation_in_words(recipe)}, augmentation {augmentation_in_words(recipe)}, blocks per stage "
             f"{recipe.blocks_per_stage}, train-eval {report.get('train_eval_images', recipe.train_eval)}"
             + (f", precision {report['precision']}." if report.get("precision") else "."), "",
             "Accuracies in %, losses as they are: mean ± sample sd [95 % Student-t interval, df = K - 1].", "",
             "## Last epoch", "", "| quantity | " + " | ".join(nets) + " |", "| --- |" + " ---: |" * len(nets)]
    for key in next(iter(nets.values()))["final"]:
        lines.append(f"| {record_label(key)} | " + " | ".join(stats_cell(key, net["final"][key]) for net in nets.values()) + " |")
    keys = list(dict.fromkeys(key for net in nets.values() for key in net["per_epoch"][-1] if is_result(key)))
    lines += ["", "## Per epoch (mean across seeds)", "", "| epoch | net | " + " | ".join(map(record_label, keys)) + " |",
              "| ---: | --- |" + " ---: |" * len(keys)]
    lines += [f"| {index} | {arch} | " + " | ".join(stats_cell(key, epoch[key]) if key in epoch else "-" for key in keys) + " |"
              for arch, net in nets.items() for index, epoch in enumerate(net["per_epoch"], start=1)]
    return lines


def _contrast_lines(contrast: dict, names: tuple[str, str], heading: str) -> list[str]:
    """One contrast: its heading with the verdict, the explanation, the numbers that decided by the rule that decided
    (`decided_by`: the window of one seed's last epochs, or paired differences across seeds), and where the gain
    comes from."""
    verdict, (base, cand) = contrast["verdict"], names
    lines = ["", f"## {heading}: {verdict['verdict']} (confidence: {verdict['confidence']})", "",
             contrast["explanation"], ""]
    if contrast["decided_by"] == PAIRED:
        lines += [f"Paired differences ({label(cand)} minus {label(base)} per seed, window means of the last "
                  f"{counted(verdict['window'], 'epoch')}; positive favours {noun(cand)}):", "",
                  "| quantity | per seed | mean | 95 % interval | margin | clear |", "| --- | --- | ---: | --- | ---: | --- |"]
        lines += [f"| {record_label(key)} | {', '.join(number(key, v) for v in d['values'])} | "
                  f"{number(key, d['mean'])} | [{number(key, d['ci_low'])}, {number(key, d['ci_high'])}] | "
                  f"{number(key, d['margin'])} | {'yes' if d['clear'] else 'no'} |"
                  for key, d in verdict["paired_differences"].items()] + [""]
    elif "differences" in verdict:
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
                  f" ({'ranges do not overlap' if verdict['test_ranges_separated'] else 'ranges overlap'}).", ""]
    if contrast["decided_by"] != PAIRED:
        lines += [more_seeds_note(verdict), ""]
    if "where_the_gain_comes_from" in contrast:
        lines += gain_markdown(contrast["where_the_gain_comes_from"])
    return lines


def missing_words(report: dict) -> str:
    """What a study's plan holds that its directory does not: 'The plan holds seed 1 too, but seed1/ is gone: left
    out of this summary'."""
    missing = report["missing"]
    places = [f"{path} is gone" if path.endswith("/") else f"{path} has no history.json"
              for paths in missing.values() for path in paths]
    return (f"The plan holds seed{'s' if len(missing) > 1 else ''} {' '.join(missing)} too, but {'; '.join(places)}: "
            "left out of this summary")


def console_summary(report: dict) -> str:
    """What the console shows of a report: with one seed a table of the last epoch's numbers; across seeds each net's
    test accuracy (mean ± sd) and last train loss; then the verdicts, and the ablation's contrasts in one line each."""
    nets = report["nets"]
    if len(report["seeds"]) == 1:  # every recorded result of the last epoch (report.md's keys) and the gap
        runs = {arch: net["runs"][0] for arch, net in nets.items()}
        rows = {record_label(key) + ("" if is_loss(key) else " %"): [(loss if is_loss(key) else points)(run["final"][key])
                                                                     for run in runs.values()]
                for key in [*result_keys(runs), GAP_ACCURACY] if all(key in run["final"] for run in runs.values())}
        first = max([30, *(len(row) + 2 for row in rows)])  # a long name or label never runs into the next column
        widths = [max(14, len(dir_name(name)) + 2) for name in runs]
        lines = [f"{'':<{first}}" + "".join(f"{dir_name(name):>{width}}" for name, width in zip(runs, widths))]
        lines += [f"{row:<{first}}" + "".join(f"{cell:>{width}}" for cell, width in zip(cells, widths))
                  for row, cells in rows.items()]
        return "\n".join(lines + verdict_lines(report))
    final = ", ".join(f"{arch} test accuracy {percent(net['final'][TEST_ACCURACY]['mean'])}"
                      + (f" ± {points(net['final'][TEST_ACCURACY]['sd'])}" if net["final"][TEST_ACCURACY]["sd"] is not None else "")
                      for arch, net in nets.items())
    return "\n".join([f"Across {counted(len(report['seeds']), 'seed')}: {final}; mean train loss of the last epoch "
                      + ", ".join(loss(net['final'][TRAIN_LOSS]['mean']) for net in nets.values()),
                      *verdict_lines(report, "Verdict across seeds"),
                      *(f"Ablation: {ablation_summary(row)}" for row in report.get("ablation", {}).get("contrasts", []))])


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
    contrasts, baseline, lines = record.get("contrasts", {}), record.get("baseline"), []
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


def plot(report: dict, path: str) -> None:
    """The figure below a report: mean train loss, train-eval (dashed) and test (solid) accuracy per epoch of every
    net; across seeds their means with ±1 sd bands."""
    verdicts = "; ".join(c["verdict"]["verdict"] for c in report.get("contrasts", {}).values())
    seeds, dataset = report["seeds"], report["recipe"]["dataset"]
    if len(seeds) == 1:
        curves = {arch: net["runs"][0]["epochs"] for arch, net in report["nets"].items()}
        heading = f"{dataset}: {' vs '.join(label(name) for name in report['nets'])} ResNet"
    else:
        curves = {arch: net["per_epoch"] for arch, net in report["nets"].items()}
        heading = f"{dataset}, seeds {', '.join(map(str, seeds))}: mean ± sd across seeds"
    plot_curves_of(curves, path, heading + (f" — {verdicts}" if verdicts else ""))
