"""Scale curve (routine ``scale``): one attention layer and the end-to-end prefill of a video
LMM's language model (random bf16 weights, as routine ``e2e``) at 128K, 256K, 512K and 1M context
tokens, W = 8 ranks with the paper's a and p (``SpavaLayout.auto``), on one GPU:

* Spava per rank (simulated, :class:`SimulatedComm`): every rank holds the same number of tokens
  and, by the zigzag, the same passing-block work (host 1 of rank r reads r blocks, host 2 reads
  2W - 1 - r), so the ranks differ only in how that work splits between the two hosts. The layer
  is timed on ranks 0 and W - 1 by default, the two extremes of the split (the simulated W = 8
  layer in BENCHMARKS.md spreads 3.5 % over all ranks, max(0, 7) within 1.2 % of the slowest);
  the prefill on the one whose layer was slower (every other part of a rank's prefill, the
  decoder's linear layers over its tokens, is the same on all ranks).
* ZigZag ring, rank 0's per-rank work (balanced by construction: its chunks' earlier keys add up
  to the same count on every rank), compute only, on the same kernel.
* Dense on one GPU: causal SDPA (cuDNN) for the layer, the whole model for the prefill.

Every measurement records the peak memory it allocated (``peak_gib``, the model's weights
included for the prefill) and ``OOM`` where it runs out of memory. A measurement whose run
(warm-up + repeats) would exceed ``--max-run-s``, estimated from the previous size's time x
(length ratio)^2, is skipped ("skipped: over time budget"); for a skipped prefill, the first
decoder layer alone is run once at that size (its peak memory is the whole prefill's: no layer
keeps activations) and its time x layers is recorded as ``estimated_ms``.

    python benchmarks/bench.py --routine scale [--contexts 131072,262144,524288,1048576]

``--tiny --device cpu`` runs the same code on a tiny model (the CPU smoke test).
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from bench_e2e import (DENSE_BACKENDS, LANGUAGE_MODELS, add_common_arguments, dense_backends,
                       dense_ms, language_model, prompt_ids, ring_prefill_fn, time_ms)
from bench_utils import gpu_time, int_list, write_result
from spava_ext import SpavaLayout, ops
from spava_ext.attention import KeySegments, spava_attention_rank
from spava_ext.comm import SimulatedComm
from spava_ext.integrations.transformers import spava_prefill
from spava_ext.layout import balanced_split
from torch.nn.attention import sdpa_kernel

GIB = float(1 << 30)
SKIPPED = "skipped: over time budget"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=list(LANGUAGE_MODELS), default="qwen2.5-vl-7b")
    parser.add_argument("--contexts", type=int_list, default="131072,262144,524288,1048576",
                        help="context tokens, ascending")
    parser.add_argument("--ranks", type=int_list, default=None,
                        help="Spava ranks to time (default: 0 and W - 1)")
    parser.add_argument("--layer-repeats", type=int, default=3,
                        help="timed samples of a layer (one for calls over 0.2 s)")
    parser.add_argument("--max-run-s", type=float, default=60.0,
                        help="skip a measurement estimated to run longer (seconds)")
    add_common_arguments(parser, repeats=1)


def guarded(work, device: str) -> dict:
    """``{"status": "ok", "ms": work()}``, ``{"status": "OOM"}`` or ``{"status": "error"}``
    (another runtime error, its message kept), with the peak memory that ``work`` allocated on
    a GPU (``peak_gib``)."""
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        out = {"status": "ok", "ms": work()}
    except torch.cuda.OutOfMemoryError as e:
        out = {"status": "OOM", "error": str(e).splitlines()[0][:200]}
    except RuntimeError as e:  # e.g. no kernel for a length: recorded, the sweep goes on
        out = {"status": "error", "error": f"{type(e).__name__}: {e}"[:300]}
    if cuda:
        out["peak_gib"] = torch.cuda.max_memory_allocated() / GIB
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def layer_ms(fn, device: str, repeats: int) -> float:
    """A layer's ms: the first call is the warm-up; calls over 0.2 s are timed once more (their
    host glue, 1-3 ms for Spava's, is within 1.5 %), shorter ones after two more warm-up calls in
    samples of 4 queued calls, 2 over 50 ms: the host runs ahead, as in a forward pass, and its
    glue is kept out of the window."""
    if device != "cuda":
        return time_ms(fn, device, 1, repeats)
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    if first > 0.2:
        return time_ms(fn, device, 0, 1)
    return gpu_time(fn, warmup=2, repeats=repeats, pipelined=4 if first < 0.05 else 2)["ms"]


def _randn(shape, dims: dict, g):
    return torch.randn(shape, generator=g, device=dims["device"], dtype=dims["dtype"])


def spava_layer(layout: SpavaLayout, rank: int, dims: dict):
    """Rank ``rank``'s whole Spava attention layer on random q/k/v of its shapes."""
    g = torch.Generator(device=dims["device"]).manual_seed(rank)
    n, Hq, Hkv, D = layout.local_len(rank), dims["hq"], dims["hkv"], dims["d"]
    q, k, v = (_randn((1, n, h, D), dims, g) for h in (Hq, Hkv, Hkv))
    comm = SimulatedComm(rank, layout.world_size)
    return lambda: spava_attention_rank(q, k, v, layout, comm)


