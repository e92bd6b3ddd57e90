"""Collectives used by the per-rank schedule, each with one contract: start now, wait later.

``all_gather_async(out, inp, group)`` starts a gather of every rank's ``inp`` into
``out[rank]`` and returns a :class:`Pending` handle; ``Pending.wait()`` blocks (with a timeout)
until the data is in ``out``. With one rank (or no process group) the gather is a local copy.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

# torch >= 2.14 renamed all_gather_into_tensor (and deprecated the old name).
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

__all__ = ["Pending", "all_gather_async", "rank_and_world", "default_timeout"]


def default_timeout() -> timedelta:
    """Per-collective wait limit: ``SPAVA_COLLECTIVE_TIMEOUT_S`` seconds (default 600)."""
    return timedelta(seconds=float(os.environ.get("SPAVA_COLLECTIVE_TIMEOUT_S", "600")))


def rank_and_world(group: Optional[dist.ProcessGroup]) -> tuple[int, int]:
    """(rank, world size) in ``group``; (0, 1) when torch.distributed is not initialised."""
    if group is None and not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class Pending:
    """A started collective. ``wait()`` raises ``RuntimeError`` naming ``what`` on failure or
    timeout, so a missing or failing rank surfaces as an error instead of a hang."""

    def __init__(self, work: Optional[dist.Work], what: str, timeout: timedelta) -> None:
        self._work, self._what, self._timeout = work, what, timeout

    def wait(self) -> None:
        if self._work is None:
            return
        work, self._work = self._work, None
        try:
            ok = work.wait(self._timeout)
        except Exception as e:  # gloo/NCCL raise on timeout or peer failure
            raise RuntimeError(f"spava: collective '{self._what}' failed: {e}") from e
        if ok is False:
            raise RuntimeError(
                f"spava: collective '{self._what}' did not finish within {self._timeout}"
            )


def all_gather_async(
    out: torch.Tensor,
    inp: torch.Tensor,
    group: Optional[dist.ProcessGroup],
    what: str,
    timeout: Optional[timedelta] = None,
) -> Pending:
    """Gather ``inp`` of every rank into ``out [W, *inp.shape]`` (contiguous) without blocking."""
    timeout = timeout or default_timeout()
    _, world = rank_and_world(group)
    if world == 1:
        out[0].copy_(inp)
        return Pending(None, what, timeout)
    # The concatenated form [W * n, ...] is the one every backend accepts.
    flat = out.view((-1,) + tuple(inp.shape[1:])) if inp.dim() > 0 else out.view(-1)
    work = _all_gather_single(flat, inp.contiguous(), group=group, async_op=True)
    return Pending(work, what, timeout)
