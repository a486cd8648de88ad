"""What a directory given to `--resume` holds (a run, a comparison or a study), as its files say, and the refusal of a
command of another kind: a resume never trains a bonus inside a run, nor seeds inside a bonus."""
from __future__ import annotations

import os
from dataclasses import dataclass

from core.errors import UserError
from core.history_file import HISTORY_FILE
from engine.compare.comparison import comparison_flag, comparison_nets
from engine.compare.study import is_study, seed_dir, study_seeds
from engine.resume import has_checkpoint


@dataclass(frozen=True)
class Holding:
    """What a directory holds: a `run`, a `comparison` of `nets`, or a `study` of `seeds` (of `nets`, if compared)."""

    kind: str
    nets: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None

    def in_words(self) -> str:
        """'a single run', 'a comparison (--bonus)', 'a study of seeds 0 1 2 (--bonus)'."""
        what = f" ({comparison_flag(self.nets)})" if self.nets else ""
        if self.kind == "study":
            return f"a study of seed{'s' if len(self.seeds) > 1 else ''} {' '.join(map(str, self.seeds))}{what}"
        return f"a comparison{what}" if self.kind == "comparison" else "a single run"

    def command(self, directory: str) -> str:
        """The command that continues it."""
        seeds = f" --seeds {' '.join(map(str, self.seeds))}" if self.kind == "study" else ""
        nets = f" {comparison_flag(self.nets)}" if self.nets else ""
        return f"python run.py{seeds}{nets} --resume {directory}"


def holding(directory: str) -> Holding | None:
    """What `directory` holds, going by its files; None for a directory that holds none of these (yet)."""
    if not os.path.isdir(directory):
        return None
    if is_study(directory):
        seeds = tuple(study_seeds(directory))
        nets = next((found for found in (comparison_nets(seed_dir(directory, s)) for s in seeds) if found), None)
        return Holding("study", nets, seeds)
    nets = comparison_nets(directory)
    if nets is not None:
        return Holding("comparison", nets)
    if os.path.isfile(os.path.join(directory, HISTORY_FILE)) or has_checkpoint(directory):
        return Holding("run")
    return None


def check_resume_kind(directory: str, seeds: list[int] | None, nets: tuple[str, ...] | None) -> None:
    """Refuse, before anything is written, a resume whose command asks for another kind of directory than the one
    `directory` is (`--bonus` on a run, `--seeds` on a bonus, a study resumed without `--seeds`, ...): one line that
    says what it is and the command that continues it."""
    found = holding(directory)
    asked = "study" if seeds else "comparison" if nets else "run"
    if found is None:
        return
    if found.kind == "study" == asked:  # a study of one net per seed, or of comparisons: as its seed folders say
        members = [holding(seed_dir(directory, seed)) for seed in found.seeds]
        single_runs = any(member is not None and member.kind == "run" for member in members)
        if not (bool(nets) and single_runs or not nets and found.nets is not None):
            return
    elif found.kind == asked:
        return
    raise UserError(f"cannot resume {directory}: it is {found.in_words()}; continue it with: {found.command(directory)}")
