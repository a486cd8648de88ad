"""`--amp auto|on|off`: the decision per device and CPU, what a run records and says, and that bf16 is really used.

The CPU's features and oneDNN's instruction-set cap are patched where the decision depends on them, so every test
means the same on every machine.
"""
import os
import platform
import subprocess
import sys

import pytest
import torch

import engine.build
import engine.precision
import run
from core.recipe import Recipe, Setup
from engine.precision import resolve_precision
from helpers import device_line, read_history, record_dtypes

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def cpu_features(monkeypatch):
    """Pretend this CPU has the given native-bf16 features and oneDNN runs bf16 kernels, under the cap of the
    environment `environ` (none by default).

    The cap is patched where the decision reads it, never in os.environ: oneDNN reads the variable once, at the
    process's first primitive, and a worker whose first convolution ran with the variable removed would keep kernels
    other than those of the subprocesses its later tests compare with."""

    def pretend(*features, environ=None):
        monkeypatch.setattr(engine.precision, "cpu_bf16_features", lambda: list(features))
        monkeypatch.setattr(engine.precision, "onednn_bf16_path", lambda: True)
        monkeypatch.setattr(engine.precision, "onednn_isa_cap", lambda: read_isa_cap(environ or {}))

    return pretend


read_isa_cap = engine.precision.onednn_isa_cap


# Each capability of the table in engine/precision.py, with a GPU that has it.
GPUS = {(6, 0): "Tesla P100-PCIE-16GB", (7, 0): "Tesla V100-SXM2-16GB", (7, 5): "Tesla T4",
        (8, 0): "NVIDIA A100-SXM4-40GB", (8, 6): "NVIDIA GeForce RTX 3090", (9, 0): "NVIDIA H100 80GB HBM3"}


@pytest.fixture
def gpu(monkeypatch):
    """Pretend the CUDA device has the given compute capability (and the name of a GPU that has it)."""

    def pretend(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: GPUS[capability])
        return f"{GPUS[capability]} (sm_{capability[0]}{capability[1]})"

    return pretend


@pytest.mark.parametrize("capability, dtype, words", [
    ((6, 0), None, "fp32 (auto: {gpu} has no tensor cores)"),
    ((7, 0), torch.float16, "fp16 autocast with loss scaling (auto: {gpu} has no native bf16)"),
    ((7, 5), torch.float16, "fp16 autocast with loss scaling (auto: {gpu} has no native bf16)"),
    ((8, 0), torch.bfloat16, "bf16 autocast (auto: {gpu} multiplies bf16 natively)"),
    ((8, 6), torch.bfloat16, "bf16 autocast (auto: {gpu} multiplies bf16 natively)"),
    ((9, 0), torch.bfloat16, "bf16 autocast (auto: {gpu} multiplies bf16 natively)"),
])
def test_auto_on_cuda_follows_what_the_gpu_multiplies_natively(gpu, capability, dtype, words):
    name = gpu(capability)
    precision = resolve_precision("auto", CUDA)
    assert precision.dtype == dtype
    assert precision.loss_scaling is (dtype == torch.float16)  # the run gets a GradScaler exactly then
    assert precision.describe() == words.format(gpu=name)
    assert precision.warning is None and precision.tf32 is False


@pytest.mark.parametrize("capability, deterministic, words", [
    ((7, 5), False, "fp32 (--no-amp)"),
    ((8, 0), False, "fp32 with TF32 convolutions and matmuls (--no-amp)"),
    ((9, 0), False, "fp32 with TF32 convolutions and matmuls (--no-amp)"),
    ((9, 0), True, "fp32 (--no-amp; TF32 off under --deterministic)"),
])
def test_fp32_on_cuda_uses_tf32_from_ampere_on_unless_deterministic(gpu, capability, deterministic, words):
    gpu(capability)
    precision = resolve_precision("off", CUDA, deterministic=deterministic)
    assert precision.dtype is None and precision.describe() == words
    # The run sets both switches from it, whatever they were before.
    switches = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"),
                (torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "deterministic")]
    before = [getattr(module, name) for module, name in switches]
    try:
        for start in (True, False):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = start
            engine.build.configure_torch(Recipe(), Setup(), CUDA, precision)
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (precision.tf32,) * 2
    finally:
        for (module, name), value in zip(switches, before):
            setattr(module, name, value)


def test_forcing_a_precision_on_cuda(gpu):
    t4 = gpu((7, 5))
    forced = resolve_precision("bf16", CUDA)
    assert forced.dtype == torch.bfloat16 and not forced.loss_scaling
    assert forced.describe() == f"bf16 autocast (--amp bf16: forced, {t4} has no native bf16)"
    assert forced.warning == (f"warning: --amp bf16 forces bf16 autocast although {t4} has no native bf16; expect it to "
                              "be slower than fp32; --amp fp16 uses its fp16 tensor cores")
    assert resolve_precision("on", CUDA) == forced  # `on`, and --amp alone, mean bf16
    h100 = gpu((9, 0))
    fp16 = resolve_precision("fp16", CUDA)
    assert (fp16.dtype, fp16.loss_scaling, fp16.warning) == (torch.float16, True, None)
    assert fp16.describe() == f"fp16 autocast with loss scaling (--amp fp16: {h100} has fp16 tensor cores)"
    assert resolve_precision("bf16", CUDA).describe() == f"bf16 autocast (--amp bf16: {h100} multiplies bf16 natively)"


