"""Small helpers shared by test modules."""
import torch

from engine.devices import machine, machine_in_words


def device_line(precision: str, device: str = "cpu") -> str:
    """The first line of a run on `device` in this process's thread count (a subprocess of a test inherits it through
    OMP_NUM_THREADS), e.g. device_line("fp32 (--no-amp)")."""
    return f"Device: {device} ({machine_in_words(machine(torch.device(device)))}), {precision}"
