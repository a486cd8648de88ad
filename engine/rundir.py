"""Run (and bonus and study) directories: named by what tells runs apart, created exclusively, used by one
process at a time (`hold`), never overwritten."""
from __future__ import annotations

import contextlib
import fcntl
import os
import time

import ignite.distributed as idist

from core.errors import RunDirError, RunInUse
from core.history_file import HISTORY_FILE, TEMP_SUFFIX
from core.recipe import Recipe
from handlers.tensorboard_logging import is_event_file
from models import BONUS_PAIR, architecture, dir_name

MAX_SUFFIX = 1000
LOCK_FILE = "run.lock"


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


def on_rank_0(action):
    """`action()` on rank 0 only; under torchrun every process then gets its result (a string), or raises the
    one-line error it raised, so that all processes follow rank 0's verdict."""
    result, error = "", None
    if idist.get_rank() == 0:
        try:
            result = action()
        except RunDirError as exc:
            error, result = exc, "\0" + str(exc)
    if idist.get_world_size() > 1:
        result = idist.broadcast(result, src=0, safe_mode=True)
    if error is not None:
        raise error
    if result.startswith("\0"):
        raise RunDirError(result[1:])
    return result


def claim_run_dir(path: str, numbered: bool = False) -> str:
    """`create_run_dir` on rank 0; under torchrun every process then learns the name (or the one-line error)."""
    return on_rank_0(lambda: create_run_dir(path, numbered))


def _holder(fd: int) -> str:
    """What the lock file says of its holder: 'process <pid> (started <time>)'. A holder writes it right after
    locking, so an empty file is given a moment to fill."""
    deadline = time.monotonic() + 1.0
    while True:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text.endswith(")") or time.monotonic() > deadline:
            return text or "another process"
        time.sleep(0.01)


def _try_lock(directory: str, create: bool) -> int | None:
    """An fd of `directory`'s lock file holding the lock, or None where there is no lock file and not `create`.
    Raises RunInUse, naming the holder, when a live process holds it."""
    path = os.path.join(directory, LOCK_FILE)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            if create:
                raise RunDirError(f"{directory} is not a directory") from None
            return None
        except OSError as exc:
            raise RunDirError(f"cannot lock {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunInUse(in_use_message(directory, holder), holder) from None
        if _is_named(fd, path):
            return fd
        # Its holder removed this file as it let go (`hold`), after we opened it: a lock on it guards nothing.
        # Try again with the file the name holds now, if any.
        os.close(fd)


def _is_named(fd: int, path: str) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def in_use_message(directory: str, holder: str) -> str:
    return f"{directory} is in use by {holder}; wait for it or stop it"


def in_use(directory: str) -> str | None:
    """The process that holds `directory`'s lock ('process <pid> (started <time>)'), or None. Writes nothing.
    (It takes the lock for an instant, so a process locking the same directory at that instant is refused.)"""
    try:
        fd = _try_lock(directory, create=False)
    except RunInUse as exc:
        return exc.holder
    except RunDirError:
        return None
    if fd is not None:
        os.close(fd)  # closing the only fd of the lock releases it
    return None


@contextlib.contextmanager
def hold(directory: str, members=()):
    """Hold `directory`'s lock while the block runs: another process that wants to write it is refused in one line
    (RunInUse, naming this process). `members` are runs inside it (a bonus's nets, a study's seeds) that must not
    be in use elsewhere either; they are checked first, so that a refused process writes nothing at all.

    An `fcntl.flock` dies with its holder, SIGKILL included, so a killed run never leaves a stale lock (its file
    stays until the next holder lets go). A holder that ends removes the file while it still holds the lock, so a
    finished directory holds no `run.lock`; a process that locked the removed file meanwhile sees that the name no
    longer points to it and tries again (`_try_lock`). Under torchrun rank 0 holds it and the other processes follow
    its verdict."""
    fds = []

    def lock() -> str:
        for member in members:
            holder = in_use(member)
            if holder:
                raise RunInUse(in_use_message(member, holder), holder)
        fd = _try_lock(directory, create=True)
        fds.append(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        return ""

    on_rank_0(lock)
    try:
        yield
    finally:
        for fd in fds:
            with contextlib.suppress(FileNotFoundError):  # the directory itself may be gone
                os.unlink(os.path.join(directory, LOCK_FILE))
            os.close(fd)


def continue_or_claim(resume_dir: str | None, output_dir: str | None, default: str) -> str:
    """The directory of a bonus or study: `resume_dir` when continuing one (it must exist), else a new one claimed
    exclusively: `output_dir` as given, or `default` (numbered, since the user did not choose it)."""
    if resume_dir is None:
        return claim_run_dir(output_dir or default, numbered=output_dir is None)
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
