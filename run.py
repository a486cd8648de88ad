#!/usr/bin/env python
"""Train and compare ResNets on CIFAR-100 (or CIFAR-10): the command (flags: engine/command.py) and the same from
Python (`train`, `compare`); see README.md."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import sys

import ignite.distributed as idist

from core.errors import ProcessLost, UserError
from core.recipe import Setup
from engine.command import RaisingParser, compared_nets, configs_from_args, flags_of, parsed_arguments
from engine.compare.grid import MemberFailed, report_only, train_plan
from engine.compare.plan import check_recorded_recipe, read_plan, runs_in, what_to_resume
from engine.compare.render import REPORT_FIGURE, STUDY_FIGURE, figure_link
from engine.compare.report import REPORT_JSON, REPORT_MARKDOWN, STUDY_JSON, STUDY_MARKDOWN
from engine.data.cifar_archive import DATASETS
from engine.devices import distributed_backend, launched_by_torchrun, lost_processes
from engine.evaluate import evaluate
from engine.session import Interrupted, train as train_run
from models import check_networks


def execute(args: argparse.Namespace) -> dict | str | None:
    """Do what the flags ask for in this process: a single run's history, a comparison's or study's directory (None
    for a re-test). Errors raise; `dispatch` turns them into one line."""
    nets, seeds = compared_nets(args), args.seeds
    recipe, setup = configs_from_args(args)
    if args.resume and args.resume != "auto" and os.path.isdir(args.resume):
        seeds, nets = what_to_resume(args.resume, seeds, nets)
        check_recorded_recipe(args.resume, recipe)
    if setup.parallel == "members" and launched_by_torchrun() and not (seeds or nets):
        raise UserError(f"--parallel members needs a plan of several runs; {args.resume} is a single run")
    elif not (args.evaluate or args.report or args.resume):
        recipe.check()
        check_networks(nets or (recipe.arch,), DATASETS[recipe.dataset].num_classes, recipe.blocks_per_stage,
                       blocks_given="blocks_per_stage" in vars(args))
    if args.evaluate:  # a run, or every run of a comparison or study, each into a folder of its own
        for run_dir in runs_in(args.evaluate):
            inside = os.path.relpath(run_dir, args.evaluate)  # "." for a run itself
            where = os.path.normpath(os.path.join(setup.output_dir, inside)) if setup.output_dir else None
            evaluate(run_dir, dataclasses.replace(setup, output_dir=where))
    elif args.report:
        report_only(args.report, setup)
    elif seeds or nets:
        return train_plan(recipe, setup, nets, seeds, resume_dir=args.resume)
    else:
        return train_run(recipe, setup, resume=args.resume)
    return None


def dispatch(args: argparse.Namespace) -> int:
    """`execute` the flags; errors become one line and an exit code.

    Under torchrun rank 0 reports; another process reports an error of its own too, marked with its rank
    (an error all processes share is said once, by rank 0)."""
    rank = idist.get_rank()
    if getattr(args, "parallel", None) == "members" and launched_by_torchrun():  # no process group: torchrun's rank
        rank = int(os.environ.get("RANK", "0"))

    def fail(message: str, code: int = 1, shared: bool = True) -> int:
        if rank == 0:
            print(message, file=sys.stderr, flush=True)
        elif not shared:
            print(f"[rank {rank}] {message}", file=sys.stderr, flush=True)
        return code

    try:
        execute(args)
    except Interrupted as exc:
        return fail(str(exc), exc.exit_code)
    except ProcessLost as exc:  # said once, by the lowest surviving rank, whichever that is
        if exc.speaks:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except UserError as exc:
        if args.debug:
            raise
        return fail(f"error: {exc}", shared=not isinstance(exc, MemberFailed))
    except OSError as exc:  # unreadable data, a full disk outside a checkpoint, ...
        if args.debug:
            raise
        return fail(f"error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:  # a bug: rank 0 shows the traceback below; another rank must not die silently
        if rank != 0:
            fail(f"{type(exc).__name__}: {exc}", shared=False)
        raise
    return 0


# --- The same, called from Python (a notebook): keyword arguments are the flags -------------------------------------

def run_from_python(argv: list[str]) -> dict | str | None:
    """`execute` a command line in this process, for `train` and `compare`: errors raise (UserError, with the line
    the command prints), nothing exits."""
    return execute(parsed_arguments(argv, RaisingParser))


@dataclasses.dataclass
class Trained:
    """What `train` wrote: the run's directory and its history (history.json's content)."""
    directory: str
    history: dict


@dataclasses.dataclass
class Compared:
    """What `compare` wrote: its directory, its report (report.json, or study.json over several seeds), that report
    as Markdown (report.md, study.md, without the link to its figure, which a notebook shows inline from the
    file) and the figure of its curves."""
    directory: str
    report: dict
    markdown: str
    figure: str


def train(**keywords) -> Trained:
    """Train one run in this process, as the command with the same flags does: `train(arch="multistage",
    epochs=10)` is `python run.py --arch multistage --epochs 10` (each keyword a flag's name with underscores;
    True/False for on/off flags, amp=False for --no-amp; `resume="DIR"` continues a run). It prints what the command
    prints; an error raises UserError with the command's line."""
    resume = keywords.get("resume")
    if keywords.get("seeds") or (resume and read_plan(resume) is not None):
        raise UserError("train() trains one run; several seeds or nets are compare()'s (a study of one net: "
                        "python run.py --arch NET --seeds ...)")
    history = run_from_python(flags_of(keywords))
    return Trained(history["config"]["output_dir"], history)


