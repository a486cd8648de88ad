"""How a comparison report looks: report.md and curves.png, from the report dict that engine/compare/report.py builds."""
from __future__ import annotations

from core.figures import curve_panels, save
from core.history_file import (EPOCH, GAP_ACCURACY, GAP_LOSS, TEST_ACCURACY, TEST_LOSS, TEST_TOP5, TRAIN_EVAL_ACCURACY,
                               TRAIN_EVAL_LOSS, TRAIN_LOSS, is_loss)
from core.numbers import loss, millions, percent, points
from core.recipe import Recipe
from core.recipe_words import augmentation_in_words, optimisation_in_words
from engine.compare.ablation import field_words
from engine.compare.study_views import COLORS, contrast_section, more_seeds_note
from engine.compare.verdict import contrasts_of
from models import ARCHITECTURES, label, noun


def _record_cell(record: dict, key: str) -> str:
    if key not in record:
        return "-"
    return loss(record[key]) if is_loss(key) else percent(record[key])


def title(report: dict) -> str:
    names = [label(name) for name in report["runs"]]
    kind = " ResNet" if all(name in ARCHITECTURES for name in report["runs"]) else ""  # a user's net may be anything
    return f"{names[0][0].upper() + names[0][1:]} vs {' vs '.join(names[1:])}{kind} on {report['config']['dataset']}"


def _device_in_words(run: dict) -> str:
    """'device cpu (AMD EPYC, 2 threads), precision bf16 autocast', as far as the run recorded it."""
    words = f"device {run['device']}" + (f" ({run['machine']})" if run.get("machine") else "")
    return words + (f", precision {run['precision']}" if run.get("precision") else "")