def test_auto_is_bf16_on_cpus_with_native_bf16_and_never_fp16_on_a_cpu(cpu_features):
    cpu_features("avx512_bf16", "amx_bf16")
    precision = resolve_precision("auto", CPU)
    assert precision.dtype == torch.bfloat16 and precision.warning is None
    assert precision.describe() == "bf16 autocast (auto: this CPU has native bf16 (avx512_bf16, amx_bf16))"
    assert resolve_precision("bf16", CPU).describe() == (
        "bf16 autocast (--amp bf16: this CPU has native bf16 (avx512_bf16, amx_bf16))")
    forced = resolve_precision("fp16", CPU)  # whatever the CPU has: fp16 only when asked for, with a warning
    assert (forced.dtype, forced.loss_scaling) == (torch.float16, True)
    assert forced.describe() == "fp16 autocast with loss scaling (--amp fp16: forced on a CPU)"
    assert forced.warning.startswith("warning: --amp fp16 forces fp16 autocast although CPUs run it far slower than fp32")
    cpu_features()
    assert resolve_precision("auto", CPU).dtype is None and resolve_precision("fp16", CPU).warning == forced.warning


def test_mps_is_fp32_unless_forced():
    mps = torch.device("mps")
    assert resolve_precision("auto", mps).describe() == "fp32 (auto: autocast on mps is untested here)"
    forced = resolve_precision("fp16", mps)
    assert forced.dtype == torch.float16 and forced.loss_scaling
    assert forced.warning == "warning: --amp fp16 forces fp16 autocast on mps, which is untested here; check its accuracy"


def test_auto_is_fp32_on_cpus_without_native_bf16_and_forcing_it_warns(cpu_features):
    cpu_features()
    assert resolve_precision("auto", CPU).describe() == "fp32 (auto: this CPU has no native bf16)"
    forced = resolve_precision("bf16", CPU)
    assert forced.dtype == torch.bfloat16
    assert forced.warning == ("warning: --amp bf16 forces bf16 autocast although this CPU has no native bf16; "
                              "expect it to be slower than fp32")
    assert resolve_precision("off", CPU).dtype is None
    with pytest.raises(ValueError, match="amp mode must be one of"):
        resolve_precision("yes", CPU)


def test_native_bf16_features_are_read_from_torch(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False, "amx_bf16": True, "avx2": True})
    assert engine.precision.cpu_bf16_features() == ["amx_bf16"]
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True})
    assert engine.precision.cpu_bf16_features() == []


@pytest.mark.parametrize("cap, expected", [
    ("AVX2", None), ("avx512_core", None), ("AVX512_CORE_BF16", "avx512_bf16"),
    ("AVX512_CORE_AMX", "avx512_bf16, amx_bf16"), ("ALL", "avx512_bf16, amx_bf16"),
    ("no-such-isa", "avx512_bf16, amx_bf16"),
])
def test_auto_follows_what_onednn_will_execute_under_its_isa_cap(cpu_features, cap, expected):
    cpu_features("avx512_bf16", "amx_bf16", environ={"ONEDNN_MAX_CPU_ISA": cap})
    precision = resolve_precision("auto", CPU)
    if expected is None:
        assert precision.describe() == (f"fp32 (auto: this CPU has native bf16 but oneDNN is capped below it "
                                        f"(ONEDNN_MAX_CPU_ISA={cap.upper()}))")
        forced = resolve_precision("bf16", CPU)
        assert forced.dtype == torch.bfloat16 and "oneDNN is capped below it" in forced.warning
    else:
        assert precision.describe() == f"bf16 autocast (auto: this CPU has native bf16 ({expected}))"


def test_the_older_cap_variable_counts_and_so_does_a_missing_bf16_path(cpu_features, monkeypatch):
    cpu_features("avx512_bf16", environ={"DNNL_MAX_CPU_ISA": "AVX2"})
    assert resolve_precision("auto", CPU).describe() == (
        "fp32 (auto: this CPU has native bf16 but oneDNN is capped below it (ONEDNN_MAX_CPU_ISA=AVX2))")
    cpu_features("avx512_bf16")
    monkeypatch.setattr(engine.precision, "onednn_bf16_path", lambda: False)
    assert resolve_precision("auto", CPU).describe() == (
        "fp32 (auto: this CPU has native bf16 (avx512_bf16) but oneDNN has no bf16 kernels for it)")