def ring_layer(L: int, world: int, rank: int, dims: dict):
    """ZigZag ring attention's per-rank work: the rows of chunks ``rank`` and ``2W-1-rank`` over
    all earlier keys and their own (causal), on the same kernel; communication excluded."""
    g = torch.Generator(device=dims["device"]).manual_seed(rank)
    Hq, Hkv, D = dims["hq"], dims["hkv"], dims["d"]
    sizes = balanced_split(L, 2 * world)
    k, v = _randn((1, L, Hkv, D), dims, g), _randn((1, L, Hkv, D), dims, g)
    calls = []
    for c in (rank, 2 * world - 1 - rank):
        s0, n = sum(sizes[:c]), sizes[c]
        keys = KeySegments().add(k[:, :s0], v[:, :s0]).add(k[:, s0:s0 + n], v[:, s0:s0 + n],
                                                           diag=0)
        q = _randn((1, n, Hq, D), dims, g)
        calls.append((q, keys, torch.empty_like(q)))

    def run():
        for q, keys, out in calls:
            ops.attn_fwd(q, keys.k, keys.v, keys.row_begin, keys.diag, out=out)
    return run


def dense_layer(L: int, dims: dict, backend: str):
    """Causal SDPA over all ``L`` tokens on one device with ``backend``."""
    g = torch.Generator(device=dims["device"]).manual_seed(0)
    q = _randn((1, dims["hq"], L, dims["d"]), dims, g)
    k, v = (_randn((1, dims["hkv"], L, dims["d"]), dims, g) for _ in range(2))

    def run():
        with sdpa_kernel(DENSE_BACKENDS[backend]):
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    return run


class Budget:
    """Per kind of measurement, the last size timed; estimates a run at a longer one."""

    def __init__(self, max_run_s: float, calls: int):
        self.max_ms, self.calls, self.last = max_run_s * 1e3, calls, {}

    def estimate_ms(self, key: str, L: int):
        """Per-call ms at ``L`` from the last size, x (ratio)^2; None for the first size."""
        prev = self.last.get(key)
        return None if prev is None else prev[1] * (L / prev[0]) ** 2

    def over(self, key: str, L: int) -> bool:
        est = self.estimate_ms(key, L)
        return est is not None and est * self.calls > self.max_ms

    def record(self, key: str, L: int, res: dict) -> dict:
        ms = res.get("ms", res.get("estimated_ms"))
        if ms is not None:
            self.last[key] = (L, ms)
        return res


def one_layer(model, work):
    """``work()`` with the decoder cut to its first layer (every weight stays resident)."""
    cfg = model.config
    layers, cfg.num_hidden_layers = cfg.num_hidden_layers, 1
    try:
        return work()
    finally:
        cfg.num_hidden_layers = layers


