"""`--amp auto|on|off`: whether the networks run under bf16 autocast, decided once per run and said aloud.

bf16 autocast pays off where the hardware multiplies bf16 natively: CUDA GPUs, and CPUs with AVX512-BF16 or
AMX-BF16 (Intel Sapphire Rapids and later, AMD Zen 4/5) or Arm's BF16 extension. Elsewhere oneDNN emulates
bf16 with fp32 instructions plus conversions, which is slower than plain fp32, so `auto` leaves it off there
and forcing it prints a warning. Losses, metrics and the epoch mean are always computed in fp32.

What counts is what oneDNN will execute, not what the CPU reports: `ONEDNN_MAX_CPU_ISA` (a user's cap, or a
virtual machine's) can forbid the bf16 instructions of a CPU that has them.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

AMP_MODES = ("auto", "on", "off")
# torch.cpu.get_capabilities() keys that mean bf16 multiply-adds in hardware (x86, then Arm).
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")

# oneDNN's x86 instruction-set levels in increasing order (its `dnnl_cpu_isa_t`, as `ONEDNN_MAX_CPU_ISA` names
# them), and the lowest level at which oneDNN uses each native-bf16 feature.
ONEDNN_ISA_LEVELS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                     "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
                     "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
ONEDNN_LEVEL_OF_FEATURE = {"avx512_bf16": "AVX512_CORE_BF16", "amx_bf16": "AVX512_CORE_AMX"}


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


def onednn_isa_cap() -> str | None:
    """The instruction-set cap oneDNN was given (`ONEDNN_MAX_CPU_ISA`, or its older name `DNNL_MAX_CPU_ISA`),
    upper-cased; None when there is none (unset, `ALL`, `DEFAULT`, or a name oneDNN does not know)."""
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(variable, "").strip().upper()
        if value:
            return value if value in ONEDNN_ISA_LEVELS else None
    return None


def onednn_bf16_path() -> bool:
    """Whether oneDNN runs bf16 kernels at all on this CPU (it answers False under a cap below AVX-512)."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is None:
        return torch.backends.mkldnn.is_available()
    try:
        return bool(check())
    except RuntimeError:  # a build without the op
        return torch.backends.mkldnn.is_available()


def native_bf16() -> tuple[list[str], str]:
    """(the native-bf16 features oneDNN will execute on this CPU, and a phrase saying why when there are none)."""
    features = cpu_bf16_features()
    if not features:
        return [], "this CPU has no native bf16"
    if not onednn_bf16_path():
        return [], f"this CPU has native bf16 ({', '.join(features)}) but oneDNN has no bf16 kernels for it"
    cap = onednn_isa_cap()
    if cap is not None:
        level = ONEDNN_ISA_LEVELS.index(cap)
        features = [name for name in features if name not in ONEDNN_LEVEL_OF_FEATURE
                    or ONEDNN_ISA_LEVELS.index(ONEDNN_LEVEL_OF_FEATURE[name]) <= level]
        if not features:
            return [], f"this CPU has native bf16 but oneDNN is capped below it (ONEDNN_MAX_CPU_ISA={cap})"
    return features, ""


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


def recorded_precision(amp_dtype: str | None) -> Precision:
    """The precision a run recorded in history.json (`amp_dtype`), to repeat its passes exactly."""
    return Precision(torch.bfloat16, "as trained") if amp_dtype == "bfloat16" else FP32


def resolve_precision(mode: str, device: torch.device) -> Precision:
    """`--amp auto` turns bf16 on for CUDA and for CPUs with native bf16; `on`/`off` force it."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp mode must be one of {AMP_MODES}, got {mode!r}")
    if mode == "off":
        return FP32
    if device.type == "cuda":
        return Precision(torch.bfloat16, f"{'auto' if mode == 'auto' else '--amp'}: CUDA")
    if device.type == "cpu":
        features, where = native_bf16()
        if features:
            return Precision(torch.bfloat16, f"{'auto' if mode == 'auto' else '--amp'}: this CPU has native bf16 "
                                             f"({', '.join(features)})")
        consequence = "expect it to be slower than fp32"
    else:
        where, consequence = f"bf16 autocast on {device.type} is untested here", "check its accuracy"
    if mode == "auto":
        return Precision(None, f"auto: {where}")
    return Precision(torch.bfloat16, f"--amp: forced, {where}",
                     warning=f"warning: --amp forces bf16 autocast although {where}; {consequence}")
