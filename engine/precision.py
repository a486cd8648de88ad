"""`--amp auto|bf16|fp16|off`: what a run's forward passes compute in, decided once per run from what the device
multiplies natively, and said aloud.

| device | `auto` picks |
| --- | --- |
| CUDA, compute capability 8.0 and above (A100, H100, RTX 30xx/40xx) | bf16 autocast |
| CUDA 7.x (V100, T4, RTX 20xx): fp16 tensor cores, bf16 only emulated | fp16 autocast with loss scaling |
| CUDA below 7.0 (P100, K80): no tensor cores | fp32 |
| a CPU whose bf16 oneDNN executes natively (AVX512-BF16, AMX-BF16; Arm's BF16) | bf16 autocast |
| any other CPU, MPS | fp32 |

fp32 on CUDA 8.0 and above runs its convolutions and matmuls in TF32, except under `--deterministic`, which keeps
full fp32. fp16 needs loss scaling (handlers/loss_scaling.py); `auto` never picks it on a CPU, where oneDNN runs
fp16 autocast far slower than fp32. Forcing a precision where it runs slowly or untested prints a warning. `on` is
bf16, as `--amp` alone is. Losses, metrics and the epoch mean are always computed in fp32.

On a CPU what counts is what oneDNN will execute, not what the CPU reports: `ONEDNN_MAX_CPU_ISA` (a user's cap,
or a virtual machine's) can forbid the bf16 instructions of a CPU that has them.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

# `on` is bf16; `off` is plain fp32 (also `--no-amp`).
AMP_MODES = ("auto", "bf16", "fp16", "off", "on")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SHORT_NAMES = {dtype: name for name, dtype in AUTOCAST_DTYPES.items()}
# The names of the precisions (as the benchmarks take them) and the `--amp` mode that forces each.
PRECISION_MODES = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}
# The compute capabilities from which CUDA GPUs multiply bf16, fp16 and TF32 on tensor cores.
CUDA_NATIVE_BF16, CUDA_NATIVE_FP16, CUDA_TF32 = (8, 0), (7, 0), (8, 0)
# torch.cpu.get_capabilities() keys that mean bf16 multiply-adds in hardware (x86, then Arm).
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")

# oneDNN's x86 instruction-set levels in increasing order (its `dnnl_cpu_isa_t`, as `ONEDNN_MAX_CPU_ISA` names
# them), and the lowest level at which oneDNN uses each native-bf16 feature.
ONEDNN_ISA_LEVELS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                     "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
                     "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
ONEDNN_LEVEL_OF_FEATURE = {"avx512_bf16": "AVX512_CORE_BF16", "amx_bf16": "AVX512_CORE_AMX"}
# The CPU features (torch.cpu.get_capabilities() names) each level needs, as oneDNN's dispatcher asks for them; the
# AVX10 levels, which it reaches only on CPUs that announce AVX10, are left out.
_AVX512_CORE = ("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq")
_AVX512_CORE_BF16 = (*_AVX512_CORE, "avx512_vnni", "avx512_bf16")
ONEDNN_LEVEL_NEEDS = {
    "SSE41": ("sse4_1",), "AVX": ("avx",), "AVX2": ("avx2",), "AVX2_VNNI": ("avx2", "avx_vnni"),
    "AVX2_VNNI_2": ("avx2", "avx_vnni", "avx_vnni_int8", "avx_ne_convert"), "AVX512_CORE": _AVX512_CORE,
    "AVX512_CORE_VNNI": (*_AVX512_CORE, "avx512_vnni"), "AVX512_CORE_BF16": _AVX512_CORE_BF16,
    "AVX512_CORE_FP16": (*_AVX512_CORE_BF16, "avx512_fp16"),
    "AVX512_CORE_AMX": (*_AVX512_CORE_BF16, "amx_tile", "amx_int8", "amx_bf16"),
    "AVX512_CORE_AMX_FP16": (*_AVX512_CORE_BF16, "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16"),
}


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


def onednn_isa_cap(environ: Mapping[str, str] = os.environ) -> str | None:
    """The instruction-set cap oneDNN was given (`ONEDNN_MAX_CPU_ISA`, or its older name `DNNL_MAX_CPU_ISA`, in
    `environ`), upper-cased; None when there is none (unset, `ALL`, `DEFAULT`, or a name oneDNN does not know)."""
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = environ.get(variable, "").strip().upper()
        if value:
            return value if value in ONEDNN_ISA_LEVELS else None
    return None


def onednn_isa() -> str | None:
    """The instruction-set level oneDNN runs its kernels at in this process, as it names them ('avx2',
    'avx512_core_bf16', 'avx512_core_amx'): the highest level the CPU has, at most `ONEDNN_MAX_CPU_ISA`. Trained
    numbers differ between levels in their last bits. None off x86 or without oneDNN."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None or not torch.backends.mkldnn.is_available():
        return None
    features, cap = get_capabilities(), onednn_isa_cap()
    highest = len(ONEDNN_ISA_LEVELS) if cap is None else ONEDNN_ISA_LEVELS.index(cap) + 1
    levels = [level for level in ONEDNN_ISA_LEVELS[:highest]
              if level in ONEDNN_LEVEL_NEEDS and all(features.get(name) for name in ONEDNN_LEVEL_NEEDS[level])]
    return levels[-1].lower() if levels else None


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


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """An autocast dtype as history.json's `amp_dtype` names it ('bfloat16', 'float16'); None for plain fp32."""
    return str(dtype).removeprefix("torch.") if dtype is not None else None


