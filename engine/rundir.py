"""Run (and bonus) directories: named by what tells runs apart, created exclusively, never shared or overwritten."""
from __future__ import annotations

import os
import re
import time

import ignite.distributed as idist

from core.errors import RunDirError
from core.recipe import Recipe

MAX_SUFFIX = 1000
_DISK_SAVER_TEMP = re.compile(r"tmp[a-z0-9_]{8}")  # tempfile.NamedTemporaryFile names (ignite's atomic DiskSaver)


def run_dir_of(path: str) -> str:
    """The run directory `path` names: a checkpoint file's own folder, or `path` itself."""
    return (os.path.dirname(path) or ".") if os.path.isfile(path) else path


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def default_run_dir(root: str, recipe: Recipe) -> str:
    """`root/<dataset>-<arch>-<blocks>bps-seed<seed>-<YYYYmmdd-HHMMSS>`: the name TensorBoard's run selector
    shows, so it says what tells runs apart. The single-stage net has no stages, hence no block count."""
    blocks = f"-{recipe.blocks_per_stage}bps" if recipe.arch == "multistage" else ""
    return os.path.join(root, f"{recipe.dataset}-{recipe.arch}{blocks}-seed{recipe.seed}-{timestamp()}")


def create_run_dir(path: str, numbered: bool = False) -> str:
    """Create `path` exclusively (os.mkdir) and return it. A path that exists is refused, unless `numbered` (a
    default name, which the user did not choose): then the first free of `path-2`, `path-3`, ... is taken, so
    that runs started in the same second never share a directory."""
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


def claim_run_dir(path: str, numbered: bool = False) -> str:
    """`create_run_dir` on rank 0; under torchrun every process then learns the name (or the one-line error)."""
    result = ""
    if idist.get_rank() == 0:
        try:
            result = create_run_dir(path, numbered)
        except RunDirError as exc:
            result = "\0" + str(exc)
    if idist.get_world_size() > 1:
        result = idist.broadcast(result, src=0, safe_mode=True)
    if result.startswith("\0"):
        raise RunDirError(result[1:])
    return result


def remove_stale_temp_files(run_dir: str) -> list[str]:
    """Remove what a kill can leave half-written: the atomic checkpoint writer's temp file and history.json.tmp.
    Returns the names removed."""
    removed = []
    for name in sorted(os.listdir(run_dir)):
        if _DISK_SAVER_TEMP.fullmatch(name) or name == "history.json.tmp":
            os.remove(os.path.join(run_dir, name))
            removed.append(name)
    return removed
