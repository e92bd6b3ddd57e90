"""Faults of a peer during a layer, over gloo ranks: the peer raises, exits, is stuck, or is slow
within the limit. A survivor must raise a CollectiveError that names the collective, the limit
and the missing rank, tell a timeout from a peer's exit, and be done (raise, destroy the group,
free it) within the limit plus 10 s; a slow peer within the limit changes nothing."""

import gc
import os
import tempfile
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import spava_ext
from spava_ext import SpavaLayout, comm, reference
from spava_ext.faults import CollectiveError
from utils import _free_port, assert_attn_close, grid_inputs

LIMIT_S = 3  # SPAVA_COLLECTIVE_TIMEOUT_S in the ranks
CLEANUP_S = 10  # what teardown may add to the limit
L, A, NQ, P = 60, 4, 2, 3


def _inputs():
    return grid_inputs(1, L, 2, 1, 8, seed=7)


def _bounded_worker(rank, world, port, fn, args, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      SPAVA_COLLECTIVE_TIMEOUT_S=str(LIMIT_S))
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        result = {"ok": fn(rank, world, *args)}
    except BaseException:
        result = {"error": traceback.format_exc()}
    if dist.is_initialized():
        dist.destroy_process_group()
    torch.save(result, os.path.join(result_dir, f"rank{rank}.pt"))
    os._exit(0)  # see utils._worker: no interpreter finalisation with gloo threads about


def run_ranks_bounded(fn, world, *args, wait_for, limit_s=120.0):
    """Run ``fn(rank, world, *args)`` in ``world`` gloo processes that may hang or die; wait
    until the ranks ``wait_for`` have ended (or ``limit_s`` passed), then kill the others.
    Returns per rank ``(result, exitcode, ended)``: the ``{"ok": ...}`` / ``{"error": ...}`` it
    saved (None if none), its exit code (None: killed) and when it ended (``time.time()``)."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(_bounded_worker, args=(world, _free_port(), fn, args, tmp),
                                 nprocs=world, join=False, start_method="spawn")
        ended = [None] * world
        deadline = time.time() + limit_s
        while time.time() < deadline and any(ended[r] is None for r in wait_for):
            for r, proc in enumerate(ctx.processes):
                if ended[r] is None and not proc.is_alive():
                    ended[r] = time.time()
            time.sleep(0.05)
        codes = []
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
                proc.join()
                codes.append(None)
            else:
                codes.append(proc.exitcode)
        results = []
        for r in range(world):
            path = os.path.join(tmp, f"rank{r}.pt")
            results.append(torch.load(path, weights_only=False) if os.path.exists(path) else None)
    return list(zip(results, codes, ended))


def _fault_main(rank, world, fault, faulty):
    """Both layers of two calls; ``faulty`` misbehaves at the second. A survivor that raises
    destroys and frees the group itself and times it."""
    layout = SpavaLayout(L, A, NQ, world, P)
    shard = [layout.shard(t, rank) for t in _inputs()]
    spava_ext.spava_attention(*shard, layout)  # the rank agreement is done with
    if rank == faulty:
        if fault == "raises":
            raise ValueError("the peer fails before the layer")
        if fault == "exits":
            os._exit(3)
        time.sleep(3600 if fault == "stuck" else LIMIT_S / 2)
    start = time.time()
    try:
        return {"out": spava_ext.spava_attention(*shard, layout)}
    except CollectiveError as e:
        raised = time.time() - start
        dist.destroy_process_group()
        comm.forget_groups()
        gc.collect()  # frees the group: joins its gloo threads
        return {"error": str(e), "timed_out": e.timed_out, "peer_closed": e.peer_closed,
                "missing": e.missing, "limit_s": e.limit_s, "raised_s": raised,
                "freed_s": time.time() - start, "start": start}


def _check_survivor(name, res, code, ended, faulty, timed_out):
    result = res["ok"] if res is not None and "ok" in res else res
    assert code == 0 and "error" in result, (name, result, code)
    msg = result["error"]
    assert "collective 'passing #1'" in msg, msg
    assert f"{LIMIT_S} s (SPAVA_COLLECTIVE_TIMEOUT_S)" in msg, msg
    assert result["missing"] == [faulty] and f"rank(s) {faulty} did not reach it" in msg, msg
    assert result["timed_out"] is timed_out and result["peer_closed"] is not timed_out, msg
    if timed_out:  # waited for the limit, not less
        assert f"did not finish within {LIMIT_S} s" in msg, msg
        assert result["raised_s"] >= LIMIT_S * 0.95, result
    else:  # a peer's exit is seen before the limit
        assert "a peer closed its connection" in msg, msg
        assert result["raised_s"] < LIMIT_S, result
    assert result["freed_s"] <= LIMIT_S + CLEANUP_S, result
    assert ended - result["start"] <= LIMIT_S + CLEANUP_S, (name, ended - result["start"])


@pytest.mark.parametrize("fault", ["raises", "exits"])
def test_peer_that_fails_is_reported_before_the_limit(fault):
    res, code, ended = run_ranks_bounded(_fault_main, 2, fault, 1, wait_for=[0, 1])[0]
    _check_survivor(fault, res, code, ended, faulty=1, timed_out=False)


def test_stuck_peer_times_out_and_teardown_does_not_wait_for_it():
    """Rank 2 of 3 is alive but never joins: ranks 0 and 1 time out, both name rank 2, and
    destroying and freeing the group does not wait for the stuck rank."""
    runs = run_ranks_bounded(_fault_main, 3, "stuck", 2, wait_for=[0, 1])
    for r in (0, 1):
        _check_survivor(f"rank {r}", *runs[r], faulty=2, timed_out=True)
    assert runs[2][1] is None  # still stuck when the survivors were done: killed


def test_slow_peer_within_the_limit_changes_nothing():
    runs = run_ranks_bounded(_fault_main, 2, "slow", 1, wait_for=[0, 1])
    layout = SpavaLayout(L, A, NQ, 2, P)
    outs = []
    for r, (res, code, _) in enumerate(runs):
        assert code == 0 and res is not None and "ok" in res, (r, res, code)
        outs.append(res["ok"]["out"])
    q, k, v = _inputs()
    assert_attn_close("slow peer", layout.unshard(outs), reference.spava_attention(q, k, v,
                                                                                   layout))
