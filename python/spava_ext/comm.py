"""Collectives used by the per-rank schedule, each with one contract: start now, wait later.

A communicator (:class:`Communicator`) gives the schedule gather buffers (``buffer``) and starts
gathers (``all_gather``: every rank's ``inp`` lands in ``out[rank]``), returning a
:class:`Pending` whose ``wait()`` blocks, with a timeout, until the data is there. It also
carries what the overlap of a layer needs of it (spava_ext.overlap): the SMs its collectives'
kernels need beside an attention launch (``reserve_sms``), whether its gathers of CUDA tensors
run on the device (``device_collectives``) and its wait limit (``wait_timeout``).

* :class:`GroupComm` runs on a ``torch.distributed`` group (gloo on CPU, NCCL on GPU) and owns
  the stream its CUDA gathers are issued on; with one rank and no process group the gather is
  a local copy.
* :class:`SimulatedComm` plays one rank of a W-rank run on a single device: buffers are filled
  once with random data (what the other ranks would have sent) and gathers only place this
  rank's own part, so timings measure the rank's compute alone.
* :func:`emulate_ranks` runs all W ranks in one process with the data they would really
  exchange (exact results, for accuracy studies on one device).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from . import envs
from .agreement import check_agreement
from .faults import CollectiveError, unreported_ranks

# torch >= 2.14 renamed all_gather_into_tensor (and deprecated the old name).
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

__all__ = ["Pending", "Communicator", "GroupComm", "SimulatedComm", "emulate_ranks",
           "all_gather_async", "rank_and_world", "default_timeout", "default_reserve_sms",
           "nccl_options", "forget_groups", "CollectiveError"]


def default_timeout() -> timedelta:
    """Per-collective wait limit: ``SPAVA_COLLECTIVE_TIMEOUT_S`` seconds (default 600)."""
    return timedelta(seconds=envs.collective_timeout_s())


def default_reserve_sms() -> int:
    """SMs a rank's attention launch leaves to the collectives' kernels, and the CTAs that
    :func:`nccl_options` allows an NCCL kernel: ``SPAVA_RESERVE_SMS`` (default 4; 0 takes every
    SM). The gathers then run beside the persistent attention kernel instead of waiting for SMs
    (measured on 4 x H100, BENCHMARKS.md "Multi-GPU": layers queued back to back at W = 4 took
    11.1-11.5 ms against 21.9-24.9 ms with every SM taken, compute alone 10.4-11.1 ms)."""
    return envs.reserve_sms()


def rank_and_world(group: Optional[dist.ProcessGroup]) -> tuple[int, int]:
    """(rank, world size) in ``group``; (0, 1) when torch.distributed is not initialised."""
    if group is None and not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class Pending:
    """A started collective. ``wait()`` raises :class:`~spava_ext.faults.CollectiveError` naming
    ``what``, the limit (``timeout``, from ``limit_source``) and, where known, the ranks that did
    not reach it, so a missing or failing rank surfaces as an error instead of a hang.

    CPU (gloo): the collective must finish within ``timeout`` of its start; the backend is given
    the same limit for it (see :func:`all_gather_async`), so a failed collective never stays in
    flight past its deadline and teardown (``destroy_process_group``, freeing the group) does
    not wait for a stuck peer. CUDA (NCCL): ``wait`` only makes the current (compute) stream
    wait for the gather, with no host synchronisation; a rank that never joins is caught by the
    process group's own timeout (its watchdog aborts the job on every rank), set through
    ``torch.distributed.init_process_group(timeout=...)``."""

    def __init__(self, work: Optional[dist.Work], what: str, timeout: timedelta,
                 stream: Optional["torch.cuda.Stream"] = None, *,
                 group: Optional[dist.ProcessGroup] = None,
                 limit_source: str = "SPAVA_COLLECTIVE_TIMEOUT_S") -> None:
        self._work, self._what, self._timeout = work, what, timeout
        self._stream = stream  # the communication stream of a CUDA collective
        self._on_device = stream is not None
        self._signalled: Optional["torch.cuda.Event"] = None  # after signal()'s flag write
        self._group, self._limit_source = group, limit_source
        self._seq = _sequence_number(work, group) if group is not None else None
        self._started = time.monotonic()

    @property
    def on_device(self) -> bool:
        """True while the data may still be in flight on a CUDA communication stream."""
        return self._on_device and self._work is not None

    def signal(self, flag: torch.Tensor) -> None:
        """Set ``flag`` (a one-element int32 tensor on the device) to 1 once the data has landed,
        without blocking the current stream: on the communication stream right after the
        collective, or now, on the current stream, when nothing is in flight. Only for
        collectives that are done or on a device (a CPU collective must be waited for first)."""
        if not self.on_device:
            if self._work is not None:
                raise RuntimeError(f"spava: collective '{self._what}' runs on the host; wait() "
                                   "for it before signalling")
            flag.fill_(1)
            return
        from . import ops  # the extension; comm itself needs only torch
        with torch.cuda.stream(self._stream):
            self._work.wait()  # the communication stream waits for the collective
            ops.set_flag(flag)  # a stream memory write: needs no SM
            self._signalled = torch.cuda.Event()
            self._signalled.record()
        flag.record_stream(self._stream)

    def wait(self) -> None:
        if self._work is None:
            return
        work, self._work = self._work, None
        if self._on_device:
            work.wait()  # stream-ordered: the current stream waits for the NCCL stream
            if self._signalled is not None:  # and for the flag written after it
                torch.cuda.current_stream().wait_event(self._signalled)
            return
        try:
            ok = work.wait(self._remaining())
        except Exception as e:  # gloo raises on timeout or peer failure
            raise self._error(work, e) from e
        if ok is False:
            raise self._error(work, TimeoutError("the wait timed out"))

    def settle(self) -> None:
        """Abandon a host collective whose layer failed elsewhere: wait until it ends or its
        deadline passes, dropping its error, so that nothing the layer started is left in
        flight when the error propagates. Nothing to do on a device (NCCL's watchdog owns
        failed collectives there)."""
        if self._work is None or self._on_device:
            return
        work, self._work = self._work, None
        try:
            work.wait(self._remaining())
        except Exception:  # the layer's first error is the one that propagates
            pass

    def _remaining(self) -> timedelta:
        left = self._timeout.total_seconds() - (time.monotonic() - self._started)
        return timedelta(seconds=max(left, 1e-3))  # 0 would mean "no limit" to the backend

    def _error(self, work: dist.Work, cause: BaseException) -> CollectiveError:
        elapsed = time.monotonic() - self._started
        missing = None
        if self._group is not None and self._seq is not None:
            missing = unreported_ranks(self._group, self._seq)
        return CollectiveError(self._what, self._timeout, self._limit_source, elapsed, cause,
                               missing)


def _sequence_number(work: Optional[dist.Work], group: dist.ProcessGroup) -> Optional[int]:
    """The number of the collective just issued on ``group``, the same on every rank: the
    work's own where torch has it (``Work._get_sequence_number``), else the group's count
    right after the issue (torch 2.11); None when the backend counts none."""
    try:
        if work is not None and hasattr(work, "_get_sequence_number"):
            return int(work._get_sequence_number())
        return int(group._get_sequence_number_for_group())
    except (AttributeError, RuntimeError):
        return None


def all_gather_async(
    out: torch.Tensor,
    inp: torch.Tensor,
    group: Optional[dist.ProcessGroup],
    what: str,
    timeout: Optional[timedelta] = None,
    stream: Optional["torch.cuda.Stream"] = None,
    after: Optional[torch.Tensor] = None,
) -> Pending:
    """Gather ``inp`` of every rank into ``out [W, *inp.shape]`` (contiguous) without blocking.

    With ``stream`` (CUDA tensors), the collective is issued on that stream after it waits for
    the current one (event in) and, with ``after``, for that device flag to be set (work queued
    later on the current stream, e.g. the kernel that sets the flag, is not waited for);
    ``Pending.wait`` is the event out. Both tensors are recorded on the stream so the caching
    allocator cannot reuse them before the gather ends.

    Without ``stream`` (host collectives), the backend itself is given ``timeout`` for the
    gather (its options' ``timeout``), so a gather that fails ends in the backend by then too
    (see :class:`Pending`). ``timeout`` None: :func:`default_timeout`."""
    source = "SPAVA_COLLECTIVE_TIMEOUT_S" if timeout is None else "the timeout argument"
    timeout = timeout or default_timeout()
    if group is None and not (dist.is_available() and dist.is_initialized()):
        out[0].copy_(inp)  # a single process without a process group: a local copy
        return Pending(None, what, timeout)
    # The concatenated form [W * n, ...] is the one every backend accepts.
    flat = out.view((-1,) + tuple(inp.shape[1:])) if inp.dim() > 0 else out.view(-1)
    inp = inp.contiguous()
    if stream is None:
        group = group or dist.distributed_c10d._get_default_group()
        work = _host_all_gather(flat, inp, group, timeout)
        return Pending(work, what, timeout, group=group, limit_source=source)
    stream.wait_stream(torch.cuda.current_stream(inp.device))
    with torch.cuda.stream(stream):
        if after is not None:
            from . import ops  # the extension; comm itself needs only torch
            ops.wait_flag(after)
            after.record_stream(stream)
        work = _all_gather_single(flat, inp, group=group, async_op=True)
    inp.record_stream(stream)
    out.record_stream(stream)
    return Pending(work, what, timeout, stream=stream)


def _host_all_gather(flat: torch.Tensor, inp: torch.Tensor, group: dist.ProcessGroup,
                     timeout: timedelta) -> dist.Work:
    """Start gathering ``inp`` into ``flat`` on ``group`` with the backend's own limit
    ``timeout`` (torch.distributed's functions take no per-call timeout: the group's method
    does, through its options)."""
    opts = dist.distributed_c10d.AllgatherOptions()
    opts.timeout = timeout
    if hasattr(opts, "asyncOp"):
        opts.asyncOp = True
    start = getattr(group, "all_gather_single", None) or group._allgather_base  # torch < 2.14
    return start(flat, inp, opts)


def nccl_options(max_ctas: Optional[int] = None) -> Optional[object]:
    """Options for ``init_process_group("nccl", pg_options=...)`` (or ``new_group``): NCCL's own
    streams at high priority, so the gathers' kernels get SMs ahead of the persistent attention
    kernel's CTAs, and at most ``max_ctas`` CTAs per NCCL kernel (default: the SMs a
    communicator leaves free, :func:`default_reserve_sms`; 0: NCCL's choice), so that a gather
    fits in the SMs the attention launch leaves free. None when this torch build lacks them."""
    if max_ctas is None:
        max_ctas = default_reserve_sms()
    options_cls = getattr(dist, "ProcessGroupNCCL", None)
    options_cls = getattr(options_cls, "Options", None) if options_cls is not None else None
    if options_cls is None:
        return None
    options = options_cls()
    options.is_high_priority_stream = True
    if max_ctas > 0:
        options.config.max_ctas = int(max_ctas)
    return options


class Communicator:
    """The communicator interface of the per-rank schedule, with the defaults of one that runs
    no device collectives and leaves no SMs free. ``rank`` / ``world``: this rank and the ranks;
    ``timeout``: the wait limit (None: :func:`default_timeout`)."""

    rank: int = 0
    world: int = 1
    #: SMs a rank's attention launch leaves to this communicator's kernels (W > 1)
    reserve_sms: int = 0
    #: whether gathers of CUDA tensors run on the device, asynchronously (NCCL)
    device_collectives: bool = False
    timeout: Optional[timedelta] = None

    @property
    def wait_timeout(self) -> timedelta:
        return self.timeout or default_timeout()

    def buffer(self, shape: tuple, dtype: torch.dtype, device: torch.device,
               what: str) -> torch.Tensor:
        """A gather's output buffer ``[W, *part]``."""
        return torch.empty(shape, dtype=dtype, device=device)

    def all_gather(self, out: torch.Tensor, inp: torch.Tensor, what: str,
                   after: Optional[torch.Tensor] = None) -> Pending:
        """Start gathering every rank's ``inp`` into ``out`` (``out[r]``: rank r's);
        ``after`` (device collectives only): a device flag the gather also waits for."""
        raise NotImplementedError

    def ensure_agreement(self, config: tuple, device: torch.device, what: str) -> None:
        """Raise :class:`~spava_ext.agreement.RankMismatchError` on every rank unless all ranks
        call with the same ``config`` (:func:`~spava_ext.agreement.layer_config`). Ranks that
        are simulated or emulated in one process cannot disagree: nothing to check."""


class GroupComm(Communicator):
    """Gathers over a torch.distributed group (or locally when there is a single rank); CUDA
    gathers are issued on this communicator's stream of their device (:meth:`stream`)."""

    def __init__(self, group: Optional[dist.ProcessGroup] = None,
                 timeout: Optional[timedelta] = None, reserve_sms: Optional[int] = None) -> None:
        self.group, self.timeout = group, timeout
        self.rank, self.world = rank_and_world(group)
        self.reserve_sms = default_reserve_sms() if reserve_sms is None else int(reserve_sms)
        self._streams: dict[int, torch.cuda.Stream] = {}
        self._agreed: set = set()  # configurations every rank has been seen to share

    @classmethod
    def of(cls, group: Optional[dist.ProcessGroup] = None,
           timeout: Optional[timedelta] = None) -> "GroupComm":
        """The communicator of ``group`` (default: the global group) with ``timeout``: one per
        process group and timeout, so that its communication streams and the configurations
        its ranks agreed on last across layers and calls. The group object is held, so a group
        created after this one was destroyed can never take its place."""
        if group is None and dist.is_available() and dist.is_initialized():
            group = dist.distributed_c10d._get_default_group()
        key = (id(group), timeout)
        comm = _GROUP_COMMS.get(key)
        if comm is None or comm.group is not group:
            comm = _GROUP_COMMS[key] = cls(group, timeout)
        return comm

    def ensure_agreement(self, config: tuple, device: torch.device, what: str) -> None:
        if self.world <= 1 or config in self._agreed:
            return
        name = f"{what} rank agreement"
        check_agreement(config, self.world, device, what,
                        lambda out, inp: self.all_gather(out, inp, name).wait())
        self._agreed.add(config)

    @property
    def device_collectives(self) -> bool:
        return self.world > 1 or (dist.is_available() and dist.is_initialized())

    def stream(self, device: torch.device) -> "torch.cuda.Stream":
        """The communication stream of ``device``, of high priority: its small kernels (the
        ready flags of the attention launch) are scheduled ahead of the attention kernel's CTAs
        as SMs free up. One per communicator and device."""
        index = torch.device(device).index
        if index not in self._streams:
            self._streams[index] = torch.cuda.Stream(device=device, priority=-1)
        return self._streams[index]

    def all_gather(self, out: torch.Tensor, inp: torch.Tensor, what: str,
                   after: Optional[torch.Tensor] = None) -> Pending:
        """Start the gather; ``after`` (CUDA): a device flag the gather also waits for, so it can
        be issued before the kernel that produces ``inp`` (see :func:`all_gather_async`)."""
        stream = self.stream(inp.device) if inp.is_cuda else None
        return all_gather_async(out, inp, self.group, what, self.timeout, stream,
                                after if inp.is_cuda else None)


_GROUP_COMMS: dict[tuple, GroupComm] = {}


def forget_groups() -> None:
    """Drop the communicators that :meth:`GroupComm.of` keeps, and with them their hold on the
    process groups: after ``destroy_process_group()``, a destroyed group is then freed (its
    backend's threads joined) now instead of at interpreter exit."""
    _GROUP_COMMS.clear()


class SimulatedComm(Communicator):
    """Rank ``rank`` of a ``world``-rank run, simulated on one device (no collectives)."""

    def __init__(self, rank: int, world: int, seed: int = 0,
                 reserve_sms: Optional[int] = None) -> None:
        self.rank, self.world, self.seed = rank, world, seed
        self.reserve_sms = default_reserve_sms() if reserve_sms is None else int(reserve_sms)
        self._cache: dict = {}

    def buffer(self, shape: tuple, dtype: torch.dtype, device: torch.device,
               what: str) -> torch.Tensor:
        key = (tuple(shape), dtype, str(device), what)
        if key not in self._cache:  # random "received" data, made once per buffer kind
            g = torch.Generator().manual_seed(self.seed + len(self._cache))
            self._cache[key] = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
        return self._cache[key]

    def all_gather(self, out, inp, what, after=None) -> Pending:
        out[self.rank].copy_(inp)
        return Pending(None, what, self.wait_timeout)


class _RecordComm(Communicator):
    """Pass 1 of :func:`emulate_ranks`: records what one rank sends to each gather."""

    def __init__(self, rank: int, world: int, sent: dict) -> None:
        self.rank, self.world, self._sent = rank, world, sent

    def buffer(self, shape, dtype, device, what):
        return torch.zeros(shape, dtype=dtype, device=device)

    def all_gather(self, out, inp, what, after=None):
        self._sent[(what, self.rank)] = inp.clone()
        return Pending(None, what, self.wait_timeout)


class _ReplayComm(Communicator):
    """Pass 2 of :func:`emulate_ranks`: gathers return what every rank sent in pass 1."""

    def __init__(self, rank: int, world: int, sent: dict) -> None:
        self.rank, self.world, self._sent = rank, world, sent

    def buffer(self, shape, dtype, device, what):
        return torch.stack([self._sent[(what, r)] for r in range(self.world)])

    def all_gather(self, out, inp, what, after=None):
        return Pending(None, what, self.wait_timeout)


def emulate_ranks(run_rank, world: int) -> list:
    """Run every rank of a W-rank job in this process, with the data the ranks would really
    exchange: ``run_rank(rank, comm)`` is called twice per rank, first to record what each rank
    sends (everything a rank sends is computed before it waits for anything), then with gathers
    that return the recorded data. Returns the second pass's results, in rank order."""
    sent: dict = {}
    for r in range(world):
        run_rank(r, _RecordComm(r, world, sent))
    return [run_rank(r, _ReplayComm(r, world, sent)) for r in range(world)]
