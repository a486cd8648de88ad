"""Networks of the user's own, named `package.module:callable` or `path/to/file.py:callable` (found and run by
models/user_code.py, never as the engine's own modules).

The callable is called as `callable(num_classes=N)`, with `blocks_per_stage=K` too when its signature takes that
parameter, and must return an `nn.Module` mapping (B, 3, 32, 32) images to (B, N) logits. Every failure is a
`UserError` of one line. A spec resolves to a file, whose content hash a run records: a resume refuses a changed
file as it refuses a changed recipe field.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from core.errors import UserError
from models import user_code
from models.stats import IMAGE_SIZE
from models.user_code import SEPARATOR
BLOCKS_PARAMETER = "blocks_per_stage"


def is_spec(name: str) -> bool:
    """Whether an --arch value names a user's network rather than one of the registry."""
    return SEPARATOR in name


def callable_name(spec: str) -> str:
    """The callable's part of a spec: "mynets.py:WideNet" -> "WideNet"."""
    return spec.rpartition(SEPARATOR)[2]


def safe_name(spec: str) -> str:
    """The spec as a directory name: the callable's name with anything but letters, digits, '.', '_' and '-'
    replaced, never a path."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", callable_name(spec)).strip(".-") or "net"


@dataclass(frozen=True)
class UserNet:
    """A resolved spec: the callable, the file it came from and that file's SHA-256."""

    spec: str
    factory: Callable[..., object]
    file: str
    sha256: str

    @property
    def takes_blocks(self) -> bool:
        try:
            return BLOCKS_PARAMETER in inspect.signature(self.factory).parameters
        except (TypeError, ValueError):  # a callable without a readable signature
            return False

    @property
    def description(self) -> str:
        """The first line of the callable's docstring, or the spec when it has none."""
        doc = inspect.getdoc(self.factory)
        return doc.strip().splitlines()[0] if doc and doc.strip() else self.spec

    def record(self) -> dict:
        """What history.json keeps of the network: the spec as given, the file it resolved to, its hash."""
        return {"spec": self.spec, "file": self.file, "sha256": self.sha256}

    def build(self, num_classes: int, blocks_per_stage: int | None = None) -> nn.Module:
        """Call the factory; a failure, or anything but an nn.Module, is a UserError."""
        kwargs = {"num_classes": num_classes}
        if self.takes_blocks and blocks_per_stage is not None:
            kwargs[BLOCKS_PARAMETER] = blocks_per_stage
        try:
            model = self.factory(**kwargs)
        except Exception as exc:
            raise UserError(f"{self.spec}: calling it with {_call_words(kwargs)} failed: {user_code.first_line(exc)}") from exc
        if not isinstance(model, nn.Module):
            raise UserError(f"{self.spec}: returned a {type(model).__name__}, not a torch.nn.Module")
        return model


def _call_words(kwargs: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in kwargs.items())


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# Each spec resolved in this process, so that a run that found its file through a run's record (another working
# directory) builds the same net again; a changed file is loaded afresh.
_LOADED: dict[str, UserNet] = {}


def load(spec: str, recorded_file: str | None = None) -> UserNet:
    """Resolve `spec` to its callable. Where the spec no longer resolves from here (another working directory), the
    file a run recorded (`recorded_file`) stands in for it."""
    module_part, _, attribute = spec.rpartition(SEPARATOR)
    if not module_part or not attribute:
        raise UserError(f"--arch {spec}: expected MODULE:CALLABLE or FILE.py:CALLABLE")
    earlier = _LOADED.get(spec)
    try:
        path, root = user_code.locate(spec)
    except UserError:
        # Not found from here: the file this process or the run found it in before, if it still exists.
        path = next((file for file in (earlier and earlier.file, recorded_file) if file and os.path.isfile(file)), None)
        if path is None:
            raise
        root = None if user_code.is_file_spec(module_part) else user_code.package_root(path, module_part)
    sha256 = file_sha256(path)
    if earlier is not None and earlier.file == path and earlier.sha256 == sha256:
        return earlier
    module = user_code.run_module(module_part, path, root)
    factory = getattr(module, attribute, None)
    if factory is None:
        raise UserError(f"{spec}: {path} has no attribute {attribute!r}")
    if not callable(factory):
        raise UserError(f"{spec}: {attribute} is a {type(factory).__name__}, not a class or function")
    net = UserNet(spec, factory, path, sha256)
    _LOADED[spec] = net
    return net


def check(net: UserNet, num_classes: int, blocks_per_stage: int | None = None) -> nn.Module:
    """Build the net and try it: one 32x32 image in, (1, num_classes) logits out, trainable parameters. Returns
    the model built; every failure is one UserError."""
    model = net.build(num_classes, blocks_per_stage)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"{net.spec}: the network has no trainable parameters")
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    except Exception as exc:
        raise UserError(f"{net.spec}: a forward pass of one {IMAGE_SIZE}x{IMAGE_SIZE} image failed: "
                        f"{user_code.error_place(exc, net.file)}") from exc
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (1, num_classes):
        raise UserError(f"{net.spec}: one {IMAGE_SIZE}x{IMAGE_SIZE} image gave output {shape}, expected "
                        f"(1, {num_classes}) logits")
    return model


def load_recorded(record: dict | None) -> UserNet | None:
    """The network a run recorded (history.json's "network"), resolved from here, or from the recorded file where
    the spec does not resolve from here; None for a run of a registry net."""
    return None if not record else load(record["spec"], recorded_file=record.get("file"))


def change(record: dict | None) -> str | None:
    """How the recorded network's file differs from the one it resolves to now, in words; None if it does not."""
    net = load_recorded(record)
    if net is None or net.sha256 == record.get("sha256"):
        return None
    moved = f" (now {net.file})" if net.file != record.get("file") else ""
    return (f"the network file {record.get('file')}{moved} of {record['spec']} changed since the run trained "
            f"(sha256 was {str(record.get('sha256'))[:12]}, now {net.sha256[:12]})")
