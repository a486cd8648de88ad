"""fp16 autocast's loss scaling, as PyTorch's AMP recipe does it (`torch.amp.GradScaler`), and what a run records of
it: the steps skipped in each epoch, the scale, and a stop when the scale collapses.

GradScaler multiplies the loss by a scale before the backward pass, so that small gradients do not underflow fp16,
and divides the gradients by it again before the optimizer step. A step whose gradients hold an inf or a NaN is
skipped and the scale halved; after 2,000 steps without one the scale doubles. A skipped step is routine, not a
NaN stop: the loss itself, computed in fp32, stays finite. A scale that stays tiny for a whole epoch means nearly
every step overflows: fp16 cannot train this net, and the run stops.
"""
from __future__ import annotations

import torch
from ignite.engine import Engine, Events

from core.errors import UserError
from core.history_file import LOSS_SCALE, SKIPPED_STEPS

INITIAL_SCALE = 2.0**16  # GradScaler's default
COLLAPSED_BELOW_EXPONENT = -10  # a scale below 2**this after every step of an epoch: the run stops


class LossScaleCollapsed(UserError):
    """fp16 loss scaling collapsed: nearly every step of an epoch overflowed and was skipped."""


class LossScaling:
    """A GradScaler and this epoch's count of skipped steps, both kept on the device (reading either would make the
    host wait for the GPU), and a stateful object for the checkpoint's `to_save`, so that a resume is exact."""

    def __init__(self, device: torch.device, initial_scale: float | None = None):
        self.scaler = torch.amp.GradScaler(device.type, init_scale=initial_scale or INITIAL_SCALE)
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)  # steps skipped so far this epoch
        self.highest = torch.zeros((), dtype=torch.float32, device=device)  # the highest scale after a step this epoch

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward of the scaled loss, then the optimizer step unless a gradient overflowed, then the new scale."""
        self.scaler.scale(loss).backward()
        # GradScaler keeps its scale on the device (`_scale`); its public get_scale() would wait for the device.
        used = self.scaler._scale.clone()
        self.scaler.step(optimizer)
        self.scaler.update()
        self.skipped += self.scaler._scale < used  # only a skipped step lowers the scale
        torch.maximum(self.highest, self.scaler._scale, out=self.highest)

    def attach(self, trainer: Engine) -> None:
        """At each epoch's end, before anything is recorded or saved: stop if the scale collapsed, else put the
        epoch's skipped steps and the scale into `trainer.state.metrics` and start counting afresh. (Counting is
        reset at the end, not the start, of an epoch, so that a resume in mid-epoch keeps the count it restored.)"""
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._end_epoch)

    def _end_epoch(self, trainer: Engine) -> None:
        if float(self.highest) < 2.0**COLLAPSED_BELOW_EXPONENT:
            raise LossScaleCollapsed(
                f"training stopped at epoch {trainer.state.epoch}: fp16 loss scaling collapsed (the scale stayed below "
                f"2^{COLLAPSED_BELOW_EXPONENT} after every step of the epoch, so nearly every step overflowed fp16 and "
                "was skipped); train with --amp bf16 or --amp off instead")
        trainer.state.metrics[SKIPPED_STEPS] = int(self.skipped)
        trainer.state.metrics[LOSS_SCALE] = self.scaler.get_scale()
        self.skipped.zero_()
        self.highest.zero_()

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict(), "skipped": int(self.skipped), "highest": float(self.highest)}

    def load_state_dict(self, state: dict) -> None:
        self.scaler.load_state_dict(state["scaler"])
        self.skipped.fill_(state["skipped"])
        self.highest.fill_(state["highest"])
