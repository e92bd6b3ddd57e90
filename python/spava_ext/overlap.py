"""The overlap of one rank's layer: its gathers run while its one attention launch computes.

A :class:`LayerOverlap` owns everything that overlap needs, for one layer of one rank:

* the gathers, started on the communicator (``GroupComm`` issues CUDA gathers on its own
  communication stream), and one **ready flag** per gather (int32, on the layer's device) that
  the communication stream sets once the data has landed (``set_flag``: a stream memory
  write, no SM); a problem of the launch that reads gather ``i``'s buffer waits for flag ``i``;
* the **SM budget** of the attention launch: with W > 1 it leaves ``comm.reserve_sms`` SMs to
  the gathers' NCCL kernels (``comm.nccl_options`` caps them at as many CTAs), so they run
  beside it; the poll limit of a late flag follows from it (``envs.ready_spin_us``);
* in flight (CUDA, device collectives, the sm_90a kernels), the **scheduler workspace** and
  the **done flags** of the launch. A CTA that finds a flag still unset after the poll limit
  gives its unit back, the launch then winds down (no new units), and a **finishing launch**
  queued after the gathers computes what was given back (usually nothing), so the kernel never
  holds SMs the collectives need for long. The gather of one problem's output starts on the
  device the moment that problem's done flag rises, while the launch goes on.

Elsewhere (CPU, simulated or emulated ranks, GPUs on the ATen path) the same calls run in plain
stream or host order: host gathers are waited for before the launch, and the output's gather
starts after it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from . import envs, ops
from .comm import Communicator, Pending

__all__ = ["LayerOverlap", "sm_budget", "MAX_GATHERS"]

#: Gathers with ready flags in one layer: the anchor (a sharded anchor) and two passing blocks.
MAX_GATHERS = 3


def sm_budget(comm: Communicator, device: torch.device) -> int:
    """CTAs an attention launch of ``comm``'s rank may use on ``device``: every SM (0) with one
    rank, on the CPU, or when the communicator reserves none; else all SMs but
    ``comm.reserve_sms``."""
    if device.type != "cuda" or comm.world <= 1 or comm.reserve_sms <= 0:
        return 0
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, sms - comm.reserve_sms)


class LayerOverlap:
    """The overlap of one layer of ``comm``'s rank on ``device``: call :meth:`start_gathers`
    (optional, once or more), then :meth:`launch` once, inside ``with overlap:``. When the block raises
    (a collective failed or timed out, or anything else), every gather the layer started is
    abandoned first (:meth:`Pending.settle`): the error propagates with nothing of the layer
    left in flight on the host, so teardown does not wait for it.

    Attributes:
        in_flight: gathers run on the device while the launch computes (see the module).
        sm_budget: CTAs the launch may use (0: one per SM).
        spin_us: microseconds a CTA polls a late ready flag before it gives its unit back.
        timeout_s: seconds after which a CTA still waiting for a flag traps.
        ready: the ready flags, :data:`MAX_GATHERS` of them, flag ``i`` for the ``i``-th
            started gather (None before :meth:`start_gathers`).
    """

    def __init__(self, comm: Communicator, device: torch.device) -> None:
        self.comm = comm
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        # On the ATen path of other GPUs a stream waiting on the device for a done flag could
        # wait for a kernel loaded lazily behind it (attn_fwd.h, prepare_attn_fwd): not in flight.
        self.in_flight = cuda and comm.device_collectives and ops.uses_sm90(self.device)
        self.sm_budget = sm_budget(comm, self.device)
        self.spin_us = envs.ready_spin_us(leaves_sms=self.sm_budget > 0)
        self.timeout_s = comm.wait_timeout.total_seconds()
        self.ready: Optional[torch.Tensor] = None
        self._gathers: list[Pending] = []  # those of start_gathers (ready flags)
        self._started: list[Pending] = []  # every gather started, theirs and the launch's

    def __enter__(self) -> "LayerOverlap":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for g in self._started:  # a gather already waited for returns at once
                g.settle()

    def start_gathers(self, parts: Sequence[torch.Tensor],
                      names: Sequence[str]) -> list[torch.Tensor]:
        """Start one gather per part; returns their buffers (``buffer[j]``: rank j's part, of
        ``[W, *part.shape]``). Gathers are numbered in the order they start, over every call
        (at most :data:`MAX_GATHERS`); a problem that reads gather ``i``'s buffer waits for
        ready flag ``i``, which is raised after every earlier flag."""
        if len(self._gathers) + len(parts) > MAX_GATHERS:
            raise RuntimeError(f"LayerOverlap.start_gathers: a layer starts at most "
                               f"{MAX_GATHERS} gathers with ready flags, got "
                               f"{len(self._gathers) + len(parts)}")
        if self.ready is None:
            self._make_flags()
        buffers = []
        for part, what in zip(parts, names):
            buf, pending = self._gather(part, what)
            self._gathers.append(pending)
            buffers.append(buf)
        return buffers

    def launch(self, problems: Sequence[ops.AttnProblem] | ops.SpanGroup,
               softmax_scale: Optional[float], share: torch.Tensor, written_by: int,
               what: str) -> tuple[torch.Tensor, Pending]:
        """One ``attn_fwd_group`` launch of ``problems`` (their ``wait_for``: ready flags) and
        the gather of ``share``, a buffer that ``problems[written_by]`` writes: issued before the
        launch and started on the device by that problem's done flag when in flight, else issued
        after the launch. Every gather of :meth:`start_gathers` has been waited for on return
        (in stream order on CUDA). Returns the gathered buffer ``[W, *share.shape]`` and its
        pending gather."""
        grouped = isinstance(problems, ops.SpanGroup)
        if not self._gathers:  # nothing to wait for
            problems = (problems._replace(wait_for=[]) if grouped
                        else [pr._replace(wait_for=None) for pr in problems])
        self._raise_ready_flags()
        sched = done = shared = None
        if self.in_flight:
            if self.ready is None:
                self._make_flags()
            n = len(problems.q) if grouped else len(problems)
            work = self._flags[MAX_GATHERS:]  # zeroed with the ready flags
            sched, done = work[: ops.SCHED_INTS], work[ops.SCHED_INTS : ops.SCHED_INTS + 2 * n]
            shared = self._gather(share, what, after=done[2 * written_by + 1 : 2 * written_by + 2])
        args = {"ready": self.ready, "sched": sched, "done": done, "sm_budget": self.sm_budget,
                "spin_us": self.spin_us, "timeout_s": self.timeout_s}
        ops.attn_fwd_group(problems, softmax_scale, **args)
        if self.in_flight:  # the units given back because their keys were late
            self._wait_gathers()
            ops.attn_fwd_group(problems, softmax_scale, finish=True, **args)
        if shared is None:
            shared = self._gather(share, what)
        self._wait_gathers()
        return shared

    def _make_flags(self) -> None:
        """The ready flags and, in flight, the launch's sched workspace and done flags: one
        int32 buffer, zeroed before the gathers are issued (the communication stream that sets
        the flags is ordered after this)."""
        n = MAX_GATHERS + (ops.SCHED_INTS + 2 * ops.MAX_PROBLEMS if self.in_flight else 0)
        self._flags = torch.zeros(n, dtype=torch.int32, device=self.device)
        self.ready = self._flags[:MAX_GATHERS]

    def _raise_ready_flags(self) -> None:
        """Flag i := 1 once gather i has landed: in stream order on the communication stream for
        device collectives, now for gathers that are done or complete on the host."""
        if self.device.type != "cuda":  # host collectives complete on the host
            self._wait_gathers()
        for i, g in enumerate(self._gathers):  # flag i: gather i (in stream order, and those
            g.signal(self.ready[i : i + 1])     # before it)

    def _gather(self, part: torch.Tensor, what: str,
                after: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Pending]:
        """Start gathering ``part`` into a new buffer ``[W, *part.shape]``; ``after``: a device
        flag the gather also waits for (device collectives)."""
        buf = self.comm.buffer((self.comm.world,) + tuple(part.shape), part.dtype, part.device,
                               what)
        pending = self.comm.all_gather(buf, part, what, after=after)
        self._started.append(pending)
        return buf, pending

    def _wait_gathers(self) -> None:
        for g in self._gathers:  # every started gather is awaited (a second wait is free)
            g.wait()
