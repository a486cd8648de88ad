"""The command line, from the typed configuration: one flag per Recipe/Setup field (its metadata), the commands, the
rules between flags that argparse cannot say, the configuration a command asks for (a resumed run's record first),
and the same flags given as Python keywords (run.train, run.compare)."""
from __future__ import annotations

import argparse
import dataclasses

from core.errors import UserError
from core.recipe import DEFAULT_PRESET, PRESETS, Recipe, Setup, flag_name, non_negative_int
from core.recipe_words import preset_flags
from engine.build import OPTIMIZERS, TTA_MODES
from engine.compare.dealing import PARALLEL_MODES
from engine.compare.plan import recorded_flags
from engine.data.cifar_archive import DATASETS
from engine.devices import DEVICE_CHOICES
from engine.precision import AMP_MODES
from handlers.lr_schedule import SCHEDULES
from models import ARCHITECTURES, BONUS_PAIR, user_nets

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