def _header_lines(report: dict) -> list[str]:
    runs, config = report["runs"], report["config"]
    last = list(runs)[-1]
    has_train_eval = TRAIN_EVAL_ACCURACY in runs[last]["final"]
    recipe = Recipe.from_dict(config)
    lines = [f"# {title(report)}", "",
             f"{'Both' if len(runs) == 2 else 'All'} runs: {config['epochs']} epochs, batch {config['batch_size']}, "
             f"{optimisation_in_words(recipe)}, seed {config['seed']}, augmentation {augmentation_in_words(recipe)}, "
             f"blocks per stage {config['blocks_per_stage']}, {_device_in_words(runs[last])}"
             + (f", train-eval on {config['train_eval']} fixed training images." if has_train_eval else "."), ""]
    users = [f"- **{name}**: {run['model']['description']}" for name, run in runs.items() if "description" in run["model"]]
    lines += users + [""] * bool(users)
    lines += ["## Per epoch", ""]
    header = "| epoch | net | mean train loss | train-eval acc | train-eval loss | test acc | test top-5 | test loss |"
    lines += [header, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for index in range(max(len(r["epochs"]) for r in runs.values())):
        for arch in runs:
            if index < len(runs[arch]["epochs"]):
                e = runs[arch]["epochs"][index]
                lines.append(f"| {e[EPOCH]} | {arch} | {loss(e[TRAIN_LOSS])} | {_record_cell(e, TRAIN_EVAL_ACCURACY)} | "
                             f"{_record_cell(e, TRAIN_EVAL_LOSS)} | {percent(e[TEST_ACCURACY])} | {percent(e[TEST_TOP5])} | "
                             f"{loss(e[TEST_LOSS])} |")
    lines += ["", "## Final numbers (last epoch)", "", "| | " + " | ".join(runs) + " |",
              "| --- |" + " ---: |" * len(runs)]
    rows = [("mean train loss (last epoch)", lambda r: loss(r['final'][TRAIN_LOSS]))]
    if has_train_eval:
        rows += [("train-eval accuracy", lambda r: percent(r["final"][TRAIN_EVAL_ACCURACY])),
                 ("train-eval loss", lambda r: loss(r['final'][TRAIN_EVAL_LOSS]))]
    rows += [("test accuracy", lambda r: percent(r["final"][TEST_ACCURACY])),
             ("test top-5", lambda r: percent(r["final"][TEST_TOP5])),
             ("test loss", lambda r: loss(r['final'][TEST_LOSS]))]
    if has_train_eval:
        rows += [("gap: train-eval acc - test acc", lambda r: f"{points(r['final'][GAP_ACCURACY])} pts"),
                 ("gap: test loss - train-eval loss", lambda r: loss(r['final'][GAP_LOSS]))]
    if all("best_epoch" in run for run in runs.values()):
        rows.append(("test accuracy at the best epoch (not the last)",
                     lambda r: f"{percent(r['best_epoch'][TEST_ACCURACY])} (epoch {r['best_epoch'][EPOCH]})"))
    rows += [("parameters", lambda r: f"{r['model']['parameters']:,}"),
             ("MACs per image", lambda r: millions(r['model']['macs_per_image'])),
             ("receptive field", lambda r: field_words(r["model"])),
             ("seconds per epoch (training)", lambda r: f"{r['seconds_per_epoch']:.1f}"),
             ("images per second (training)", lambda r: f"{r['images_per_s']:.0f}")]
    lines += [f"| {name} | " + " | ".join(cell(run) for run in runs.values()) + " |" for name, cell in rows]
    return lines


def _contrast_lines(contrast: dict, names: tuple[str, str], heading: str) -> list[str]:
    """A comparison's contrast: its explanation and the window's numbers that decided."""
    verdict = contrast["verdict"]
    base, cand = names
    lines = []
    if "differences" in verdict:
        lines += [f"Numbers that decided (means over the last {verdict['window']} epochs, {label(cand)} minus "
                  f"{label(base)}, signed so that positive favours {noun(cand)}):",
                  "", "| quantity | difference | margin | clear |", "| --- | ---: | ---: | --- |"]
        for key, d in verdict["differences"].items():
            unit = "" if is_loss(key) else " pts"
            scale = 1 if is_loss(key) else 100
            lines.append(f"| {key.replace('_', ' ')} | {scale * d['value']:+.3f}{unit} | {scale * d['margin']:.3f}{unit} | "
                         f"{'yes' if d['clear'] else 'no'} |")
        lines += ["", f"Test accuracy over the window: {base} "
                  f"{', '.join(percent(v) for v in verdict['window_stats'][base][TEST_ACCURACY]['values'])}; "
                  f"{cand} {', '.join(percent(v) for v in verdict['window_stats'][cand][TEST_ACCURACY]['values'])}"
                  f" ({'ranges do not overlap' if verdict['test_ranges_separated'] else 'ranges overlap'}).", "",
                  more_seeds_note(verdict), ""]
    return contrast_section(contrast, heading, contrast["explanation"], lines)


def render_report(report: dict) -> str:
    """report.md: per-epoch tables, final numbers side by side, then each verdict against the baseline with its
    explanation and where the gain comes from, and the rule."""
    names = list(report["runs"])
    lines = _header_lines(report)
    if len(contrasts_of(report)) == 1:  # a pair: one verdict
        lines += _contrast_lines(report, (names[0], names[1]), "Verdict")
        lines += ["## The rule", "", "```", report["rule"], "```", "", "![curves](curves.png)", ""]
        return "\n".join(lines)
    lines += ["", "## Against the baseline", "",
              f"Every network is judged against {names[0]} by the same rule (below).", "",
              "| network | parameters | MACs per image | receptive field | train-eval acc | test acc | gap | verdict |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, run in report["runs"].items():
        contrast = report["contrasts"].get(name)
        verdict = f"{contrast['verdict']['verdict']} ({contrast['verdict']['confidence']})" if contrast else "baseline"
        final = run["final"]
        gap = f"{points(final[GAP_ACCURACY])} pts" if GAP_ACCURACY in final else "-"
        lines.append(f"| {name} | {run['model']['parameters']:,} | {millions(run['model']['macs_per_image'])} | "
                     f"{field_words(run['model'])} | {_record_cell(final, TRAIN_EVAL_ACCURACY)} | "
                     f"{percent(final[TEST_ACCURACY])} | {gap} | {verdict} |")
    lines += [""] + [f"- **{name}**: {ARCHITECTURES[name].description}" for name in names if name in ARCHITECTURES]
    for name, contrast in report["contrasts"].items():
        lines += _contrast_lines(contrast, (names[0], name), f"{name} against {names[0]}")
    first = next(iter(report["contrasts"].values()))
    lines += ["## The rule", "", f"Shown for {names[1]}; every other network takes its place in turn.", "",
              "```", first["rule"], "```", "", "![curves](curves.png)", ""]
    return "\n".join(lines)


def plot_curves(report: dict, path: str) -> None:
    """curves.png: mean train loss per epoch; train-eval (dashed) and test (solid) accuracy per epoch; every net."""
    figure, loss_axes, accuracy_axes = curve_panels()
    for color, (arch, run) in zip(COLORS, report["runs"].items()):
        epochs = run["epochs"]
        x = [e[EPOCH] for e in epochs]
        loss_axes.plot(x, [e[TRAIN_LOSS] for e in epochs], "o-", color=color, label=arch)
        accuracy_axes.plot(x, [100 * e[TEST_ACCURACY] for e in epochs], "o-", color=color, label=f"{arch} test")
        if TRAIN_EVAL_ACCURACY in epochs[0]:
            accuracy_axes.plot(x, [100 * e[TRAIN_EVAL_ACCURACY] for e in epochs], "s--", color=color,
                               label=f"{arch} train-eval")
    verdicts = "; ".join(c["verdict"]["verdict"] for c in report.get("contrasts", {"": report}).values())
    figure.suptitle(f"{report['config']['dataset']}: {' vs '.join(label(name) for name in report['runs'])} ResNet — {verdicts}")
    save(figure, path, legends=(loss_axes, accuracy_axes))
