"""What the user reads: one process speaks (rank 0 under torchrun), always flushed, so lines keep their order."""
from __future__ import annotations

import sys

import ignite.distributed as idist


def say(message: str) -> None:
    """A line on stdout, from rank 0 only."""
    if idist.get_rank() == 0:
        print(message, flush=True)


def warn(message: str) -> None:
    """A line on stderr, from rank 0 only."""
    if idist.get_rank() == 0:
        print(message, file=sys.stderr, flush=True)
