#!/usr/bin/env python
"""Train and compare ResNets on CIFAR-100 (or CIFAR-10). Parses flags and dispatches; see README.md."""
from __future__ import annotations

import argparse
import os
import sys

import ignite.distributed as idist
import torch

from engine.bonus import report_only, run_bonus
from engine.datasets import DATASETS
from engine.devices import DEVICE_CHOICES
from engine.errors import UserError
from engine.precision import AMP_MODES
from engine.experiment import Interrupted, TrainConfig, train
from models import ARCHITECTURES


def int_at_least(minimum: int):
    """An argparse type: a whole number >= `minimum`, with a message that says what was wrong."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        description="Train single- or multi-stage ResNets on CIFAR-100/CIFAR-10 with PyTorch Ignite.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default=defaults.arch, help="network to train")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default=defaults.dataset, help="dataset")
    parser.add_argument("--data-dir", default=defaults.data_dir,
                        help="folder holding cifar-100-python/ or cifar-10-batches-py/ (downloaded there if absent)")
    # default=SUPPRESS: the "(default: ...)" of a --no-X flag would show the dataclass value (True), not what the
    # flag does; without the flag the configuration's own default applies.
    parser.add_argument("--no-download", dest="download", action="store_false", default=argparse.SUPPRESS,
                        help="never download; fail with a clear message if the dataset is missing")
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs, help="training epochs")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="training batch size")
    parser.add_argument("--lr", type=positive_float, default=defaults.lr, help="Adam learning rate")
    parser.add_argument("--seed", type=non_negative_int, default=defaults.seed,
                        help="seed for weights and data order; a CPU run repeats bit for bit")
    parser.add_argument("--augment", action="store_true",
                        help="random crop (pad 4) + horizontal flip, batched on the device (off: as the assignment)")
    parser.add_argument("--blocks-per-stage", type=positive_int, default=defaults.blocks_per_stage,
                        help="residual blocks per stage of the multi-stage net (3 gives ResNet-20)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=defaults.device,
                        help="auto picks CUDA, then MPS, then CPU")
    parser.add_argument("--amp", nargs="?", choices=AMP_MODES, const="on", default=defaults.amp,
                        help="bf16 autocast: auto = on for CUDA and for CPUs with native bf16 (AVX512-BF16/AMX), "
                             "off elsewhere; --amp alone forces it on")
    parser.add_argument("--no-amp", dest="amp", action="store_const", const="off", default=argparse.SUPPRESS,
                        help="fp32 throughout (same as --amp off)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network (pays off on GPUs; checkpoints store the plain module)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic kernels on CUDA, slower (CPU runs with a fixed seed repeat bit for bit anyway)")
    parser.add_argument("--log-graph", action="store_true", help="add the model graph to TensorBoard (a few seconds)")
    parser.add_argument("--log-histograms", action="store_true",
                        help="weight and gradient histograms in TensorBoard every epoch (large event files)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun: BatchNorm statistics over all processes instead of per process")
    parser.add_argument("--dump-samples", metavar="DIR", help=argparse.SUPPRESS)  # tests: per-rank sample losses
    parser.add_argument("--runs-root", default=defaults.runs_root,
                        help="where run directories are created when --output-dir is not given")
    parser.add_argument("--output-dir", default=None,
                        help="the run directory itself (default: RUNS_ROOT/<dataset>-<arch>-<blocks>bps-seed<seed>-<time>); never overwritten")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
                        help="no progress bar (it is also off when stdout is not a terminal)")
    parser.add_argument("--train-eval", type=non_negative_int, default=defaults.train_eval, metavar="N",
                        help="also evaluate N fixed training images in eval mode each epoch (--bonus: 10000)")
    parser.add_argument("--bonus", action="store_true",
                        help="train singlestage and multistage with the same configuration and compare them")
    parser.add_argument("--resume", metavar="auto|DIR|CHECKPOINT",
                        help="continue a run from its last checkpoint: 'auto' (the newest run under RUNS_ROOT with "
                             "this configuration), a run directory or a checkpoint file; with --bonus, a bonus directory")
    parser.add_argument("--report", nargs="+", metavar="DIR",
                        help="only rebuild the comparison report: from a bonus directory, or from two run directories")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{name: value for name, value in vars(args).items() if name in fields})


def dispatch(args: argparse.Namespace) -> int:
    """Run what the flags ask for in this process; errors become one line on rank 0 and an exit code."""
    config = config_from_args(args)
    quiet = idist.get_rank() != 0

    def fail(message: str, code: int = 1) -> int:
        if not quiet:
            print(message, file=sys.stderr)
        return code

    try:
        if args.report:
            report_only(args.report, args.output_dir, args.runs_root)
        elif args.bonus:
            run_bonus(config, resume_dir=args.resume)
        else:
            train(config, resume=args.resume)
    except Interrupted as exc:
        return fail(str(exc), exc.exit_code)
    except UserError as exc:
        if args.debug:
            raise
        return fail(f"error: {exc}")
    except OSError as exc:  # unreadable data, a full disk outside a checkpoint, ...
        if args.debug:
            raise
        return fail(f"error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    return 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.report and len(args.report) > 2:
        parser.error("argument --report: expected a bonus directory or two run directories")
    if not launched_by_torchrun():
        return dispatch(args)
    # torchrun: one process per GPU (nccl) or per CPU worker (gloo); ignite.distributed sets the group up.
    backend = "nccl" if torch.cuda.is_available() and args.device in ("auto", "cuda") else "gloo"
    exit_codes = []
    with idist.Parallel(backend=backend) as parallel:
        parallel.run(lambda _local_rank, parsed: exit_codes.append(dispatch(parsed)), args)
    return exit_codes[0]


if __name__ == "__main__":
    sys.exit(main())
