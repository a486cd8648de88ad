"""Errors a user can cause and fix; `run.py` prints them as one line and exits non-zero."""


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
