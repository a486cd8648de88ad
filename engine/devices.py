"""Device choice. Under torchrun, ignite.distributed decides (one GPU per process)."""
from __future__ import annotations

import ignite.distributed as idist
import torch

from core.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; naming an unavailable device is a clear error."""
    if idist.get_world_size() > 1:
        return idist.device()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested, but PyTorch sees no CUDA GPU on this machine")
    if name == "mps" and not _mps_available():
        raise UserError("--device mps requested, but the MPS backend is not available on this machine")
    return torch.device(name)
