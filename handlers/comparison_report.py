"""The comparison report as a handler: it fires once both architectures have run (the bonus's engine completes).

The report itself is built by engine/compare/report.py and handed in as `write`: this layer knows when, not how.
Only rank 0 writes it, once; under torchrun the other processes wait until it is on disk (`write_on_rank_0`,
which a multi-seed study's summary uses too).
"""
from __future__ import annotations

from typing import Callable

import ignite.distributed as idist
from ignite.engine import Engine, Events


def write_on_rank_0(write: Callable[[], object]) -> None:
    """Call `write()` on rank 0 only; under torchrun the other processes wait until it is done. A failure is
    raised on rank 0 after the barrier, so that no process waits forever."""
    failure = None
    if idist.get_rank() == 0:
        try:
            write()
        except Exception as exc:
            failure = exc
    idist.barrier()
    if failure is not None:
        raise failure


def attach(bonus: Engine, write: Callable[[], object]) -> None:
    """Call `write()` on rank 0 when `bonus` (one iteration per architecture) completes."""
    bonus.add_event_handler(Events.COMPLETED, lambda _engine: write_on_rank_0(write))