def prefill(model, key: str, L: int, run_ms, budget: Budget, device: str) -> dict:
    """``run_ms(warmup, repeats)`` -> ms of a whole prefill, within the time budget; over it,
    one call with the first layer only (peak memory, OOM, ``estimated_ms`` = its ms x layers)."""
    if not budget.over(key, L):
        return budget.record(key, L, guarded(lambda: run_ms(1, budget.calls - 1), device))
    layers = model.config.num_hidden_layers
    est = budget.estimate_ms(key, L)
    out = {"status": SKIPPED, "budget_estimate_ms": est}
    if est / layers <= budget.max_ms:
        probe = guarded(lambda: one_layer(model, lambda: run_ms(0, 1)), device)
        out["one_layer"] = probe
        if probe["status"] == "ok":
            out["estimated_ms"] = probe["ms"] * layers
        else:
            out["status"] = f"{SKIPPED}; one layer: {probe['status']}"
    return budget.record(key, L, out)


def layer_point(layout: SpavaLayout, ranks: list, dims: dict, args, budget: Budget) -> dict:
    dev, L, W = dims["device"].type, layout.seq_len, layout.world_size
    reps = args.layer_repeats
    backend = dense_backends(dev)[0]
    spava = {str(r): guarded(lambda r=r: layer_ms(spava_layer(layout, r, dims), dev, reps), dev)
             for r in ranks}
    out = {"spava": spava, "ring_rank0": guarded(
        lambda: layer_ms(ring_layer(L, W, 0, dims), dev, reps), dev)}
    if budget.over("layer dense", L):
        out["dense"] = {"status": SKIPPED, "budget_estimate_ms": budget.estimate_ms(
            "layer dense", L)}
    else:
        out["dense"] = budget.record("layer dense", L, guarded(
            lambda: layer_ms(dense_layer(L, dims, backend), dev, reps), dev))
    out["dense_backend"] = backend
    return out


@torch.no_grad()
def e2e_point(model, layout: SpavaLayout, ranks: list, args, budget: Budget) -> dict:
    dev, L, W = model.device.type, layout.seq_len, layout.world_size
    ids = prompt_ids(model, L)
    backend = dense_backends(dev)[0]
    spava = {}
    for r in ranks:
        comm = SimulatedComm(r, W)
        spava[str(r)] = prefill(model, "e2e spava", L, lambda w, n, c=comm: time_ms(
            lambda: spava_prefill(model, ids, layout, c), dev, w, n), budget, dev)
    ring = prefill(model, "e2e ring", L, lambda w, n: time_ms(
        ring_prefill_fn(model, ids, W, 0), dev, w, n), budget, dev)
    dense = prefill(model, "e2e dense", L, lambda w, n: dense_ms(
        model, ids, [backend], w, n)[backend], budget, dev)
    return {"spava": spava, "ring_rank0": ring, "dense": dense, "dense_backend": backend}


def slowest(results: dict) -> int:
    """The rank whose measurement took longest (the first one where none has a time)."""
    return int(max(results, key=lambda r: results[r].get("ms", -1.0)))


def critical(results: dict):
    """The slowest timed rank's ms (None unless every rank was timed)."""
    ms = [r.get("ms") for r in results.values()]
    return None if None in ms else max(ms)


def summarise(part: dict) -> None:
    """Adds Spava's critical path and its speedups over the ring and dense (ms, else a skipped
    prefill's estimate; None where neither exists) to one size's layer or prefill results."""
    crit = part["spava_critical_ms"] = critical(part["spava"])
    for name, key in (("ring", "ring_rank0"), ("dense", "dense")):
        base = part[key].get("ms", part[key].get("estimated_ms"))
        part[f"speedup_vs_{name}"] = None if crit is None or base is None else base / crit


def first_oom(points: list) -> dict:
    """The first context at which each measurement ran out of memory (itself or, for a skipped
    prefill, its first layer alone); None where it never did."""
    out = {}
    for part in ("layer", "e2e"):
        for name, get in (("spava", lambda p: list(p["spava"].values())),
                          ("ring", lambda p: [p["ring_rank0"]]), ("dense", lambda p: [p["dense"]])):
            hits = [p["context"] for p in points
                    if any("OOM" in r["status"] for r in get(p[part]))]
            out[f"{part} {name}"] = hits[0] if hits else None
    return out


