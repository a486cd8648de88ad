#!/usr/bin/env python
"""Train and compare ResNets on CIFAR-100 (or CIFAR-10). Parses flags and dispatches; see README.md."""
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
from core.recipe import DEFAULT_PRESET, PRESETS, Recipe, Setup, flag_name, non_negative_int
from core.recipe_words import preset_flags
from engine.build import OPTIMIZERS, TTA_MODES
from engine.compare.grid import MemberFailed, report_only, train_plan
from engine.compare.plan import check_recorded_recipe, recorded_flags, runs_in, what_to_resume
from engine.data.cifar_archive import DATASETS
from engine.devices import DEVICE_CHOICES, distributed_backend, launched_by_torchrun, lost_processes
from engine.evaluate import evaluate
from engine.precision import AMP_MODES
from engine.compare.dealing import PARALLEL_MODES
from engine.session import Interrupted, train as train_run
from handlers.lr_schedule import SCHEDULES
from models import ARCHITECTURES, BONUS_PAIR, check_networks, user_nets

# The choices of fields whose allowed values are facts of the engine and the models.
CHOICES = {"datasets": sorted(DATASETS), "devices": list(DEVICE_CHOICES),
           "amp_modes": list(AMP_MODES), "optimizers": list(OPTIMIZERS), "schedules": list(SCHEDULES),
           "tta": list(TTA_MODES), "parallel_modes": list(PARALLEL_MODES)}


def network_name(text: str) -> str:
    """An argparse type: a registered architecture, or a user's MODULE:CALLABLE / FILE.py:CALLABLE (checked once the
    flags are read: `check_networks`)."""
    if text in ARCHITECTURES or user_nets.is_spec(text):
        return text
    raise argparse.ArgumentTypeError(f"unknown network {text!r}; choose one of {', '.join(sorted(ARCHITECTURES))}, "
                                     "or name your own as MODULE:CALLABLE or FILE.py:CALLABLE")


# The parsers of fields whose values the models check.
TYPES = {"architectures": network_name}


def add_field_flags(parser: argparse.ArgumentParser, config_type) -> None:
    """One flag per field of `config_type`, from the field's metadata. Defaults are not argparse's: a flag not given
    leaves the field at its dataclass default, which the help text shows once."""
    for field in dataclasses.fields(config_type):
        options = dict(field.metadata)
        name = flag_name(field)
        options.pop("flag", None)
        help_text = options.pop("help")
        negation = options.pop("negation", None)
        if "choices_from" in options:
            options["choices"] = CHOICES[options.pop("choices_from")]
        if "type_from" in options:
            options["type"] = TYPES[options.pop("type_from")]
            help_text = help_text.format(architectures=", ".join(sorted(ARCHITECTURES)))
        if options.get("action") not in ("store_true", "store_false") and field.default is not None:
            help_text += f" (default: {field.default})"
        parser.add_argument(name, dest=field.name, default=argparse.SUPPRESS, help=help_text, **options)
        if negation is not None:
            negative_flag, value, negative_help = negation
            parser.add_argument(negative_flag, dest=field.name, action="store_const", const=value,
                                default=argparse.SUPPRESS, help=negative_help)


class RaisingParser(argparse.ArgumentParser):
    """The command's parser for Python callers (`train`, `compare`): a wrong argument raises a UserError with the
    line the command would print, rather than ending the process."""

    def error(self, message: str):
        raise UserError(message)


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = parser_class(
        description="Train single- or multi-stage ResNets on CIFAR-100/CIFAR-10 with PyTorch Ignite.")
    learned = parser.add_argument_group("what is learned (a resume or a comparison keeps these)")
    learned.add_argument("--recipe", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                         help="a named recipe; flags given beside it win. " + "; ".join(
                             f"{name}{' (default)' if name == DEFAULT_PRESET else ''} = {preset_flags(name)}"
                             for name in PRESETS))
    add_field_flags(learned, Recipe)
    add_field_flags(parser.add_argument_group("where and how it runs"), Setup)
    commands = parser.add_argument_group("what to do (default: train one run)")
    commands.add_argument("--bonus", action="store_true",
                          help=f"train {' and '.join(BONUS_PAIR)} with the same recipe and compare them "
                               f"(= --compare {' '.join(BONUS_PAIR)})")
    commands.add_argument("--compare", nargs="+", type=network_name, metavar="ARCH",
                          help="train every named architecture with the same recipe and compare each with the first "
                               f"(the baseline): {', '.join(sorted(ARCHITECTURES))}, or your own as MODULE:CALLABLE "
                               "or FILE.py:CALLABLE")
    commands.add_argument("--resume", metavar="auto|DIR|CHECKPOINT",
                          help="continue a run, bonus or study directory, whatever it holds (its nets, seeds, recipe, "
                               "data folder and precision are read from it; flags given must agree), a checkpoint file, "
                               "or 'auto' (the newest run under RUNS_ROOT with this recipe)")
    commands.add_argument("--seeds", nargs="+", type=non_negative_int, metavar="SEED",
                          help="train once per seed (with --bonus/--compare: every net per seed, paired) in one study directory "
                               "and summarise across seeds: mean, sd, 95%% t-intervals; replaces --seed")
    commands.add_argument("--report", nargs="+", metavar="DIR",
                          help="only rebuild a report: of a comparison (bonus) or study directory, or from run "
                               "directories of different architectures (re-tested on the data folder the runs "
                               "recorded unless --data-dir is given)")
    commands.add_argument("--evaluate", metavar="DIR_OR_CHECKPOINT",
                          help="re-test a saved model on the dataset its run names (--data-dir may point elsewhere): "
                               "per-class accuracy, confusion matrix, most-confused pairs, in a new folder of the run; "
                               "of a bonus or study directory, each of its runs")
    commands.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def recorded_data_dir(args: argparse.Namespace) -> dict:
    """For `--evaluate` and `--report`, which re-test saved models: the data folder their (first) run recorded, which
    stands for `--data-dir` when it is not given. Empty for anything else."""
    source = getattr(args, "evaluate", None) or (getattr(args, "report", None) or [None])[0]
    recorded = recorded_flags(source)
    return {"data_dir": recorded["data_dir"]} if "data_dir" in recorded else {}


