"""Figures without a display: the Agg backend chosen once, and the loss-and-accuracy curves of several nets that
reports and studies draw. matplotlib is imported only when a figure is drawn."""
from __future__ import annotations

from core.history_file import TEST_ACCURACY, TRAIN_EVAL_ACCURACY, TRAIN_LOSS


def pyplot():
    """matplotlib.pyplot on the Agg backend (PNG files, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_panels():
    """(figure, loss axes, accuracy axes): mean training loss and accuracy per epoch, side by side. Its margins are
    fixed for this size and these labels: tight_layout would draw the figure a second time to measure them, half of
    the time every report spends on its figure."""
    figure, (loss_axes, accuracy_axes) = pyplot().subplots(1, 2, figsize=(11, 4.2))
    figure.subplots_adjust(left=0.06, right=0.985, bottom=0.12, top=0.83, wspace=0.2)
    loss_axes.set(title="Mean training loss per epoch", xlabel="epoch", ylabel="cross-entropy")
    accuracy_axes.set(title="Accuracy per epoch", xlabel="epoch", ylabel="accuracy (%)")
    return figure, loss_axes, accuracy_axes


def save(figure, path: str, legends=(), tight: bool = True) -> None:
    """Grid and legend on each of `legends`, tight layout unless the figure has margins of its own, PNG at 110 dpi,
    figure closed."""
    for axes in legends:
        axes.grid(alpha=0.3)
        axes.legend()
    if tight:
        figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot().close(figure)


# Curve colours by position, baseline first (the bonus pair: orange, blue).
COLORS = ("tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def plot_curves_of(nets: dict[str, list[dict]], path: str, heading: str) -> None:
    """Loss and accuracy per epoch of every net (`nets`: name -> its records: numbers, or {mean, sd, ...} across seeds,
    drawn as means with ±1 sd bands), saved to `path` under `heading`."""
    figure, loss_axes, accuracy_axes = curve_panels()
    for color, (arch, epochs) in zip(COLORS, nets.items()):
        x = list(range(1, len(epochs) + 1))
        for axes, key, scale, style, legend in ((loss_axes, TRAIN_LOSS, 1, "o-", arch),
                                               (accuracy_axes, TEST_ACCURACY, 100, "o-", f"{arch} test"),
                                               (accuracy_axes, TRAIN_EVAL_ACCURACY, 100, "s--", f"{arch} train-eval")):
            if key not in epochs[0]:
                continue
            across_seeds = isinstance(epochs[0][key], dict)
            mean = [scale * (e[key]["mean"] if across_seeds else e[key]) for e in epochs]
            axes.plot(x, mean, style, color=color, label=legend)
            if across_seeds and epochs[0][key]["sd"] is not None:
                sd = [scale * e[key]["sd"] for e in epochs]
                axes.fill_between(x, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                  color=color, alpha=0.15)
    figure.suptitle(heading)
    save(figure, path, legends=(loss_axes, accuracy_axes), tight=False)
