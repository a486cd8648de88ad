"""`--parallel members`: a plan's members dealt in order to torchrun's processes, which form no process group and
share only torch.distributed's key-value store (`Dealer`); engine/compare/grid.py trains what each process takes."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from core.errors import ProcessLost, UserError
from engine.devices import lost_processes, process_lost, take_a_share_of_the_cores

# Under torchrun: every run split over the processes (DistributedDataParallel), or a plan's runs dealt to them.
PARALLEL_MODES = ("data", "members")
NEVER = timedelta(days=365)  # a member may train for hours: waiting on the store never times out by itself
LAUNCHER_GONE = "the torchrun launcher is gone (its store stopped answering); continue with: {}"


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


class Dealer:
    """A plan's members dealt in order to torchrun's processes through its rendezvous store (no process group, no
    collective inside a step). Rank 0 shares the directory (`share`); each process takes the next member (`take`) until
    none is left or one failed (`fail`), counts it done with its line for rank 0's console (`finished`, `watched`),
    and rank 0 waits for every process (`wait_for_all`) before it writes the reports."""

    def __init__(self, members: int):
        store, self.rank, self.world = next(dist.rendezvous("env://", timeout=NEVER))
        self.store, self.members = dist.PrefixStore("cifar-resnets/members/", store), members
        if torch.cuda.is_available():  # a GPU of its own, or a share of one: 4 processes may train on one GPU
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        take_a_share_of_the_cores()
        # torchrun stops every process with SIGTERM when one dies; between runs (no checkpoint to write) it ends the
        # wait as Ctrl-C would, so that the process can say why instead of vanishing.
        signal.signal(signal.SIGTERM, _interrupt)

    def share(self, key: str, value: str | None = None) -> str:
        """Rank 0 sets `key` (to `value`); every other process waits for it. An error is shared as "\0message"."""
        if self.rank == 0:
            self.store.set(key, value)
        return self.store.get(key).decode()

    def take(self) -> int | None:
        """The index of this process's next member, or None when all are taken or a process failed."""
        index = self.store.add("taken", 1) - 1
        return None if index >= self.members or self.store.check(["failed"]) else index

    def finished(self, line: str) -> None:
        self.store.set(f"line/{self.store.add('finished', 1)}", line)

    def fail(self, message: str) -> None:
        self.store.set("failed", message)

    def training(self, member: str) -> None:
        """Note what this process trains now, for the line a survivor says if this process dies (`lost`)."""
        self.store.set(f"training/{self.rank}", member)

    def lost(self, continuing: str) -> ProcessLost | None:
        """The error naming the process of this node that stopped without a word, and the member it was training;
        None when none did."""
        found = lost_processes()
        if found is None or self.store.check(["all stopped"]):  # a process ending once all have stopped is done
            return None
        doing = [self.store.get(key).decode() for rank in found[0]
                 if self.store.check([key := f"training/{rank}"])]
        return process_lost(f"training {' and '.join(doing)}" if doing else "it waited for the others",
                            "the others kept what they trained (their checkpoints)", continuing)

    @contextlib.contextmanager
    def watched(self, out, continuing: str):
        """Run the block while a thread watches the store (`_watch`); a store call of the block that finds it gone is
        one line (rank 0 says it, with `continuing`, the command that goes on). The thread is joined at the end: the
        last members' lines are printed, and no thread is left in the store's C++ code as the interpreter exits
        (that aborts the process)."""
        leaving = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(out, continuing, leaving), daemon=True)
        watcher.start()
        try:
            yield
        except dist.DistNetworkError:
            raise UserError(LAUNCHER_GONE.format(continuing)) from None
        finally:
            leaving.set()
            watcher.join()

    def _watch(self, out, continuing: str, leaving: threading.Event) -> None:
        """Until every process has stopped, or this one leaves: rank 0 prints each member's line to `out` as it ends.
        It polls (a blocking read would hold the connection the training thread shares). A store that stops answering
        means its launcher was killed; its processes, in sessions of their own, end at once rather than train on."""
        done = 0
        try:
            while True:
                stopped = leaving.is_set() or self.store.check(["all stopped"])
                while self.rank == 0 and self.store.check([f"line/{done + 1}"]):
                    done += 1
                    print(f"[{done}/{self.members}] {self.store.get(f'line/{done}').decode()}", file=out, flush=True)
                if stopped:
                    return
                time.sleep(0.2)
        except dist.DistNetworkError:
            if self.rank == 0:
                print("error: " + LAUNCHER_GONE.format(continuing), file=sys.stderr, flush=True)
            os._exit(1)

    def wait_for_all(self, continuing: str) -> None:
        """Every process has stopped taking members (rank 0 then reads what they wrote). A process that dies meanwhile
        never will: the wait polls, and ends in one line (`lost`) once one has."""
        if self.store.add("stopped", 1) == self.world:
            self.store.set("all stopped", "")
        try:
            while not self.store.check(["all stopped"]):
                lost = self.lost(continuing)
                if lost is not None:
                    raise lost
                time.sleep(0.2)
        except KeyboardInterrupt:  # torchrun's SIGTERM to a process with no run to interrupt (Dealer's handler)
            raise self.lost(continuing) or KeyboardInterrupt() from None
