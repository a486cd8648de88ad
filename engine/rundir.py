"""Run (and bonus and study) directories: named by what tells runs apart, created exclusively (on rank 0 under
torchrun), never overwritten, and cleared of what a kill left before a run starts again. One process at a time uses
one: engine/run_lock.py."""
from __future__ import annotations

import os
import time

from core.errors import RunDirError
from core.history_file import HISTORY_FILE, TEMP_SUFFIX
from core.recipe import Recipe
from engine.run_lock import LOCK_FILE, in_use, on_rank_0
from handlers.tensorboard_logging import is_event_file
from models import BONUS_PAIR, architecture, dir_name

MAX_SUFFIX = 1000


def run_dir_of(path: str) -> str:
    """The run directory `path` names: a checkpoint file's own folder, or `path` itself."""
    return (os.path.dirname(path) or ".") if os.path.isfile(path) else path


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def net_label(recipe: Recipe) -> str:
    """The network part of a directory name: `multistage-2bps`, or `singlestage` (which has no stages)."""
    name = dir_name(recipe.arch)
    return f"{name}-{recipe.blocks_per_stage}bps" if architecture(recipe.arch).staged else name


def default_run_dir(root: str, recipe: Recipe) -> str:
    """`root/<dataset>-<net>-seed<seed>-<YYYYmmdd-HHMMSS>`: the name TensorBoard's run selector shows, so it says
    what tells runs apart."""
    return os.path.join(root, f"{recipe.dataset}-{net_label(recipe)}-seed{recipe.seed}-{timestamp()}")


def comparison_label(nets: tuple[str, ...]) -> str:
    """The comparison part of a directory name: `bonus` for the bonus pair, else `compare-<net>-<net>-...`."""
    return "bonus" if tuple(nets) == BONUS_PAIR else "compare-" + "-".join(map(dir_name, nets))


def comparison_flag(nets: tuple[str, ...]) -> str:
    """The flag that asks for this comparison: `--bonus`, or `--compare A B ...`."""
    return "--bonus" if tuple(nets) == BONUS_PAIR else "--compare " + " ".join(nets)


def continuing_command(directory: str, nets: tuple[str, ...] | None = None, seeds: tuple[int, ...] | None = None) -> str:
    """The command that continues `directory`: a run, a comparison of `nets`, or a study of `seeds` (of `nets`)."""
    seeds_flag = f" --seeds {' '.join(map(str, seeds))}" if seeds else ""
    nets_flag = f" {comparison_flag(nets)}" if nets else ""
    return f"python run.py{seeds_flag}{nets_flag} --resume {directory}"


def default_comparison_dir(root: str, recipe: Recipe, nets: tuple[str, ...]) -> str:
    """`root/<dataset>-<bonus|compare-...>-<time>`: a comparison directory (one run per network inside)."""
    return os.path.join(root, f"{recipe.dataset}-{comparison_label(nets)}-{timestamp()}")


def default_study_dir(root: str, recipe: Recipe, seeds: list[int], nets: tuple[str, ...] | None) -> str:
    """`root/<dataset>-<net|bonus|compare-...>-seeds<k1-k2-...>-<time>`: a study directory (one run or comparison
    per seed)."""
    what = comparison_label(nets) if nets else net_label(recipe)
    return os.path.join(root, f"{recipe.dataset}-{what}-seeds{'-'.join(map(str, seeds))}-{timestamp()}")


def default_report_dir(root: str, dataset: str) -> str:
    """`root/<dataset>-report-<time>`: the report of two runs compared after the fact."""
    return os.path.join(root, f"{dataset}-report-{timestamp()}")


@on_rank_0
def create_run_dir(path: str, numbered: bool = False) -> str:
    """Create `path` exclusively (os.mkdir) and return it. A path that exists is refused, unless `numbered` (a
    default name, which the user did not choose): then the first free of `path-2`, `path-3`, ... is taken, so
    that runs started in the same second never share a directory. Under torchrun rank 0 creates it and every
    process learns the name (or the one-line error)."""
    parent = os.path.dirname(path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
    except FileExistsError:
        pass  # a file where the parent should be: os.mkdir below says "Not a directory"
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {path}: {exc.strerror}") from None
    candidates = [path] + ([f"{path}-{n}" for n in range(2, MAX_SUFFIX)] if numbered else [])
    for candidate in candidates:
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {candidate}: {exc.strerror}") from None
        if not os.access(candidate, os.W_OK | os.X_OK):  # root passes this; others learn it here, not mid-run
            os.rmdir(candidate)
            raise RunDirError(f"run directory {candidate} is not writable")
        return candidate
    if os.path.isdir(path):
        raise RunDirError(f"run directory {path} already exists; choose another --output-dir (runs are never overwritten)")
    if os.path.exists(path):
        raise RunDirError(f"run directory {path} exists and is a file, not a directory")
    raise RunDirError(f"no free name for {path}-N (N < {MAX_SUFFIX})")


def continue_or_claim(resume_dir: str | None, output_dir: str | None, default: str) -> str:
    """The directory of a bonus or study: `resume_dir` when continuing one (it must exist), else a new one claimed
    exclusively: `output_dir` as given, or `default` (numbered, since the user did not choose it)."""
    if resume_dir is None:
        return create_run_dir(output_dir or default, numbered=output_dir is None)
    if not os.path.isdir(resume_dir):
        raise RunDirError(f"cannot resume: {resume_dir} is not a directory")
    return resume_dir


def clear_unstarted_run(run_dir: str) -> None:
    """A member run of a bonus or study killed before its first checkpoint leaves only what a start writes: its lock
    (which nobody holds any more), a TensorBoard event file, a history.json without a checkpoint behind it, a
    half-written temp file. Remove those (nothing of value) and then the empty folder, so that the run starts afresh
    in place; anything else is left alone, and the run refuses to start over it."""
    if not os.path.isdir(run_dir) or in_use(run_dir):
        return
    remove_stale_temp_files(run_dir)
    for name in os.listdir(run_dir):
        if is_event_file(name) or name in (HISTORY_FILE, LOCK_FILE):
            os.remove(os.path.join(run_dir, name))
    if not os.listdir(run_dir):
        os.rmdir(run_dir)


def remove_stale_temp_files(run_dir: str) -> list[str]:
    """Remove what a kill can leave half-written: the temp files of atomic writes (checkpoints, history.json).
    Returns the names removed."""
    removed = []
    for name in sorted(os.listdir(run_dir)):
        if name.endswith(TEMP_SUFFIX):
            os.remove(os.path.join(run_dir, name))
            removed.append(name)
    return removed
