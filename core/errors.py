"""Errors a user can cause and fix; `run.py` prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input or environment: reported as one line, without a traceback (unless --debug)."""


class DataError(UserError):
    """The dataset is missing, corrupt or malformed."""


class RunDirError(UserError):
    """The run directory cannot be used (exists, is a file, is not writable)."""
