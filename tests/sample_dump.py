"""Debugging aid for the torchrun tests: run `run.py` with every process writing, per epoch, which training samples
it used and their losses, so that tests can check the sharding and the all-process epoch mean independently;
and noting which processes write a comparison report or a study summary.

    torchrun --nproc_per_node=2 tests/sample_dump.py DUMP_DIR -- RUN.PY ARGS...

writes DUMP_DIR/rank<r>_epoch<e>.pt = {"index": sample indices, "loss": per-sample losses}, and appends a line
"<rank> <folder>" to DUMP_DIR/writers.txt for each report written (write_report: a comparison's, a study's), naming the
folder it was written in.
"""
import os
import sys

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import engine.compare.grid  # noqa: E402
import engine.build  # noqa: E402
import run  # noqa: E402


def attach(trainer: Engine, directory: str) -> None:
    """Collect (indices, per-sample losses) of every batch; write them per process at each epoch's end."""
    os.makedirs(directory, exist_ok=True)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def collect(engine: Engine) -> None:
        seen.append((engine.state.batch[2].cpu(), engine.state.output["sample_losses"].cpu()))

    @trainer.on(Events.EPOCH_COMPLETED)
    def write(engine: Engine) -> None:
        path = os.path.join(directory, f"rank{idist.get_rank()}_epoch{engine.state.epoch}.pt")
        torch.save({"index": torch.cat([i for i, _ in seen]), "loss": torch.cat([l for _, l in seen])}, path)
        seen.clear()


def main():
    directory, args = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    build_run = engine.build.build_run

    def build_and_dump(recipe, setup, data):
        built = build_run(recipe, setup, data)
        attach(built.trainer, directory)
        return built

    engine.build.build_run = build_and_dump
    os.makedirs(directory, exist_ok=True)
    engine.compare.grid.write_report = noting_the_writer(engine.compare.grid.write_report, directory)
    sys.exit(run.main(args))


def noting_the_writer(write, directory: str):
    def noted(report_dir, *args, **kwargs):
        with open(os.path.join(directory, "writers.txt"), "a") as f:
            f.write(f"{idist.get_rank()} {os.path.basename(report_dir)}\n")
        return write(report_dir, *args, **kwargs)

    return noted


if __name__ == "__main__":
    main()
