"""Run `run.py` in this process, but hit it at a chosen point: for the resume tests.

    python tests/fault_injection.py POINT:N -- RUN.PY ARGS...

POINT is one of
  kill-iteration     SIGKILL after the N-th training iteration
  kill-evaluation    SIGKILL during the N-th test-evaluation batch (counted over the whole run)
  kill-checkpoint    SIGKILL in the middle of writing the N-th checkpoint file (half of it written)
  sigint / sigterm   send SIGINT / SIGTERM to itself after the N-th training iteration
  sigint-twice       send SIGINT twice after the N-th training iteration
"""
import io
import os
import signal
import sys

import torch
from ignite.engine import Events

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine.experiment  # noqa: E402
import run  # noqa: E402


def nth_call(n, action):
    calls = [0]

    def handler(*_):
        calls[0] += 1
        if calls[0] == n:
            action()

    return handler


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def main():
    point, n = sys.argv[1].split(":")
    n = int(n)
    args = sys.argv[sys.argv.index("--") + 1:]
    build_run = engine.experiment.build_run

    def build_run_with_fault(config, data):
        built = build_run(config, data)
        actions = {
            "kill-iteration": kill,
            "sigint": lambda: os.kill(os.getpid(), signal.SIGINT),
            "sigterm": lambda: os.kill(os.getpid(), signal.SIGTERM),
            "sigint-twice": lambda: (os.kill(os.getpid(), signal.SIGINT), os.kill(os.getpid(), signal.SIGINT)),
        }
        if point in actions:
            built.trainer.add_event_handler(Events.ITERATION_COMPLETED, nth_call(n, actions[point]))
        elif point == "kill-evaluation":
            built.evaluators["test"].add_event_handler(Events.ITERATION_STARTED, nth_call(n, kill))
        return built

    engine.experiment.build_run = build_run_with_fault
    if point == "kill-checkpoint":
        real_save = torch.save

        def half_then_kill(obj, f, *a, **k):
            buffer = io.BytesIO()
            real_save(obj, buffer, *a, **k)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            kill()

        calls = [0]

        def save(obj, f, *a, **k):
            calls[0] += 1
            if calls[0] == n:
                return half_then_kill(obj, f, *a, **k)
            return real_save(obj, f, *a, **k)

        torch.save = save
    sys.exit(run.main(args))


if __name__ == "__main__":
    main()
