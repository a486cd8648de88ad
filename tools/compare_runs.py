#!/usr/bin/env python
"""Side by side, from history files: final test accuracy and mean train loss, per-epoch test accuracy, seconds.

    python tools/compare_runs.py docs/results/end-to-end-cpu-xeon/*.history.json

Prints one Markdown row per history (a run directory's history.json or a copy of it): precision, final test
accuracy, final mean training loss, median training seconds per epoch, and the test accuracy of every epoch.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.history_file import TEST_ACCURACY, TRAIN_LOSS, TRAIN_SECONDS, read_history_file  # noqa: E402


def row(path: str) -> str:
    history = read_history_file(path)
    epochs = history.epochs
    precision = history.amp_dtype or ("bfloat16" if history.data.get("amp") else "float32")
    accuracies = " ".join(f"{100 * e[TEST_ACCURACY]:.2f}" for e in epochs)
    return (f"| {os.path.basename(path)} | {history.recipe.arch} | {precision} | "
            f"{100 * epochs[-1][TEST_ACCURACY]:.2f}% | {epochs[-1][TRAIN_LOSS]:.4f} | "
            f"{statistics.median(e[TRAIN_SECONDS] for e in epochs):.1f} | {accuracies} |")


if __name__ == "__main__":
    print("| history | net | precision | final test acc | final train loss | median train s/epoch | test acc per epoch (%) |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- |")
    for path in sys.argv[1:]:
        print(row(path))
