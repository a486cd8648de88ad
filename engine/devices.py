"""Device choice, and what a run says about the device it ran on. Under torchrun, ignite.distributed decides (one
GPU per process)."""
from __future__ import annotations

import contextlib
import glob
import os
import platform
import re
import signal

import ignite.distributed as idist
import torch

from core.errors import ProcessLost, UserError
from core.history_file import DEVICE_MODEL, ONEDNN_ISA, THREADS
from core.numbers import counted
from engine.precision import onednn_isa

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def _on_cuda(name: str) -> bool:
    """Whether --device `name` computes on a CUDA GPU of this machine: `auto` picks CUDA first."""
    return name in ("auto", "cuda") and torch.cuda.is_available()


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; naming an unavailable device is a clear error."""
    if idist.get_world_size() > 1:
        return idist.device()
    if name == "auto":
        if _on_cuda(name):
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested, but PyTorch sees no CUDA GPU on this machine")
    if name == "mps" and not _mps_available():
        raise UserError("--device mps requested, but the MPS backend is not available on this machine")
    return torch.device(name)


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def take_a_share_of_the_cores() -> None:
    """For a process of torchrun's that trains its runs alone (`--parallel members`): torch's CPU threads become its
    share of the cores (cores // LOCAL_WORLD_SIZE), replacing the 1 thread that torchrun gives each of several processes
    when its own environment sets no OMP_NUM_THREADS. An OMP_NUM_THREADS the user gave torchrun is kept; so is any
    where the launcher's environment cannot be read (not Linux)."""
    if os.environ.get("OMP_NUM_THREADS") != "1":
        return
    try:  # the environment torchrun was started with, before it set OMP_NUM_THREADS for its processes
        with open(f"/proc/{os.getppid()}/environ", "rb") as f:
            if b"\0OMP_NUM_THREADS=" in b"\0" + f.read():
                return
    except OSError:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


# Linux's flag (in /proc/<pid>/stat) of a process that has begun to exit. A killed process closes its sockets, failing
# its peers' collectives, while it exits: before it shows as a zombie, which on a loaded machine can take a while.
PF_EXITING = 0x4


def lost_processes(proc: str = "/proc") -> tuple[list[int], int] | None:
    """The ranks of this node's torchrun processes that have stopped, and the lowest rank still running here; None
    where none has, or where it cannot be seen (not Linux; `proc`: where Linux shows its processes). torchrun starts
    a node's processes as children of its agent, each with its RANK in its environment: a sibling that is gone, a
    zombie or exiting has stopped."""
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        here = range(rank - local_rank, rank - local_rank + int(os.environ["LOCAL_WORLD_SIZE"]))
        parent, running = os.getppid(), set()
        for stat in glob.glob(os.path.join(glob.escape(proc), "[0-9]*", "stat")):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(stat) as f:
                    state, ppid, *_, flags = f.read().rsplit(")", 1)[1].split()[:7]
                if int(ppid) == parent and state != "Z" and not int(flags) & PF_EXITING:
                    with open(os.path.join(os.path.dirname(stat), "environ"), "rb") as f:
                        found = re.search(rb"(?:^|\0)RANK=(\d+)\0", f.read())
                    if found:
                        running.add(int(found.group(1)))
    except (KeyError, ValueError, OSError):
        return None
    lost = [r for r in here if r not in running]
    return (lost, min(running & set(here))) if lost and running else None


def process_lost(doing: str, saved: str, command: str) -> ProcessLost | None:
    """The error of a torchrun job whose process on this node stopped (`lost_processes`), said by the lowest rank
    still running here; None when none did. Once it finds one, this process ignores SIGTERM."""
    found = lost_processes()
    if found is None:
        return None
    # torchrun ends the others with SIGTERM once it sees a process die: ignored from now on, so that this process
    # says why the job ended before it exits (at once) rather than die in the middle of saying it.
    with contextlib.suppress(ValueError):  # not the main thread: nothing to ignore there
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lost, lowest = found
    names = f"process {lost[0]}" if len(lost) == 1 else "processes " + ", ".join(map(str, lost))
    return ProcessLost(names, doing, saved, command, speaks=int(os.environ["RANK"]) == lowest)


def distributed_backend(name: str) -> str:
    """torchrun's process-group backend for --device `name`: nccl for processes on CUDA GPUs, else gloo."""
    return "nccl" if _on_cuda(name) else "gloo"


def cpu_model() -> str:
    """The CPU's model name as `lscpu` shows it (/proc/cpuinfo's "model name"), or the architecture where there is
    none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_model(device: torch.device) -> str:
    """What computes a run's numbers: the GPU's name, or the CPU's model name (MPS: the Mac's processor)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def machine(device: torch.device) -> dict:
    """The facts besides the seed that decide a run's trained numbers bit for bit: the device's model, on a CPU the
    instruction-set level of oneDNN's kernels (another level, or a cap, rounds differently), and torch's intra-op
    thread count (threads split the sums differently)."""
    isa = onednn_isa() if device.type == "cpu" else None
    return {DEVICE_MODEL: device_model(device), **({ONEDNN_ISA: isa} if isa else {}), THREADS: torch.get_num_threads()}


def machine_in_words(facts: dict) -> str:
    """'AMD EPYC, avx2 kernels, 2 threads' (a GPU, or a run recorded without the level: 'AMD EPYC, 2 threads')."""
    isa = f", {facts[ONEDNN_ISA]} kernels" if facts.get(ONEDNN_ISA) else ""
    return f"{facts[DEVICE_MODEL]}{isa}, {counted(facts[THREADS], 'thread')}"
