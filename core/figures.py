"""Figures without a display: the Agg backend chosen once, and the loss-and-accuracy panels that the comparison
reports share. matplotlib is imported only when a figure is drawn."""
from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (PNG files, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_panels():
    """(figure, loss axes, accuracy axes): mean training loss and accuracy per epoch, side by side."""
    figure, (loss_axes, accuracy_axes) = pyplot().subplots(1, 2, figsize=(11, 4.2))
    loss_axes.set(title="Mean training loss per epoch", xlabel="epoch", ylabel="cross-entropy")
    accuracy_axes.set(title="Accuracy per epoch", xlabel="epoch", ylabel="accuracy (%)")
    return figure, loss_axes, accuracy_axes


def save(figure, path: str, legends=()) -> None:
    """Grid and legend on each of `legends`, tight layout, PNG at 110 dpi, figure closed."""
    for axes in legends:
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot().close(figure)
