"""`run.py --bonus`: train both architectures with one configuration, then compare them."""
from __future__ import annotations

import dataclasses
import os
import time

import handlers.comparison_report
from engine.errors import UserError
from engine.experiment import TrainConfig, load_data, train
from engine.resume import check_resumable, has_checkpoint
from engine.rundir import create_run_dir
from handlers.comparison_report import ARCH_ORDER, read_history

TRAIN_EVAL_IMAGES = 10_000


def bonus_config(config: TrainConfig) -> TrainConfig:
    """The shared configuration: train-eval on 10,000 fixed training images unless set otherwise."""
    return dataclasses.replace(config, train_eval=config.train_eval or TRAIN_EVAL_IMAGES)


def run_bonus(config: TrainConfig, resume_dir: str | None = None) -> str:
    """Train single- then multi-stage under `<runs_root>/<dataset>-bonus-<time>/` (or continue `resume_dir`,
    skipping finished runs) and write the comparison report there. Returns the bonus directory."""
    config = bonus_config(config)
    if resume_dir is None:
        bonus_dir = config.output_dir or os.path.join(config.runs_root, f"{config.dataset}-bonus-{time.strftime('%Y%m%d-%H%M%S')}")
        create_run_dir(bonus_dir)
    else:
        bonus_dir = resume_dir
        if not os.path.isdir(bonus_dir):
            raise UserError(f"cannot resume: {bonus_dir} is not a directory")
    print(f"Bonus directory: {bonus_dir}", flush=True)
    data = load_data(config)
    report_written = False
    for arch in ARCH_ORDER:
        arch_dir = os.path.join(bonus_dir, arch)
        arch_config = dataclasses.replace(config, arch=arch, output_dir=arch_dir)
        resume = resume_dir is not None and has_checkpoint(arch_dir)
        if resume:
            check_resumable(arch_config, arch_dir)
            if read_history(arch_dir).get("status") == "completed":
                print(f"{arch}: already trained in {arch_dir}, not training again", flush=True)
                continue
        elif resume_dir is not None:
            _discard_unfinished_first_epoch(arch_dir)
        # The report is a handler on the last run's trainer: it fires once both runs have finished.
        attach_report = None
        if arch == ARCH_ORDER[-1]:
            attach_report = lambda run: handlers.comparison_report.attach(run.trainer, bonus_dir)  # noqa: E731
            report_written = True
        print(f"== {arch} ==", flush=True)
        train(arch_config, data=data, run_dir=arch_dir, resume=arch_dir if resume else None, on_built=attach_report)
    if not report_written:  # every run was already finished: nothing trained, so write the report here
        handlers.comparison_report.write_report(bonus_dir, handlers.comparison_report.read_bonus_histories(bonus_dir))
    return bonus_dir


def _discard_unfinished_first_epoch(arch_dir: str) -> None:
    """A run killed before its first checkpoint leaves only an event file and an empty history: remove those
    (nothing of value) so the run can start afresh. Anything else is left alone, and the run refuses."""
    if not os.path.isdir(arch_dir):
        return
    for name in os.listdir(arch_dir):
        if name.startswith("events.out.tfevents.") or name in ("history.json", "history.json.tmp"):
            os.remove(os.path.join(arch_dir, name))


def report_only(run_dirs: list[str], output_dir: str | None, runs_root: str) -> str:
    """`--report`: rebuild the comparison from a bonus directory, or from two single-run directories (one
    per architecture) into `output_dir` (default `<runs_root>/<dataset>-report-<time>`). Returns where."""
    if len(run_dirs) == 1:
        handlers.comparison_report.write_report(run_dirs[0], handlers.comparison_report.read_bonus_histories(run_dirs[0]))
        return run_dirs[0]
    histories = {}
    for run_dir in run_dirs:
        history = read_history(run_dir)
        arch = history["config"]["arch"]
        if arch in histories:
            raise UserError(f"--report needs one run per architecture, but both {run_dirs[0]} and {run_dirs[1]} are {arch}")
        histories[arch] = history
    dataset = histories["multistage"]["config"]["dataset"]
    handlers.comparison_report.check_comparable(histories)
    directory = output_dir or os.path.join(runs_root, f"{dataset}-report-{time.strftime('%Y%m%d-%H%M%S')}")
    create_run_dir(directory)
    handlers.comparison_report.write_report(directory, histories)
    return directory