def run(args: argparse.Namespace) -> int:
    if args.contexts != sorted(args.contexts):
        raise SystemExit(f"scale: --contexts must ascend, got {args.contexts}")
    model = language_model(args.model, tiny=args.tiny, device=args.device)
    cfg = model.config
    dims = {"hq": cfg.num_attention_heads, "hkv": cfg.num_key_value_heads, "dtype": model.dtype,
            "d": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            "device": model.device}
    ranks = args.ranks if args.ranks is not None else sorted({0, args.world - 1})
    layer_budget = Budget(args.max_run_s, 2)  # a layer over the budget is a call over 0.2 s
    e2e_budget = Budget(args.max_run_s, 1 + args.repeats)
    cuda = args.device == "cuda"
    points = []
    for ctx in args.contexts:
        layout = SpavaLayout.auto(ctx + args.question, args.question, args.world)
        layer = layer_point(layout, ranks, dims, args, layer_budget)
        point = {"context": ctx, "seq_len": layout.seq_len, "layout": repr(layout),
                 "local_tokens": layout.local_len(0), "layer": layer,
                 "e2e": e2e_point(model, layout, [slowest(layer["spava"])], args, e2e_budget)}
        for part in ("layer", "e2e"):
            summarise(point[part])
        points.append(point)
        print(row(point), flush=True)
    result = {"model": args.model, "tiny": args.tiny, "world": args.world,
              "question": args.question, "layers": cfg.num_hidden_layers, "ranks": ranks,
              "repeats": args.repeats, "layer_repeats": args.layer_repeats,
              "max_run_s": args.max_run_s,
              "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / GIB,
              "card_memory_gib": (torch.cuda.get_device_properties(0).total_memory / GIB
                                  if cuda else None), "points": points,
              "first_oom_context": first_oom(points)}
    path = write_result("scale", result)
    print("first context out of memory: " + ", ".join(
        f"{k} {v if v is not None else '-'}" for k, v in result["first_oom_context"].items()))
    print(f"(wrote {path})")
    try:
        import plot

        print(f"(plot: {plot.plot_file(path)})")
    except ImportError as e:  # no matplotlib here: plot the JSON elsewhere
        print(f"(no plot: {e})")
    return 0


def cell(res: dict) -> str:
    """One measurement in the table: ms [peak GiB], OOM, error, or skipped (its estimates)."""
    def mem(r: dict) -> str:
        return f" [{r['peak_gib']:.1f}G]" if r.get("peak_gib") is not None else ""

    if res["status"] == "ok":
        return f"{res['ms']:.1f}{mem(res)}"
    if "budget_estimate_ms" not in res:
        return res["status"] + mem(res)
    text = f"{SKIPPED} (est. {res['budget_estimate_ms'] / 1e3:.1f} s a call)"
    probe = res.get("one_layer")
    if probe is None:
        return text
    if probe["status"] != "ok":
        return f"{text}; first layer alone: {probe['status']}{mem(probe)}"
    return f"{text}; first layer x layers: {res['estimated_ms']:.0f}{mem(probe)}"


def row(point: dict) -> str:
    """The printed lines of one size: layer and prefill, ms [peak GiB]."""
    head = f"context {point['context']} (+question), {point['local_tokens']} local tokens per rank"
    lines = [head]
    for part, name in (("layer", "layer"), ("e2e", "prefill")):
        p = point[part]
        spava = ", ".join(f"r{r} {cell(res)}" for r, res in p["spava"].items())
        lines.append(f"  {name:>7} ms: Spava {spava} | ring r0 {cell(p['ring_rank0'])} | "
                     f"dense {p['dense_backend']} {cell(p['dense'])}")
        ratios = [f"{p[f'speedup_vs_{b}']:.2f}x vs {b}" for b in ("ring", "dense")
                  if p[f"speedup_vs_{b}"] is not None]
        if ratios:
            lines.append(f"  {'':>7}     Spava " + ", ".join(ratios))
    return "\n".join(lines)
