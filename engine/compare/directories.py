"""What a directory given to `--resume` holds (a run, a comparison or a study), as its record or else its files say;
what `--resume DIR` alone therefore continues, and with which recorded flags; and the refusal of a command that
contradicts it: a resume never trains a bonus inside a run, nor seeds inside a bonus, nor other seeds or nets in a
study."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from core.directory_record import COMPARISON, STUDY, read_record
from core.errors import UserError
from core.history_file import HISTORY_FILE, read_history
from core.recipe import Recipe
from engine.compare.comparison import comparison_nets, net_dir
from engine.compare.study import is_study, recorded_run, seed_dir, study_seeds
from engine.precision import AMP_MODES, recorded_mode
from engine.resume import has_checkpoint
from engine.rundir import comparison_flag, continuing_command, run_dir_of


@dataclass(frozen=True)
class DirectoryKind:
    """What kind of directory one is: a `run`, a `comparison` of `nets`, or a `study` of `seeds` (of `nets`, if
    compared); `recorded`: said by the directory's record, not guessed from the folders that exist."""

    kind: str
    nets: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    recorded: bool = False

    def in_words(self) -> str:
        """'a single run', 'a comparison (--bonus)', 'a study of seeds 0 1 2 (--bonus)'."""
        what = f" ({comparison_flag(self.nets)})" if self.nets else ""
        if self.kind == STUDY:
            return f"a study of seed{'s' if len(self.seeds) > 1 else ''} {' '.join(map(str, self.seeds))}{what}"
        return f"a comparison{what}" if self.kind == COMPARISON else "a single run"

    def command(self, directory: str) -> str:
        """The command that continues it."""
        return continuing_command(directory, self.nets, self.seeds if self.kind == STUDY else None)


def directory_kind(directory: str) -> DirectoryKind | None:
    """What `directory` holds, going by its record, else by its files; None for a directory that holds none of these
    (yet)."""
    if not os.path.isdir(directory):
        return None
    record = read_record(directory)
    if record is not None:
        return DirectoryKind(record.kind, record.nets, record.seeds if record.kind == STUDY else None, recorded=True)
    if is_study(directory):
        seeds = tuple(study_seeds(directory))
        nets = next((found for found in (comparison_nets(seed_dir(directory, s)) for s in seeds) if found), None)
        return DirectoryKind(STUDY, nets, seeds)
    nets = comparison_nets(directory)
    if nets is not None:
        return DirectoryKind(COMPARISON, nets)
    if os.path.isfile(os.path.join(directory, HISTORY_FILE)) or has_checkpoint(directory):
        return DirectoryKind("run")
    return None


def runs_in(directory: str) -> list[str]:
    """The run directories `directory` holds, in order: itself for a run (or a checkpoint file), each net's for a
    comparison, each seed's (and each of its nets') for a study."""
    kind = directory_kind(directory)
    if kind is None or kind.kind == "run":
        return [directory]
    folders = [seed_dir(directory, seed) for seed in kind.seeds] if kind.kind == STUDY else [directory]
    return [net_dir(folder, arch) for folder in folders for arch in kind.nets] if kind.nets else folders


def what_to_resume(directory: str, seeds: list[int] | None,
                   nets: tuple[str, ...] | None) -> tuple[list[int] | None, tuple[str, ...] | None]:
    """The seeds and nets a resume of `directory` continues: `--resume DIR` alone continues whatever DIR is; seeds and
    nets given must be DIR's own. Anything else is refused before anything is written, in one line that says what
    DIR is and the command that continues it."""
    found = directory_kind(directory)
    if found is None:
        return seeds, nets
    if not seeds and not nets:
        return (list(found.seeds) if found.kind == STUDY else None), (found.nets if found.kind != "run" else None)
    asked = STUDY if seeds else COMPARISON if nets else "run"
    if found.kind == STUDY == asked:  # a study of one net per seed, or of comparisons
        members = [directory_kind(seed_dir(directory, seed)) for seed in found.seeds]
        single_runs = any(member is not None and member.kind == "run" for member in members)
        contradicts = (bool(nets) and single_runs or not nets and found.nets is not None
                       or found.recorded and (sorted(seeds) != sorted(found.seeds) or (found.nets or None) != nets))
    else:
        contradicts = found.kind != asked or found.kind == COMPARISON and found.recorded and found.nets != nets
    if contradicts:
        raise UserError(f"cannot resume {directory}: it is {found.in_words()}; continue it with: "
                        f"{found.command(directory)}")
    return seeds, nets


def check_recorded_recipe(directory: str, recipe: Recipe) -> None:
    """Refuse, naming the field, a resume of a comparison or study with another recipe than its record holds (its
    runs, where they exist, check their own histories as well); more epochs are fine where a run's would be."""
    record = read_record(directory)
    if record is None or not record.recipe:
        return
    difference = recipe.difference(record.recipe, ignore=frozenset({"arch", "seed"}) | recipe.resumable())
    if difference:
        raise UserError(f"cannot resume {directory}: {difference}")


def flags_in_record(directory: str) -> dict:
    """The recipe, data folder and --amp mode a comparison or study recorded when it started: what a resume takes
    for flags not given again while none of its runs has a history yet. Empty without a record."""
    record = read_record(directory) if os.path.isdir(directory) else None
    if record is None or not record.recipe:
        return {}
    flags = dict(record.recipe)
    flags.update({name: value for name, value in (("data_dir", record.data_dir), ("amp", record.amp)) if value})
    return flags


def recorded_flags(resume: str | None) -> dict:
    """For `--resume RUN_DIR|CHECKPOINT|BONUS_DIR|STUDY_DIR`: the recorded recipe, data folder and precision mode
    (`engine.compare.study.recorded_run`), which stand for any of those flags not given again, so that the command an interrupted run,
    bonus or study prints (`python run.py [--bonus] [--seeds ...] --resume DIR`) continues it as it was; for a
    comparison or study none of whose runs has a history yet, what its record says. Empty for `auto`."""
    if not resume or resume == "auto":
        return {}
    run_dir = recorded_run(run_dir_of(resume))
    if run_dir is None:  # a comparison or study none of whose runs has a history yet
        return flags_in_record(run_dir_of(resume))
    try:
        history = read_history(run_dir)
        recorded = dataclasses.asdict(history.recipe)
    except (UserError, TypeError, ValueError):
        return {}  # the resume itself then says what is wrong with the run, in one line
    if isinstance(history.config.get("data_dir"), str):
        recorded["data_dir"] = history.config["data_dir"]
    if history.precision is not None:  # the precision it trained in, not the mode that chose it on its machine
        recorded["amp"] = recorded_mode(history.amp_dtype)
    elif history.config.get("amp") in AMP_MODES:
        recorded["amp"] = history.config["amp"]
    return recorded
