"""Run `run.py` in this process, but hit it at a chosen point: for the resume tests.

    python tests/fault_injection.py POINT:N -- RUN.PY ARGS...

POINT is one of
  kill-iteration     SIGKILL after the N-th training iteration
  kill-evaluation    SIGKILL during the N-th test-evaluation batch (counted over the whole run)
  kill-checkpoint    SIGKILL in the middle of writing the N-th checkpoint file (half of it written)
  kill-completed     SIGKILL as the N-th run of this process completes, before any handler of its end: after its
                     last checkpoint, before history.json says it completed
  sigint / sigterm   send SIGINT / SIGTERM to itself after the N-th training iteration
  sigint-twice       send SIGINT twice after the N-th training iteration, the second only once the
                     first has been handled
  pause-iteration    after the N-th training iteration of this process, create $FAULT_PAUSE_DIR/paused-<pid> and wait there
                     until $FAULT_PAUSE_DIR/go exists (the run holds its directory meanwhile)

Signals are raised with `signal.raise_signal`, which runs the Python-level handler before it returns. Two
`os.kill` calls back to back can both land before Python runs the handler, and then count as one signal.
"""
import io
import os
import signal
import sys
import time

import torch
from ignite.engine import Events

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine.build  # noqa: E402
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


def send(signum, times=1):
    """Raise `signum` in this process `times` times, each only after the previous one was handled: the run's
    handler (GracefulStop) puts the previous handler back when it handles a signal, so wait for that."""
    for _ in range(times):
        handler = signal.getsignal(signum)
        signal.raise_signal(signum)
        deadline = time.monotonic() + 30
        while signal.getsignal(signum) is handler:
            if time.monotonic() > deadline:
                raise RuntimeError(f"signal {signum} was not handled within 30 s")
            time.sleep(0.001)


def pause():
    """Say where the run waits, then wait for the test's go-ahead."""
    folder = os.environ["FAULT_PAUSE_DIR"]
    with open(os.path.join(folder, f"paused-{os.getpid()}"), "w"):
        pass
    deadline = time.monotonic() + 600
    while not os.path.exists(os.path.join(folder, "go")):
        if time.monotonic() > deadline:
            raise RuntimeError("no go-ahead within 600 s")
        time.sleep(0.05)


def with_fault(build_run, point: str, n: int):
    """`build_run` that attaches the fault POINT:N (an iteration, evaluation or completion point) to every run it
    builds; the tests that need no SIGKILL use it in their own process."""

    kill_at_nth_completion = nth_call(n, kill)  # counts over every run this process builds

    def build_run_with_fault(recipe, setup, data):
        built = build_run(recipe, setup, data)
        actions = {
            "kill-iteration": kill,
            "sigint": lambda: send(signal.SIGINT),
            "sigterm": lambda: send(signal.SIGTERM),
            "sigint-twice": lambda: send(signal.SIGINT, times=2),
            "pause-iteration": pause,
        }
        if point in actions:
            built.trainer.add_event_handler(Events.ITERATION_COMPLETED, nth_call(n, actions[point]))
        elif point == "kill-evaluation":
            built.evaluators["test"].add_event_handler(Events.ITERATION_STARTED, nth_call(n, kill))
        elif point == "kill-completed":  # attached before the run's outputs: the first handler of its end
            built.trainer.add_event_handler(Events.COMPLETED, kill_at_nth_completion)
        return built

    return build_run_with_fault


def main():
    point, n = sys.argv[1].split(":")
    n = int(n)
    args = sys.argv[sys.argv.index("--") + 1:]
    engine.build.build_run = with_fault(engine.build.build_run, point, n)
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
