"""Run directories: named by dataset, architecture and time; never overwritten."""
from __future__ import annotations

import os
import time

from engine.errors import RunDirError


def default_run_dir(root: str, dataset: str, arch: str, blocks_per_stage: int, seed: int) -> str:
    """`root/<dataset>-<arch>-<blocks>bps-seed<seed>-<YYYYmmdd-HHMMSS>`: the name TensorBoard's run selector
    shows, so it says what tells runs apart. The single-stage net has no stages, hence no block count."""
    blocks = f"-{blocks_per_stage}bps" if arch == "multistage" else ""
    return os.path.join(root, f"{dataset}-{arch}{blocks}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def create_run_dir(path: str) -> str:
    """Create `path` as a fresh run directory. Refuses a file, a non-empty directory or an unwritable place."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirError(f"run directory {path} exists and is a file, not a directory")
    if os.path.isdir(path) and os.listdir(path):
        raise RunDirError(f"run directory {path} already exists and is not empty; choose another --output-dir")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"run directory {path} is not writable")
    return path
