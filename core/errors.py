"""Errors a user can cause and fix; `run.py` prints them as one line and exits non-zero."""
from __future__ import annotations

import errno


class UserError(Exception):
    """Bad input or environment: reported as one line, without a traceback (unless --debug)."""


class DataError(UserError):
    """The dataset is missing, corrupt or malformed."""


class RunDirError(UserError):
    """The run directory cannot be used (exists, is a file, is not writable)."""


class RunInUse(RunDirError):
    """Another live process holds the lock of the directory; `holder` names it."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


class DiskFull(UserError):
    """The disk filled up while a run, comparison or study wrote `path`; what was complete before is intact. The
    message ends with the command that continues the work; a bonus or a study that was running the run names its own
    (`continuing_with`)."""

    def __init__(self, path: str, command: str):
        super().__init__(f"no space left on device while writing {path}; free space and resume with: {command}")
        self.path, self.command = path, command

    def continued_by(self, command: str) -> DiskFull:
        return DiskFull(self.path, command)


class ProcessLost(UserError):
    """A process of the torchrun job on this node stopped without a word (killed: out of memory, SIGKILL) while
    this one trained with it or beside it. The lowest surviving rank says so (`speaks`); the message ends with the
    command that continues the work."""

    def __init__(self, lost: str, doing: str, saved: str, command: str, speaks: bool):
        super().__init__(f"{lost} of the torchrun job stopped while {doing}; {saved}; continue with: {command}")
        self.lost, self.doing, self.saved, self.command, self.speaks = lost, doing, saved, command, speaks

    def continued_by(self, command: str) -> ProcessLost:
        return ProcessLost(self.lost, self.doing, self.saved, command, self.speaks)


def disk_full(error: BaseException, path: str, command: str) -> DiskFull | None:
    """`error` as a DiskFull naming the file it was writing (else `path`) and the command that continues the work;
    None when `error` is no full disk."""
    full = no_space_left(error)
    return None if full is None else DiskFull(full.filename or path, command)


def no_space_left(error: BaseException) -> OSError | None:
    """The "no space left on device" OSError behind `error`, or None. torch.save reports a full disk as a RuntimeError
    of its zip writer ("unexpected pos ..."), with the OSError only in the exception's context."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
