"""What a directory is: one plan, a grid of nets × seeds trained with one recipe.

A single run is the 1×1 plan (its history.json, written before it trains, is its record); `--bonus` and `--compare`
are N nets × 1 seed (record: `comparison.json`, runs in `<net>/`); `--seeds` is 1 net × K seeds (record:
`study-plan.json`, runs in `seed<k>/`), and with `--bonus`/`--compare` N × K (`seed<k>/<net>/`, each seed folder an
ordinary comparison). A plan is written first, atomically, under the directory's lock, so that `python run.py
--resume DIR` continues DIR as it was started, whatever a kill left in it. What a directory is, the command that
continues it and the refusal of a command that contradicts it come from the plan alone; a directory written before
records existed (a bonus without comparison.json, a study without study-plan.json) is read from its folders.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from core.errors import UserError
from core.history_file import HISTORY_FILE, read_history, write_json
from core.recipe import Recipe
from engine.precision import AMP_MODES, recorded_mode
from engine.resume import cannot_train_on, has_checkpoint, recorded_history
from engine.rundir import comparison_flag, continuing_command, run_dir_of
from models import BONUS_PAIR, dir_name

RUN, COMPARISON, STUDY = "run", "comparison", "study"
RECORD_FILES = {STUDY: "study-plan.json", COMPARISON: "comparison.json"}
SEED_PREFIX = "seed"


def net_dir(directory: str, arch: str) -> str:
    """Where a comparison keeps the run of `arch`: `<net>/`."""
    return os.path.join(directory, dir_name(arch))


def seed_dir(study_dir: str, seed: int) -> str:
    """Where a study keeps the run (or comparison) of `seed`: `seed<k>/`."""
    return os.path.join(study_dir, f"{SEED_PREFIX}{seed}")


def seed_of(folder_name: str) -> int | None:
    """k for a study's `seed<k>` folder name, else None."""
    number = folder_name.removeprefix(SEED_PREFIX)
    return int(number) if number != folder_name and number.isdigit() else None


@dataclass(frozen=True)
class Member:
    """One run of a plan: its seed and net (None: the recipe's), the seed's folder and the run's own."""

    seed: int | None
    arch: str | None
    folder: str
    run_dir: str

    @property
    def name(self) -> str:
        """'multistage seed 1', 'multistage', 'seed 1'."""
        return " ".join(part for part in (self.arch, None if self.seed is None else f"seed {self.seed}") if part)

    def recipe(self, recipe: Recipe) -> Recipe:
        """The plan's recipe with this member's seed and net."""
        return dataclasses.replace(recipe, **({} if self.seed is None else {"seed": self.seed}),
                                   **({} if self.arch is None else {"arch": self.arch}))


@dataclass(frozen=True)
class Plan:
    """A directory's grid: `nets` (baseline first; None for one net, the recipe's) × `seeds` (None for one seed, the
    recipe's); the recipe's fields, data folder and `--amp` mode it started with; `recorded`: said by its record, not
    read from the folders that exist."""

    kind: str
    nets: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    recipe: dict | None = None  # the runs' shared fields: a comparison sets each run's arch, a study each run's seed
    data_dir: str | None = None
    amp: str | None = None
    recorded: bool = False

    def write(self, directory: str) -> None:
        """Write the plan into `directory`, atomically (a run's is its history.json, written by its session)."""
        write_json(os.path.join(directory, RECORD_FILES[self.kind]),
                   {"nets": list(self.nets) if self.nets else None, "seeds": list(self.seeds) if self.seeds else None,
                    "recipe": self.recipe, "data_dir": self.data_dir, "amp": self.amp})

    def folders(self, directory: str) -> list[tuple[int | None, str]]:
        """(seed, folder) of each seed: the directory itself without seeds, else `seed<k>/`."""
        return [(seed, seed_dir(directory, seed)) for seed in self.seeds] if self.seeds else [(None, directory)]

    def members(self, directory: str) -> list[Member]:
        """Every run of the grid, seed by seed, each seed's nets in order: what training the plan walks."""
        return [Member(seed, arch, folder, folder if arch is None else net_dir(folder, arch))
                for seed, folder in self.folders(directory) for arch in self.nets or (None,)]

    def runs(self, directory: str) -> list[str]:
        """Every run directory of the grid, in the members' order."""
        return [member.run_dir for member in self.members(directory)]

    def in_words(self) -> str:
        """'a single run', 'a comparison (--bonus)', 'a study of seeds 0 1 2 (--bonus)'."""
        what = f" ({comparison_flag(self.nets)})" if self.nets else ""
        if self.kind == STUDY:
            return f"a study of seed{'s' if len(self.seeds) > 1 else ''} {' '.join(map(str, self.seeds))}{what}"
        return f"a comparison{what}" if self.kind == COMPARISON else "a single run"

    def command(self, directory: str) -> str:
        """The command that continues it."""
        return continuing_command(directory, self.nets, self.seeds)

    def heading(self, directory: str) -> str:
        """The line training it opens with: 'Study directory: D (seeds 0, 1)', 'Bonus directory: D', ..."""
        if self.kind == STUDY:
            return f"Study directory: {directory} (seeds {', '.join(map(str, self.seeds))})"
        return f"{'Bonus' if self.nets == BONUS_PAIR else 'Comparison'} directory: {directory}"

    def of_seed(self, seed: int) -> Plan:
        """A study of comparisons: the plan of its `seed<k>/` folder, an ordinary comparison."""
        return dataclasses.replace(self, kind=COMPARISON, seeds=None, recipe={**self.recipe, "seed": seed})


