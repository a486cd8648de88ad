"""Which process may do what: the lock of a run, bonus or study directory, which one process uses at a time (`hold`;
another is refused in one line naming the holder). Under torchrun with `--parallel data` rank 0 decides and the
other processes follow its verdict (`on_rank_0`), and rank 0 alone writes what a comparison or study writes while
the others wait (`write_on_rank_0`). (With `--parallel members` the processes form no group: engine/compare/dealing.py.)"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sys
import time
from typing import Callable

import ignite.distributed as idist

from core.errors import RunDirError, RunInUse

LOCK_FILE = "run.lock"


def on_rank_0(action: Callable[..., str]) -> Callable[..., str]:
    """`action`, decided on rank 0 only: under torchrun every process then gets its result (a string), or raises the
    one-line error it raised, so that all processes follow rank 0's verdict."""
    @functools.wraps(action)
    def decided(*args, **kwargs) -> str:
        result, error = "", None
        if idist.get_rank() == 0:
            try:
                result = action(*args, **kwargs)
            except RunDirError as exc:
                error, result = exc, "\0" + str(exc)
        if idist.get_world_size() > 1:
            result = idist.broadcast(result, src=0, safe_mode=True)
        if error is not None:
            raise error
        if result.startswith("\0"):
            raise RunDirError(result[1:])
        return result

    return decided


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


def in_use(directory: str, clear: bool = False) -> str | None:
    """The process that holds `directory`'s lock ('process <pid> (started <time>)'), or None. With `clear`, a lock
    file that nobody holds (its holder was killed before it could remove it) is removed; otherwise it writes nothing.
    (It takes the lock for an instant, so a process locking the same directory at that instant is refused.)"""
    try:
        fd = _try_lock(directory, create=False)
    except RunInUse as exc:
        return exc.holder
    except RunDirError:
        return None
    if fd is not None:
        if clear:
            _remove_lock_file(directory)
        os.close(fd)  # closing the only fd of the lock releases it
    return None


def _remove_lock_file(directory: str) -> None:
    """Remove `directory`'s lock file while holding its lock (see `hold`); say so only where it cannot be removed."""
    try:
        os.unlink(os.path.join(directory, LOCK_FILE))
    except FileNotFoundError:  # the directory itself may be gone
        pass
    except OSError as exc:
        print(f"note: cannot remove {os.path.join(directory, LOCK_FILE)}, which no process holds: {exc.strerror}",
              file=sys.stderr, flush=True)


@contextlib.contextmanager
def hold(directory: str, members=()):
    """Hold `directory`'s lock while the block runs: another process that wants to write it is refused in one line
    (RunInUse, naming this process). `members` are runs inside it (a bonus's nets, a study's seeds) that must not
    be in use elsewhere either; they are checked first, so that a refused process writes nothing at all, and the
    lock file a killed holder left in one is removed, so that a finished directory holds none.

    An `fcntl.flock` dies with its holder, SIGKILL included, so a killed run never leaves a stale lock (its file
    stays until the next holder lets go). A holder that ends removes the file while it still holds the lock, so a
    finished directory holds no `run.lock`; a process that locked the removed file meanwhile sees that the name no
    longer points to it and tries again (`_try_lock`). Under torchrun rank 0 holds it and the other processes follow
    its verdict."""
    fds = []

    @on_rank_0
    def lock() -> str:
        for member in members:
            holder = in_use(member)
            if holder:
                raise RunInUse(in_use_message(member, holder), holder)
        fd = _try_lock(directory, create=True)
        fds.append(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        for member in members:
            in_use(member, clear=True)
        return ""

    lock()
    try:
        yield
    finally:
        for fd in fds:
            _remove_lock_file(directory)
            os.close(fd)


def write_on_rank_0(write: Callable[[], object]) -> object:
    """Call `write()` on rank 0 only and return what it returns there (None on the others); under torchrun the other
    processes wait until it is done. A failure is raised on rank 0 after the barrier, so that no process waits
    forever."""
    failure = written = None
    if idist.get_rank() == 0:
        try:
            written = write()
        except Exception as exc:
            failure = exc
    idist.barrier()
    if failure is not None:
        raise failure
    return written
