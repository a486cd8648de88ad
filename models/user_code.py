"""Finding and running a user's Python code for `--arch MODULE:CALLABLE` and `--arch FILE.py:CALLABLE`, without
ever meeting the engine's own modules: a module is searched in the working directory, then PYTHONPATH, then where
Python finds installed modules, and a file or package of the user's is run under a private name in sys.modules (its
relative imports still work), so that a `models.py` of one's own is never the engine's `models` package, nor two
files of one name each other. Every failure is a UserError of one line naming the file and line.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback

from core.errors import UserError

SEPARATOR = ":"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def is_file_spec(module_part: str) -> bool:
    return module_part.endswith(".py") or os.sep in module_part or "/" in module_part


# The folder that holds run.py and the engine's own packages (engine, core, handlers, models).
ENGINE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _engine_own(path: str) -> bool:
    """Whether `path` is a module of the engine itself (run.py, or inside one of its packages)."""
    inside = os.path.relpath(os.path.realpath(path), os.path.realpath(ENGINE_ROOT)).split(os.sep)
    return inside[0] != os.pardir and (inside == ["run.py"] or len(inside) > 1
                                       and os.path.isfile(os.path.join(ENGINE_ROOT, inside[0], "__init__.py")))


def _find(module_part: str, folders: list[str], namespace: bool = False) -> importlib.machinery.ModuleSpec | None:
    """The spec of module `a.b.c` as found under `folders` alone, package by package, without running anything and
    without looking at sys.modules (where the engine's own `models` would answer for a user's); a namespace package
    (a folder without __init__.py) counts only if `namespace`."""
    found, locations = None, folders
    for depth in range(module_part.count(".") + 1):
        name = ".".join(module_part.split(".")[:depth + 1])
        found = importlib.machinery.PathFinder.find_spec(name, locations)
        if found is None:
            return None
        locations = found.submodule_search_locations or []
    return found if namespace or found.origin and os.path.isfile(found.origin) else None


def locate(spec: str) -> tuple[str, str | None]:
    """The file a spec's module part names from here, found without running it, and for a module of the user's own
    the folder it was found in (a file spec and an installed module have none): the working directory first, then
    PYTHONPATH's folders, then the rest of sys.path. A name that only the engine's own modules answer is refused."""
    module_part, _, attribute = spec.rpartition(SEPARATOR)
    if is_file_spec(module_part):
        if os.path.isfile(module_part):
            return os.path.abspath(module_part), None
        raise UserError(f"no such file: {module_part}")
    _search_working_directory()
    own = [os.getcwd(), *(folder for folder in os.environ.get("PYTHONPATH", "").split(os.pathsep) if folder)]
    for folder in own:
        found = _find(module_part, [folder])
        if found is not None and not _engine_own(found.origin):
            return os.path.abspath(found.origin), folder
    found = _find(module_part, [folder or "." for folder in sys.path])
    if found is not None and _engine_own(found.origin):
        top = module_part.split(".")[0]
        raise UserError(f"{spec}: {module_part} is this engine's own {found.origin}, and neither the working directory "
                        f"nor PYTHONPATH holds a {top}.py or {top}/ of yours; name your file by its path instead: "
                        f"--arch path/to/{module_part.replace('.', '/')}.py:{attribute}")
    if found is not None:
        return os.path.abspath(found.origin), None
    searched = os.pathsep.join(dict.fromkeys(own + [folder or "." for folder in sys.path]))
    raise UserError(f"no module named {module_part!r}; searched {searched}")


def package_root(path: str, module_part: str) -> str:
    """The folder that holds the top package of `module_part`, whose file is `path`."""
    folder = os.path.dirname(path) if os.path.basename(path) == "__init__.py" else path
    for _ in module_part.split("."):
        folder = os.path.dirname(folder)
    return folder


def _search_working_directory() -> None:
    # `python run.py` puts the script's folder on sys.path, not the working directory: a module of the user's may
    # import its neighbours as `python -m` would let it.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def run_module(module_part: str, path: str, root: str | None):
    """Run the module's file (afresh if it was loaded before) and return the module; an error inside it is one
    line naming the file and line. A file spec, and a module of the user's own (found in `root`), are loaded under
    a private name, so that neither meets the engine's own modules, nor two files of one name each other, in
    sys.modules; a module of the user's keeps its packages, so that its relative imports work."""
    if is_file_spec(module_part):
        return _run_file("user_net_" + hashlib.sha256(path.encode()).hexdigest()[:12], path, None, module_part)
    if root is None:  # an installed module, imported as Python imports it
        try:
            return importlib.import_module(module_part)
        except Exception as exc:
            raise UserError(f"importing {module_part} failed: {error_place(exc, path)}") from exc
    prefix = "user_net_" + hashlib.sha256(os.path.join(root, module_part).encode()).hexdigest()[:12]
    for name in [name for name in sys.modules if name == prefix or name.startswith(prefix + ".")]:
        del sys.modules[name]  # its own modules afresh, as they are on disk now
    parts = module_part.split(".")
    for depth in range(len(parts)):  # its packages first, as an import would
        found = _find(".".join(parts[:depth + 1]), [root], namespace=True)
        module = _run_file(".".join([prefix, *parts[1:depth + 1]]), found.origin, found.submodule_search_locations,
                           module_part)
    return module


def _run_file(name: str, file: str | None, locations: list[str] | None, module_part: str):
    """Execute `file` as module `name` (a package where `locations` are given; a namespace package without a file)."""
    spec = (importlib.util.spec_from_file_location(name, file, submodule_search_locations=locations) if file
            else importlib.machinery.ModuleSpec(name, None, is_package=True))
    if file is None:
        spec.submodule_search_locations = list(locations)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module  # dataclasses, pickling and relative imports look their module up there
    try:
        if file:
            spec.loader.exec_module(module)
    except Exception as exc:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise UserError(f"importing {module_part} failed: {error_place(exc, file)}") from exc
    return module


def error_place(exc: BaseException, path: str) -> str:
    """"SyntaxError: invalid syntax (mynets.py, line 3)", or the innermost frame of the error in the user's code."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    frames = [frame for frame in frames if frame.filename == path] or frames
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return first_line(exc) + where