def read_plan(directory: str) -> Plan | None:
    """The plan of `directory`: its record, else what its folders say; None for a directory that holds none (yet)."""
    if not os.path.isdir(directory):
        return None
    for kind, name in RECORD_FILES.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                data = json.load(f)
            nets, seeds = data.get("nets"), data.get("seeds") if kind == STUDY else None
            return Plan(kind, tuple(nets) if nets else None, tuple(seeds) if seeds else None, data.get("recipe"),
                        data.get("data_dir"), data.get("amp"), recorded=True)
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
    seeds = tuple(sorted(seed for seed in map(seed_of, os.listdir(directory)) if seed is not None))
    if seeds:
        plans = (read_plan(seed_dir(directory, seed)) for seed in seeds)
        return Plan(STUDY, next((p.nets for p in plans if p is not None and p.nets), None), seeds)
    if any(os.path.isdir(net_dir(directory, arch)) for arch in BONUS_PAIR):  # a bonus, perhaps not yet finished
        return Plan(COMPARISON, BONUS_PAIR)
    if os.path.isfile(os.path.join(directory, HISTORY_FILE)) or has_checkpoint(directory):
        return Plan(RUN)
    return None


def runs_in(directory: str) -> list[str]:
    """The run directories `directory` holds, in order: itself for a run (or a checkpoint file), each net's for a
    comparison, each seed's (and each of its nets') for a study."""
    plan = read_plan(directory)
    return [directory] if plan is None or plan.kind == RUN else plan.runs(directory)


def existing_runs(directory: str) -> list[str]:
    """The seed folders and runs of `directory`'s plan that exist: what a lock on it must find free."""
    plan = read_plan(directory)
    if plan is None or plan.kind == RUN:
        return []
    folders = [folder for _seed, folder in plan.folders(directory) if folder != directory]
    return [path for path in folders + plan.runs(directory) if os.path.isdir(path)]


def what_to_resume(directory: str, seeds: list[int] | None,
                   nets: tuple[str, ...] | None) -> tuple[list[int] | None, tuple[str, ...] | None]:
    """The seeds and nets a resume of `directory` continues: `--resume DIR` alone continues whatever DIR is; seeds and
    nets given must be DIR's own. Anything else is refused before anything is written, in one line that says what
    DIR is and the command that continues it."""
    found = read_plan(directory)
    if found is None:
        return seeds, nets
    if not seeds and not nets:
        return (list(found.seeds) if found.seeds else None), found.nets
    asked = STUDY if seeds else COMPARISON if nets else RUN
    if found.kind == STUDY == asked:  # a study of one net per seed, or of comparisons
        members = [read_plan(folder) for _seed, folder in found.folders(directory)]
        single_runs = any(member is not None and member.kind == RUN for member in members)
        contradicts = (bool(nets) and single_runs or not nets and found.nets is not None
                       or found.recorded and (sorted(seeds) != sorted(found.seeds) or (found.nets or None) != nets))
    else:
        contradicts = found.kind != asked or found.kind == COMPARISON and found.nets != nets
    if contradicts:
        raise UserError(f"cannot resume {directory}: it is {found.in_words()}; continue it with: "
                        f"{found.command(directory)}")
    return seeds, nets


def check_recorded_recipe(directory: str, recipe: Recipe) -> None:
    """Refuse, naming the field, a resume of a comparison or study with another recipe than its plan holds (its runs,
    where they exist, check their own histories as well), or with epochs one of its runs cannot train on to
    (`cannot_train_on`); more epochs are fine where a run's would be. Said before anything is written."""
    plan = read_plan(directory)
    if plan is None or plan.kind == RUN:
        return
    difference = plan.recipe and recipe.difference(plan.recipe, ignore=frozenset({"arch", "seed"}) | recipe.resumable())
    if difference:
        raise UserError(f"cannot resume {directory}: {difference}")
    for run in plan.runs(directory):
        try:
            why_not = cannot_train_on(read_history(run), recipe)
        except UserError:
            continue  # no readable history: the run's own resume says what it holds
        if why_not:
            raise UserError(f"cannot resume {directory}: {run} {why_not}")


def recorded_flags(resume: str | None) -> dict:
    """For `--resume RUN_DIR|CHECKPOINT|BONUS_DIR|STUDY_DIR`: the recipe, data folder and precision mode recorded by
    its first run that has a history (the runs of a plan share one recipe but for the architecture and the seed,
    which the plan sets), else by its plan; they stand for any of those flags not given again, so that the command an
    interrupted run, bonus or study prints continues it as it was. Empty for `auto`."""
    if not resume or resume == "auto":
        return {}
    directory = run_dir_of(resume)
    run_dir = next((run for run in runs_in(directory) if os.path.isfile(os.path.join(run, HISTORY_FILE))
                    or has_checkpoint(run)), None)
    if run_dir is None:  # a comparison or study none of whose runs has a history yet
        plan = read_plan(directory) if os.path.isdir(directory) else None
        if plan is None or not plan.recipe:
            return {}
        return {**plan.recipe, **{name: value for name, value in (("data_dir", plan.data_dir), ("amp", plan.amp)) if value}}
    try:
        history = recorded_history(run_dir)  # history.json, or a lost one's copy in the newest checkpoint
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
