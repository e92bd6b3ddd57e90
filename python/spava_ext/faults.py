"""What a failed host collective reports: :class:`CollectiveError`.

The error names the collective, its limit and where the limit came from, what went wrong (the
limit passed, or a peer closed its connection: it exited or crashed) and, where the group's
store can tell, the ranks that did not reach the collective.

The missing ranks cost nothing in the steady state (no store access, no collective): only a
rank whose collective failed writes ``spava/reached/<seq>/<rank>`` into the group's store
(``seq``: the backend's sequence number of the collective, the same on every rank of the
group), then checks for up to :data:`REPORT_GRACE_S` seconds which other ranks wrote theirs.
Ranks that reached the collective fail in it too and write their key at about the same time; a
rank that exited, raised before it or is stuck elsewhere never does. A rank that reached the
collective more than the grace later than this one's failure is named although it arrived.
When the store does not answer (its host rank is gone) the ranks are reported as unknown.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Optional

import torch.distributed as dist

__all__ = ["CollectiveError", "REPORT_GRACE_S", "unreported_ranks"]

#: Seconds a rank whose collective failed waits for the other ranks' reports.
REPORT_GRACE_S = 2.0

_PEER_CLOSED = re.compile(r"closed by peer|reset by peer|broken pipe|connection refused", re.I)
_TIMED_OUT = re.compile(r"timed out|timeout", re.I)


class CollectiveError(RuntimeError):
    """A host collective failed or did not finish within its limit.

    Attributes:
        what: the collective's name (e.g. ``"passing #1"``).
        limit_s: its limit in seconds; ``limit_source``: where that limit came from.
        elapsed_s: seconds from its start to the failure.
        timed_out: the limit passed (else the backend failed first, e.g. a peer closed its
            connection: ``peer_closed``).
        missing: ranks of the group that did not report reaching it (see the module), or None
            when unknown.
    """

    def __init__(self, what: str, limit: timedelta, limit_source: str, elapsed_s: float,
                 cause: BaseException, missing: Optional[list[int]]) -> None:
        self.what, self.limit_source, self.elapsed_s = what, limit_source, elapsed_s
        self.limit_s = limit.total_seconds()
        self.missing = missing
        text = str(cause)
        self.peer_closed = bool(_PEER_CLOSED.search(text))
        self.timed_out = not self.peer_closed and (bool(_TIMED_OUT.search(text))
                                                   or elapsed_s >= self.limit_s)
        super().__init__(self._message(text))

    def _message(self, cause: str) -> str:
        limit = f"{self.limit_s:g} s ({self.limit_source})"
        if self.timed_out:
            head = f"did not finish within {limit}"
        else:
            head = f"failed after {self.elapsed_s:.1f} s, before its limit of {limit}"
            if self.peer_closed:
                head += ": a peer closed its connection (it exited or crashed)"
        if self.missing is None:
            ranks = "; the ranks that did not reach it are unknown"
        elif self.missing:
            ranks = "; rank(s) " + ", ".join(map(str, self.missing)) + " did not reach it"
        else:
            ranks = "; every rank reached it"
        return f"spava: collective '{self.what}' {head}{ranks} [backend: {cause}]"


def _group_store(group: dist.ProcessGroup) -> dist.Store:
    get = getattr(group, "get_group_store", None)
    if get is not None:
        return get()
    return dist.distributed_c10d._get_process_group_store(group)


def unreported_ranks(group: dist.ProcessGroup, seq: int,
                     grace_s: float = REPORT_GRACE_S) -> Optional[list[int]]:
    """Report in ``group``'s store that this rank reached collective ``seq`` and failed in it,
    then return the other ranks that have not reported the same within ``grace_s`` seconds;
    None when the store does not answer."""
    def key(rank: int) -> str:
        return f"spava/reached/{seq}/{rank}"

    try:
        store = _group_store(group)
        store.set(key(group.rank()), "1")
        waiting = [r for r in range(group.size()) if r != group.rank()]
        deadline = time.monotonic() + grace_s
        while True:
            waiting = [r for r in waiting if not store.check([key(r)])]
            if not waiting or time.monotonic() >= deadline:
                return waiting
            time.sleep(0.05)
    except Exception:  # the store's host is gone, or the backend has no store
        return None
