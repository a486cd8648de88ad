"""Debugging aid for the torchrun tests: run `run.py` with `log_every` forced to N, noting every collective operation
of each process with the trainer's iteration and event at that moment; optionally one process gets a SIGTERM after
a given iteration of each run it trains (`:KILL`: a SIGKILL; `:OOM`: its step raises torch.OutOfMemoryError; either
notes the time in DUMP_DIR/stopped_at first).

    torchrun --nproc_per_node=2 tests/distributed_probe.py N DUMP_DIR [RANK:ITERATION[:KILL|:OOM]] -- RUN.PY ARGS...

writes DUMP_DIR/collectives_rank<r>.json: [[iteration, event, operation], ...], one entry per all_reduce, all_gather
or broadcast (iteration and event null before the trainer exists).
"""
import json
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from ignite.engine import Events

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine.build  # noqa: E402
import run  # noqa: E402

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list")


def main():
    every, directory = int(sys.argv[1]), sys.argv[2]
    signal_at = sys.argv[3] if sys.argv[3] != "--" else None
    args = sys.argv[sys.argv.index("--") + 1:]
    trainers, noted = [], []

    def noting(name, collective):
        def wrapped(*a, **k):
            trainer = trainers[-1] if trainers else None
            event = trainer.last_event_name.name if trainer and trainer.last_event_name else None
            noted.append([trainer.state.iteration if trainer else None, event, name])
            return collective(*a, **k)

        return wrapped

    for name in COLLECTIVES:
        setattr(dist, name, noting(name, getattr(dist, name)))
    engine.build.log_every = lambda device: every
    build_run = engine.build.build_run

    def build_and_watch(recipe, setup, data):
        built = build_run(recipe, setup, data)
        trainers.append(built.trainer)
        if signal_at:
            rank, iteration, *how = signal_at.split(":")
            if int(os.environ.get("RANK", 0)) == int(rank):
                built.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=int(iteration)),
                                                {"KILL": lambda: killed(directory), "OOM": lambda: out_of_memory(directory)}.get(
                                                    how[0] if how else None, lambda: signal.raise_signal(signal.SIGTERM)))
        return built

    engine.build.build_run = build_and_watch
    try:
        code = run.main(args)
    finally:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"collectives_rank{int(os.environ.get('RANK', 0))}.json"), "w") as f:
            json.dump(noted, f)
    sys.exit(code)


def stopping(directory):
    """Note when this process stops (DUMP_DIR/stopped_at), for the time the others take to end."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "stopped_at"), "w") as f:
        f.write(str(time.time()))


def killed(directory):
    stopping(directory)
    os.kill(os.getpid(), signal.SIGKILL)


def out_of_memory(directory):
    stopping(directory)
    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")


if __name__ == "__main__":
    main()
