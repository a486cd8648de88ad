"""`--amp auto|on|off`: whether the networks run under bf16 autocast, decided once per run and said aloud.

bf16 autocast pays off where the hardware multiplies bf16 natively: CUDA GPUs, and CPUs with AVX512-BF16 or
AMX-BF16 (Intel Sapphire Rapids and later, AMD Zen 4/5) or Arm's BF16 extension. Elsewhere oneDNN emulates
bf16 with fp32 instructions plus conversions, which is slower than plain fp32, so `auto` leaves it off there
and forcing it prints a warning. Losses, metrics and the epoch mean are always computed in fp32.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

AMP_MODES = ("auto", "on", "off")
# torch.cpu.get_capabilities() keys that mean bf16 multiply-adds in hardware (x86, then Arm).
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def cpu_bf16_features() -> list[str]:
    """The native-bf16 features this CPU reports (empty where it has none, or where oneDNN is missing)."""
    if not torch.backends.mkldnn.is_available():
        return []
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        capabilities = get_capabilities()
        return [name for name in NATIVE_BF16_FEATURES if capabilities.get(name)]
    # Older torch: only the x86 checks exist.
    checks = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return [name for name, check in checks.items() if getattr(torch.cpu, check, lambda: False)()]


@dataclass(frozen=True)
class Precision:
    """What a run computes its forward passes in, and why."""

    dtype: torch.dtype | None  # the autocast dtype; None: plain fp32
    reason: str  # one phrase for the console, e.g. "auto: this CPU has native bf16 (amx_bf16)"
    warning: str | None = None  # set when bf16 was forced where it runs slowly

    @property
    def amp(self) -> bool:
        return self.dtype is not None

    @property
    def dtype_name(self) -> str | None:
        return str(self.dtype).removeprefix("torch.") if self.dtype is not None else None

    def describe(self) -> str:
        """'bf16 autocast (reason)' or 'fp32 (reason)'."""
        return f"{'bf16 autocast' if self.amp else 'fp32'} ({self.reason})"

    def autocast(self, device: torch.device):
        """A context manager: autocast to `dtype` on `device`, or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


FP32 = Precision(None, "--no-amp")


def resolve_precision(mode: str, device: torch.device) -> Precision:
    """`--amp auto` turns bf16 on for CUDA and for CPUs with native bf16; `on`/`off` force it."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp mode must be one of {AMP_MODES}, got {mode!r}")
    if mode == "off":
        return FP32
    if device.type == "cuda":
        return Precision(torch.bfloat16, f"{'auto' if mode == 'auto' else '--amp'}: CUDA")
    features = cpu_bf16_features() if device.type == "cpu" else []
    if features:
        return Precision(torch.bfloat16, f"{'auto' if mode == 'auto' else '--amp'}: this CPU has native bf16 "
                                         f"({', '.join(features)})")
    if device.type == "cpu":
        where, consequence = "this CPU has no native bf16", "expect it to be slower than fp32"
    else:
        where, consequence = f"bf16 autocast on {device.type} is untested here", "check its accuracy"
    if mode == "auto":
        return Precision(None, f"auto: {where}")
    return Precision(torch.bfloat16, f"--amp: forced, {where}",
                     warning=f"warning: --amp forces bf16 autocast although {where}; {consequence}")