# What oneDNN's verbose mode calls the levels these tests meet ("onednn_verbose,...,cpu,isa:Intel AVX2").
ONEDNN_SAYS = {"sse41": "Intel SSE4.1", "avx": "Intel AVX", "avx2": "Intel AVX2",
               "avx512_core": "Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions",
               "avx512_core_vnni": "Intel AVX-512 with Intel DL Boost",
               "avx512_core_bf16": "Intel AVX-512 with Intel DL Boost and bfloat16 support"}


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="ONEDNN_MAX_CPU_ISA caps x86 only")
def test_the_recorded_kernel_level_is_the_one_onednn_says_it_runs_and_under_an_avx2_cap_auto_is_fp32():
    """Nothing patched: fresh interpreters, since oneDNN reads its cap once, when it starts; each runs a convolution
    with oneDNN's verbose mode on, which names the level it dispatches to, beside engine.precision's answers."""
    probe = ("import torch, engine.precision as p; "
             "torch.nn.functional.conv2d(torch.zeros(2, 16, 32, 32), torch.zeros(16, 16, 3, 3)); "
             "print('ours', p.onednn_isa(), p.onednn_bf16_path(), p.resolve_precision('auto', torch.device('cpu')).dtype)")
    said = {}
    for cap in (None, "AVX2", "SSE41"):
        env = {key: value for key, value in os.environ.items() if key not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
        said[cap] = subprocess.Popen([sys.executable, "-c", probe], env={**env, "ONEDNN_VERBOSE": "1",
                                     **({"ONEDNN_MAX_CPU_ISA": cap} if cap else {})}, stdout=subprocess.PIPE, text=True,
                                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    levels = {}
    for cap, process in said.items():
        out = process.communicate(timeout=600)[0].splitlines()
        assert process.returncode == 0
        onednn = next(line.split("isa:", 1)[1] for line in out if ",cpu,isa:" in line)
        ours = next(line.split()[1:] for line in out if line.startswith("ours "))
        levels[cap] = ours[0], onednn
        if ours[0] in ONEDNN_SAYS:
            assert onednn == ONEDNN_SAYS[ours[0]], (cap, ours, onednn)
        if cap == "AVX2":
            assert ours == ["avx2", "False", "None"]  # no bf16 kernels below AVX-512: auto is fp32
    # Where a level is not in the table (an AMX Xeon), two levels are the same for us exactly where they are for oneDNN.
    assert len({ours for ours, _ in levels.values()}) == len(set(levels.values())) == len({o for _, o in levels.values()})


def train(data_dir, run_dir, *flags):
    return run.main(["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "1", "--batch-size", "50",
                     "--no-progress", "--output-dir", str(run_dir), *flags])


@pytest.mark.slow
def test_forced_amp_runs_bf16_convolutions_keeps_losses_fp32_and_says_so(cifar10_dir, tmp_path, capsys, monkeypatch,
                                                                           cpu_features):
    data_dir, _ = cifar10_dir
    cpu_features()  # a CPU without native bf16: forcing it must warn, once
    seen = record_dtypes(monkeypatch)
    assert train(data_dir, tmp_path / "run", "--amp") == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == device_line("bf16 autocast (--amp bf16: forced, this CPU has no native bf16)")
    assert err.count("warning: --amp bf16 forces bf16 autocast") == 1
    assert seen == {"conv": {torch.bfloat16}, "sample_losses": {torch.float32}}
    history = read_history(str(tmp_path / "run"))
    assert (history["amp"], history["amp_dtype"], history["config"]["amp"]) == (True, "bfloat16", "bf16")
    assert isinstance(history["epochs"][0]["train_loss"], float)


def test_no_amp_runs_fp32(cifar10_dir, tmp_path, capsys, monkeypatch):
    data_dir, _ = cifar10_dir
    seen = record_dtypes(monkeypatch)
    assert train(data_dir, tmp_path / "run", "--no-amp") == 0
    assert capsys.readouterr().out.splitlines()[0] == device_line("fp32 (--no-amp)")
    assert seen == {"conv": {torch.float32}, "sample_losses": {torch.float32}}
    history = read_history(str(tmp_path / "run"))
    assert (history["amp"], history["amp_dtype"], history["config"]["amp"]) == (False, None, "off")


@pytest.mark.slow
@pytest.mark.parametrize("features, dtype", [((), torch.float32), (("amx_bf16",), torch.bfloat16)])
def test_default_follows_the_cpu(cifar10_dir, tmp_path, capsys, monkeypatch, cpu_features, features, dtype):
    data_dir, _ = cifar10_dir
    cpu_features(*features)
    seen = record_dtypes(monkeypatch)
    assert train(data_dir, tmp_path / "run") == 0
    out, err = capsys.readouterr()
    assert "warning" not in err
    assert seen["conv"] == {dtype}
    assert read_history(str(tmp_path / "run"))["amp"] is (dtype == torch.bfloat16)
