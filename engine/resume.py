"""Finding, checking and loading what a run is resumed from."""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import torch

from engine.errors import UserError

# Config fields that say where a run's files are, where it runs or what it logs, not what it learns.
RUN_CIRCUMSTANCES = {
    "output_dir", "runs_root", "download", "data_dir", "device", "amp", "progress", "compile",
    "log_graph", "log_histograms", "dump_samples",
}
# Config fields a resumed run may change: those, and more epochs.
RESUMABLE_CHANGES = RUN_CIRCUMSTANCES | {"epochs"}
_CHECKPOINT_NAME = re.compile(r"(checkpoint|interrupted)_(\d+)\.pt")


def checkpoint_position(path: str, epoch_length: int) -> int:
    """The trainer iteration a checkpoint file was written at, from its name: `checkpoint_<epoch>.pt` is
    written at the end of an epoch, `interrupted_<iteration>.pt` when a run is stopped mid-epoch."""
    kind, number = _CHECKPOINT_NAME.fullmatch(os.path.basename(path)).groups()
    return int(number) * epoch_length if kind == "checkpoint" else int(number)


def has_checkpoint(run_dir: str) -> bool:
    """Whether `run_dir` holds any checkpoint file."""
    return os.path.isdir(run_dir) and any(_CHECKPOINT_NAME.fullmatch(name) for name in os.listdir(run_dir))


def latest_checkpoint(run_dir: str, epoch_length: int) -> str | None:
    """The checkpoint of `run_dir` furthest into training (an epoch checkpoint wins a tie), or None."""
    paths = [p for p in glob.glob(os.path.join(glob.escape(run_dir), "*.pt"))
             if _CHECKPOINT_NAME.fullmatch(os.path.basename(p))]
    if not paths:
        return None
    return max(paths, key=lambda p: (checkpoint_position(p, epoch_length), os.path.basename(p).startswith("checkpoint")))


def differing_field(stored: dict, config) -> str | None:
    """Describe the first field (other than RESUMABLE_CHANGES) in which `config` differs from `stored`."""
    for field, value in dataclasses.asdict(config).items():
        if field not in RESUMABLE_CHANGES and field in stored and stored[field] != value:
            return f"'{field}' was {stored[field]!r}, now {value!r}"
    return None


def check_resumable(config, run_dir: str) -> None:
    """Refuse, naming the field, to resume a run whose history.json holds a different configuration."""
    try:
        with open(os.path.join(run_dir, "history.json")) as f:
            stored = json.load(f)["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot resume {run_dir}: no readable history.json ({exc})") from None
    difference = differing_field(stored, config)
    if difference:
        raise UserError(f"cannot resume {run_dir}: {difference}")


class RunIdentity:
    """The configuration, stored in every checkpoint so that loading one into another run is refused."""

    def __init__(self, config):
        self.config = config

    def state_dict(self) -> dict:
        return dataclasses.asdict(self.config) | {"output_dir": None}

    def load_state_dict(self, stored: dict) -> None:
        difference = differing_field(stored, self.config)
        if difference:
            raise UserError(f"checkpoint belongs to a different run: {difference}")


def load_checkpoint(path: str, device: torch.device) -> dict:
    """Load a checkpoint safely (`weights_only=True`: tensors and primitives only)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path}: it is truncated or corrupt ({reason})") from None


def find_auto_resume(config, runs_root: str) -> str | None:
    """`--resume auto`: the newest run directory under `runs_root` whose configuration matches `config`
    and that has a checkpoint; None if there is none."""
    candidates = []
    for history_path in glob.glob(os.path.join(glob.escape(runs_root), "*", "history.json")):
        run_dir = os.path.dirname(history_path)
        try:
            with open(history_path) as f:
                stored = json.load(f)["config"]
        except (OSError, ValueError, KeyError):
            continue
        if has_checkpoint(run_dir) and differing_field(stored, config) is None:
            candidates.append((os.path.getmtime(history_path), run_dir))
    return max(candidates)[1] if candidates else None
