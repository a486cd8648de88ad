"""What the machine can do at best, for the throughput benchmarks: the training FLOPs of one image, the best rate of
a few dense kernels in a precision (a large matmul and a large channels_last 3x3 convolution: on some CPUs oneDNN's
convolution runs twice as fast as torch's matmul, so a matmul alone is not the limit), and the CPU's features."""
from __future__ import annotations

import os
import sys
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.devices import cpu_model  # noqa: E402
from engine.precision import native_bf16  # noqa: E402
from models import build_model  # noqa: E402

# The CPU features that decide how fast these kernels can run, as /proc/cpuinfo names them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "asimd", "sve", "bf16", "i8mm")


def training_flops_per_image(arch: str, num_classes: int, batch_size: int) -> float:
    """Forward + backward FLOPs of one training image, counted by torch.utils.flop_counter (the same count in
    every precision)."""
    model = build_model(arch, num_classes).to(memory_format=torch.channels_last)
    images = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(images), labels).backward()
    return counter.get_total_flops() / batch_size


def _rate(kernel, flops: float, seconds: float) -> float:
    """FLOP/s of `kernel()` run repeatedly for about `seconds` after two warm-up calls."""
    for _ in range(2):
        kernel()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        kernel()
        count += 1
    return flops * count / (time.perf_counter() - start)


def dense_kernel_rates(dtype: torch.dtype, seconds: float, small: bool = False) -> dict[str, float]:
    """GFLOP/s of the densest kernels this machine runs in `dtype`: the best of two square matmuls, and a
    256->256-channel 3x3 convolution over 32x32 channels_last images (oneDNN's own layout). `small` (a smoke
    test of the measurement, not a peak) uses kernels an eighth as wide: each is called at least three times,
    and without native bf16 a full-size bf16 call alone can take seconds."""
    rates = {}
    matmul = 0.0
    for size in ((128, 256) if small else (1024, 2048)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        matmul = max(matmul, _rate(lambda: a @ b, 2 * size**3, seconds))
    rates["matmul"] = matmul / 1e9
    channels, batch = (32, 4) if small else (256, 16)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, channels, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        rates["conv3x3_channels_last"] = _rate(lambda: conv(x), 2 * batch * channels**2 * 9 * 32 * 32, seconds) / 1e9
    return rates


def cpu_facts() -> dict:
    """The CPU model (as a run records it) and the ISA flags that matter for fp32/bf16 kernels (from /proc/cpuinfo
    where it exists)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags |= set(value.split())
    except OSError:
        pass
    return {"cpu_model": cpu_model(), "isa_flags": [flag for flag in ISA_FLAGS if flag in flags],
            "native_bf16": native_bf16()[0]}