@dataclass(frozen=True)
class Precision:
    """What a run computes its forward passes in, and why."""

    dtype: torch.dtype | None  # the autocast dtype; None: plain fp32
    reason: str  # one phrase for the console, e.g. "auto: this CPU has native bf16 (amx_bf16)"
    warning: str | None = None  # set when a precision was forced where it runs slowly or untested
    tf32: bool = False  # fp32 convolutions and matmuls on TF32 tensor cores (CUDA 8.0 and above)

    @property
    def amp(self) -> bool:
        return self.dtype is not None

    @property
    def loss_scaling(self) -> bool:
        """fp16's narrow range underflows small gradients unless the loss is scaled up first (GradScaler)."""
        return self.dtype == torch.float16

    @property
    def dtype_name(self) -> str | None:
        return dtype_name(self.dtype)

    def in_words(self) -> str:
        """'bf16 autocast', 'fp16 autocast with loss scaling', 'fp32 with TF32 convolutions and matmuls' or 'fp32'."""
        if self.dtype is None:
            return "fp32 with TF32 convolutions and matmuls" if self.tf32 else "fp32"
        return f"{SHORT_NAMES[self.dtype]} autocast" + (" with loss scaling" if self.loss_scaling else "")

    def describe(self) -> str:
        """What and why, e.g. 'bf16 autocast (auto: this CPU has native bf16 (amx_bf16))'."""
        return f"{self.in_words()} ({self.reason})"

    def autocast(self, device: torch.device):
        """A context manager: autocast to `dtype` on `device`, or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


FP32 = Precision(None, "--no-amp")


def recorded_precision(amp_dtype: str | None) -> Precision:
    """The precision a run recorded in history.json (`amp_dtype`), to repeat its test passes exactly."""
    dtype = AUTOCAST_DTYPES.get(recorded_mode(amp_dtype))
    return Precision(dtype, "as trained") if dtype is not None else FP32


def recorded_mode(amp_dtype: str | None) -> str:
    """The `--amp` mode that gives a recorded `amp_dtype` again: what a resume runs in unless --amp is given."""
    return next((mode for mode, dtype in AUTOCAST_DTYPES.items() if dtype_name(dtype) == amp_dtype), "off")


def resolve_precision(mode: str, device: torch.device, deterministic: bool = False) -> Precision:
    """The precision `--amp MODE` gives on `device` (the table of the module docstring); `deterministic` keeps
    TF32 off."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp mode must be one of {AMP_MODES}, got {mode!r}")
    mode = "bf16" if mode == "on" else mode
    if device.type == "cuda":
        return _on_cuda(mode, device, deterministic)
    if mode == "off":
        return FP32
    if device.type == "cpu":
        return _on_cpu(mode)
    if mode == "auto":
        return Precision(None, f"auto: autocast on {device.type} is untested here")
    return Precision(AUTOCAST_DTYPES[mode], f"--amp {mode}: forced on {device.type}",
                     warning=f"warning: --amp {mode} forces {mode} autocast on {device.type}, which is untested here; "
                             "check its accuracy")


def _on_cpu(mode: str) -> Precision:
    if mode == "fp16":
        return Precision(torch.float16, "--amp fp16: forced on a CPU",
                         warning="warning: --amp fp16 forces fp16 autocast although CPUs run it far slower than fp32 (it "
                                 "is for GPUs without native bf16); expect it to be much slower than fp32")
    features, where = native_bf16()
    if features:
        given = "auto" if mode == "auto" else "--amp bf16"
        return Precision(torch.bfloat16, f"{given}: this CPU has native bf16 ({', '.join(features)})")
    if mode == "auto":
        return Precision(None, f"auto: {where}")
    return Precision(torch.bfloat16, f"--amp bf16: forced, {where}",
                     warning=f"warning: --amp bf16 forces bf16 autocast although {where}; expect it to be slower than fp32")


def _on_cuda(mode: str, device: torch.device, deterministic: bool) -> Precision:
    capability = tuple(torch.cuda.get_device_capability(device))
    gpu = f"{torch.cuda.get_device_name(device)} (sm_{capability[0]}{capability[1]})"
    native_bf16, tensor_cores = capability >= CUDA_NATIVE_BF16, capability >= CUDA_NATIVE_FP16
    if mode == "auto" and native_bf16:
        return Precision(torch.bfloat16, f"auto: {gpu} multiplies bf16 natively")
    if mode == "auto" and tensor_cores:
        return Precision(torch.float16, f"auto: {gpu} has no native bf16")
    if mode == "bf16" and native_bf16:
        return Precision(torch.bfloat16, f"--amp bf16: {gpu} multiplies bf16 natively")
    if mode == "bf16":
        instead = "; --amp fp16 uses its fp16 tensor cores" if tensor_cores else ""
        return Precision(torch.bfloat16, f"--amp bf16: forced, {gpu} has no native bf16",
                         warning=f"warning: --amp bf16 forces bf16 autocast although {gpu} has no native bf16; expect it "
                                 f"to be slower than fp32{instead}")
    if mode == "fp16":
        return Precision(torch.float16, f"--amp fp16: {gpu} {'has fp16 tensor cores' if tensor_cores else 'has no tensor cores'}")
    reason = f"auto: {gpu} has no tensor cores" if mode == "auto" else FP32.reason
    if capability < CUDA_TF32:
        return Precision(None, reason)
    if deterministic:
        return Precision(None, f"{reason}; TF32 off under --deterministic")
    return Precision(None, reason, tf32=True)
