"""The comparison report as a handler: it is written once every net has run (the comparison's engine completes).

The report itself is built by engine/compare/report.py and handed in as `write` (on rank 0 alone under torchrun:
engine/run_lock.write_on_rank_0): this layer knows when, not how.
"""
from __future__ import annotations

from typing import Callable

from ignite.engine import Engine, Events


def attach(comparison: Engine, write: Callable[[], object]) -> None:
    """Call `write()` when `comparison` (one iteration per net) completes."""
    comparison.add_event_handler(Events.COMPLETED, lambda _engine: write())