def compare(*nets: str, seeds: list[int] | None = None, **keywords) -> Compared:
    """Train `nets` (each against the first; none: the bonus's pair, single-stage then multi-stage) with one recipe
    and write their comparison, as `python run.py --compare NET ...` (`--bonus`) with the same flags does; over
    `seeds`, paired per seed with intervals, as `--seeds`. Keywords as for `train`."""
    argv = (["--compare", *nets] if nets else ["--bonus"]) + flags_of({"seeds": seeds, **keywords})
    directory = run_from_python(argv)
    json_name, markdown_name, figure_name = ((STUDY_JSON, STUDY_MARKDOWN, STUDY_FIGURE) if seeds
                                             else (REPORT_JSON, REPORT_MARKDOWN, REPORT_FIGURE))
    with open(os.path.join(directory, json_name)) as f:
        report = json.load(f)
    with open(os.path.join(directory, markdown_name)) as f:
        markdown = f.read().replace(figure_link(figure_name), "").rstrip() + "\n"
    return Compared(directory, report, markdown, os.path.join(directory, figure_name))


def main(argv: list[str] | None = None) -> int:
    # Every process of a torchrun job parses the same command: a wrong one is said once, by rank 0; the others exit
    # with the same code (2), silently.
    silent = launched_by_torchrun() and os.environ.get("RANK", "0") != "0"
    with contextlib.redirect_stderr(io.StringIO()) if silent else contextlib.nullcontext():
        args = parsed_arguments(argv)
    if launched_by_torchrun() and (args.evaluate or args.report):
        # A re-test has nothing to split: rank 0 does it alone, as one process would, and the others end at once
        # (each would otherwise write a folder of its own).
        return dispatch(args) if os.environ.get("RANK", "0") == "0" else 0
    if not launched_by_torchrun() or getattr(args, "parallel", None) == "members":
        return dispatch(args)  # --parallel members: no process group (engine/compare/dealing.py)
    # torchrun: one process per GPU (nccl) or per CPU worker (gloo); ignite.distributed sets the group up. Its
    # INFO lines ("Initialized distributed launcher", "Apply torch DistributedDataParallel on model") are not
    # ours: keep the console to our own lines. (Its loggers set their own level when created, so a level set
    # here would be undone; warnings and errors still show.)
    logging.disable(logging.INFO)
    backend = distributed_backend(getattr(args, "device", Setup.device))
    exit_codes = []

    def run_then_wait_for_the_others(_local_rank, parsed):
        exit_codes.append(dispatch(parsed))
        if exit_codes[-1] != 0 or lost_processes() is not None:
            return  # failed, or a peer is gone: the others must not wait here for a collective that will never come
        # No process tears its process group down while another still works (rank 0 writes checkpoints, history
        # and TensorBoard after the last collective): gloo may abort a process whose peers are still using the
        # group ("terminate called without an active exception"), failing a run that had succeeded.
        idist.barrier()

    try:
        with idist.Parallel(backend=backend) as parallel:
            parallel.run(run_then_wait_for_the_others, args)
    finally:
        logging.disable(logging.NOTSET)
    return exit_codes[0]


if __name__ == "__main__":
    sys.exit(main())