def configs_from_args(args: argparse.Namespace) -> tuple[Recipe, Setup]:
    """The recipe and setup: a resumed run's record (or a re-tested run's data folder), then the named recipe's
    values, then the flags given (which win)."""
    preset = PRESETS[args.recipe] if "recipe" in vars(args) else {}
    given = {**recorded_flags(getattr(args, "resume", None)), **recorded_data_dir(args), **preset, **vars(args)}
    return tuple(cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})
                 for cls in (Recipe, Setup))


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


def compared_nets(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The nets of `--compare`, or of `--bonus`; None for a single architecture."""
    return tuple(args.compare) if args.compare else BONUS_PAIR if args.bonus else None


def parsed_arguments(argv: list[str] | None = None,
                     parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.Namespace:
    """The command's flags, with the rules between them that argparse cannot say (each a usage error, exit 2)."""
    parser = build_parser(parser_class)
    args = parser.parse_args(argv)
    if args.bonus and args.compare:
        parser.error("argument --compare: not allowed with --bonus (which is --compare " + " ".join(BONUS_PAIR) + ")")
    if args.compare and (len(args.compare) < 2 or len(set(args.compare)) != len(args.compare)):
        parser.error("argument --compare: expected at least two different architectures")
    if args.seeds and "seed" in vars(args):
        parser.error("argument --seeds: not allowed with --seed")
    if getattr(args, "parallel", None) == "members" and not (args.seeds or compared_nets(args) or args.resume):
        parser.error("argument --parallel: members needs a plan of several runs (--seeds, --bonus or --compare)")
    return args


# --- The same, called from Python (a notebook): keyword arguments are the flags -------------------------------------

# Keywords that are commands' flags rather than fields of the recipe or setup.
COMMAND_KEYWORDS = {"recipe": "--recipe", "resume": "--resume", "seeds": "--seeds"}


def flags_of(keywords: dict) -> list[str]:
    """The command line that says what keyword arguments say, one flag per Recipe/Setup field (its metadata):
    {"epochs": 10, "amp": False, "augment": True} is `--epochs 10 --no-amp --augment`. None leaves a field unsaid."""
    fields = {field.name: field for config_type in (Recipe, Setup) for field in dataclasses.fields(config_type)}
    argv = []
    for name, value in keywords.items():
        if value is None:
            continue
        if name in COMMAND_KEYWORDS:
            argv += [COMMAND_KEYWORDS[name], *map(str, value if isinstance(value, (list, tuple)) else [value])]
            continue
        if name not in fields:
            raise UserError(f"unknown argument {name}=; the arguments are the flags' names: "
                            + ", ".join([*fields, *COMMAND_KEYWORDS]))
        field, flag = fields[name], flag_name(fields[name])
        action, negation = field.metadata.get("action"), field.metadata.get("negation")
        if action in ("store_true", "store_false"):
            if not isinstance(value, bool):
                raise UserError(f"argument {name}=: expected True or False, got {value!r}")
            argv += [flag] if value == (action == "store_true") else []
        elif value is False and negation:  # amp=False: --no-amp
            argv.append(negation[0])
        elif value is True and field.metadata.get("nargs") == "?":  # amp=True: --amp (its const)
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


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
    history = run_from_python(flags_of(keywords))
    return Trained(history["config"]["output_dir"], history)


def compare(*nets: str, seeds: list[int] | None = None, **keywords) -> Compared:
    """Train `nets` (each against the first; none: the bonus's pair, single-stage then multi-stage) with one recipe
    and write their comparison, as `python run.py --compare NET ...` (`--bonus`) with the same flags does; over
    `seeds`, paired per seed with intervals, as `--seeds`. Keywords as for `train`."""
    argv = (["--compare", *nets] if nets else ["--bonus"]) + flags_of({"seeds": seeds, **keywords})
    directory = run_from_python(argv)
    name, figure = ("study", "study.png") if seeds else ("report", "curves.png")
    with open(os.path.join(directory, f"{name}.json")) as f:
        report = json.load(f)
    with open(os.path.join(directory, f"{name}.md")) as f:
        markdown = f.read().replace(f"![curves]({figure})", "").rstrip() + "\n"
    return Compared(directory, report, markdown, os.path.join(directory, figure))


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
