"""Networks of the user's own, named `package.module:callable` (imported as Python imports it: the working directory
and PYTHONPATH are searched) or `path/to/file.py:callable` (a file loaded by its path).

The callable is called as `callable(num_classes=N)`, with `blocks_per_stage=K` too when its signature takes that
parameter, and must return an `nn.Module` mapping (B, 3, 32, 32) images to (B, N) logits. Every failure is a
`UserError` of one line. A spec resolves to a file, whose content hash a run records: a resume refuses a changed
file as it refuses a changed recipe field.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from core.errors import UserError
from models.stats import IMAGE_SIZE

SEPARATOR = ":"
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
            raise UserError(f"{self.spec}: calling it with {_call_words(kwargs)} failed: {_first_line(exc)}") from exc
        if not isinstance(model, nn.Module):
            raise UserError(f"{self.spec}: returned a {type(model).__name__}, not a torch.nn.Module")
        return model


def _call_words(kwargs: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in kwargs.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


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
        path = _source_file(module_part)
    except UserError:
        # Not found from here: the file this process or the run found it in before, if it still exists.
        path = next((file for file in (earlier and earlier.file, recorded_file) if file and os.path.isfile(file)), None)
        if path is None:
            raise
    sha256 = file_sha256(path)
    if earlier is not None and earlier.file == path and earlier.sha256 == sha256:
        return earlier
    module = _execute(module_part, path)
    factory = getattr(module, attribute, None)
    if factory is None:
        raise UserError(f"{spec}: {path} has no attribute {attribute!r}")
    if not callable(factory):
        raise UserError(f"{spec}: {attribute} is a {type(factory).__name__}, not a class or function")
    net = UserNet(spec, factory, path, sha256)
    _LOADED[spec] = net
    return net


def _is_file_spec(module_part: str) -> bool:
    return module_part.endswith(".py") or os.sep in module_part or "/" in module_part


def _source_file(module_part: str) -> str:
    """The file a spec's module part names from here, found without running it."""
    if _is_file_spec(module_part):
        if os.path.isfile(module_part):
            return os.path.abspath(module_part)
        raise UserError(f"no such file: {module_part}")
    _search_working_directory()
    try:
        found = importlib.util.find_spec(module_part)
    except (ImportError, ValueError) as exc:  # a parent package that is missing or fails to import
        found, reason = None, _first_line(exc)
    else:
        reason = None
    if found is not None and found.origin and os.path.isfile(found.origin):
        return os.path.abspath(found.origin)
    searched = os.pathsep.join(path or "." for path in sys.path)
    raise UserError(f"no module named {module_part!r}" + (f" ({reason})" if reason else "") + f"; searched {searched}")


def _search_working_directory() -> None:
    # `python run.py` puts the script's folder on sys.path, not the working directory: a module spec is searched
    # for where the user stands, as `python -m` would.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _execute(module_part: str, path: str):
    """Run the module's file (afresh if it was loaded before) and return the module; an error inside it is one
    line naming the file and line."""
    if _is_file_spec(module_part):  # a name of its own, so that two files of one name do not meet in sys.modules
        name = "user_net_" + hashlib.sha256(path.encode()).hexdigest()[:12]
    else:
        name, parent = module_part, module_part.rpartition(".")[0]
        if parent:  # its packages first, as an import would (a relative import inside the module needs them)
            try:
                importlib.import_module(parent)
            except Exception as exc:
                raise UserError(f"importing {module_part} failed: {_error_place(exc, path)}") from exc
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module  # dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise UserError(f"importing {module_part} failed: {_error_place(exc, path)}") from exc
    return module


def _error_place(exc: BaseException, path: str) -> str:
    """"SyntaxError: invalid syntax (mynets.py, line 3)", or the innermost frame of the error in the user's code."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    frames = [frame for frame in frames if frame.filename == path] or frames
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return _first_line(exc) + where


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
                        f"{_error_place(exc, net.file)}") from exc
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
