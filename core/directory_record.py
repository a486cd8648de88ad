"""What a comparison or a study directory is, recorded in it before anything else: its nets (and a study's seeds), the
recipe, the data folder and the `--amp` mode, so that `python run.py --resume DIR` continues it as it was started,
whatever a kill left in it. (A run needs no record of its own: its history.json and checkpoints are one.)

A comparison's record is `comparison.json` (one holding only "nets" is read too: a resume then takes the recipe from
its runs' histories); a study's is `study-plan.json`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from core.errors import UserError
from core.history_file import write_json

COMPARISON, STUDY = "comparison", "study"
RECORD_FILES = {STUDY: "study-plan.json", COMPARISON: "comparison.json"}


@dataclass(frozen=True)
class DirectoryRecord:
    """A comparison of `nets` (baseline first), or a study of `seeds` (of `nets` when it compares nets)."""

    kind: str
    nets: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    recipe: dict | None = None  # the Recipe's fields; a comparison sets each run's arch, a study each run's seed
    data_dir: str | None = None
    amp: str | None = None  # --amp as given

    def write(self, directory: str) -> None:
        """Write the record into `directory`, atomically."""
        write_json(os.path.join(directory, RECORD_FILES[self.kind]),
                   {"nets": list(self.nets) if self.nets else None, "seeds": list(self.seeds) if self.seeds else None,
                    "recipe": self.recipe, "data_dir": self.data_dir, "amp": self.amp})


def read_record(directory: str) -> DirectoryRecord | None:
    """The record of `directory`, or None where it has none."""
    for kind, name in RECORD_FILES.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                data = json.load(f)
            nets, seeds = data.get("nets"), data.get("seeds")
            return DirectoryRecord(kind, tuple(nets) if nets else None, tuple(seeds) if seeds else None,
                                   data.get("recipe"), data.get("data_dir"), data.get("amp"))
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
    return None
