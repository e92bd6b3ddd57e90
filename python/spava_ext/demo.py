"""`spava demo`: Spava attention on a synthetic video layer over W CPU ranks vs dense."""

from __future__ import annotations

import os
import tempfile
import time

import torch

__all__ = ["cmd_demo", "check_demo_args"]


def _demo_inputs(args):
    from .synthetic import video_like_layer

    return video_like_layer(args.frames, args.tokens_per_frame, args.prefix, args.question,
                            args.heads_q, args.heads_kv, args.head_dim, seed=args.seed)


def _demo_len(args) -> int:
    """L: the synthetic sequence's tokens, ``[prefix | frames x tokens_per_frame | question]``."""
    return args.prefix + args.frames * args.tokens_per_frame + args.question


def check_demo_args(args) -> None:
    """A ValueError naming the flag for arguments the demo cannot run with, before any rank
    process starts."""
    from .layout import check_heads

    check_heads("--heads-q/--heads-kv", args.heads_q, args.heads_kv, args.head_dim)
    if args.hadamard and args.attn_dtype != "fp8":
        raise ValueError("--hadamard rotates Q and K before FP8 quantisation: it needs "
                         "--attn-dtype fp8")
    D = args.head_dim
    if args.hadamard and D & (D - 1):
        raise ValueError(f"--hadamard needs --head-dim a power of two, got {D}")
    L = _demo_len(args)
    if args.anchor is not None and args.anchor > L - args.question:
        raise ValueError(f"--anchor {args.anchor} exceeds the {L - args.question} tokens before "
                         "the question (--prefix + --frames x --tokens-per-frame)")
    _demo_layouts(args, L)


def _demo_layouts(args, L) -> dict:
    """name -> layout: the paper's passing length p (or --passing), 4p, and exact mode."""
    from .layout import SpavaLayout

    auto = SpavaLayout.auto(L, args.question, args.world_size)
    anchor = auto.anchor_len if args.anchor is None else args.anchor
    p = auto.passing_len if args.passing is None else args.passing
    return {name: SpavaLayout(L, anchor, args.question, args.world_size, passing)
            for name, passing in ((f"p={p}", p), (f"p={4 * p}", 4 * p), ("exact", None))}


def _demo_rank(rank: int, args, result_dir: str) -> None:
    import torch.distributed as dist

    from .attention import spava_attention

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.world_size))
    # rendezvous through a file in the run's own directory: no port that another job on the
    # machine could take between choosing it and binding it
    store = os.path.join(result_dir, "rendezvous")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=args.world_size)
    try:
        layer = _demo_inputs(args)
        result = {}
        for name, layout in _demo_layouts(args, layer.q.shape[1]).items():
            shard = [layout.shard(t, rank) for t in (layer.q, layer.k, layer.v)]
            fp8 = {"attn_dtype": args.attn_dtype, "hadamard": args.hadamard}
            spava_attention(*shard, layout, **fp8)  # warm-up
            times = []
            for _ in range(args.repeats):
                dist.barrier()
                t0 = time.perf_counter()
                out = spava_attention(*shard, layout, **fp8)
                times.append(time.perf_counter() - t0)
            result[name] = (out, sorted(times)[len(times) // 2])
        torch.save(result, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(relative L2 error, max abs error) of a against b."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item(), (a - b).abs().max().item()


#: Exact mode must match dense attention to fp32 rounding: a relative L2 error of at most this
#: (the measured error is 3e-7 .. 7e-7, a few float32 eps).
EXACT_REL_TOL = 64 * torch.finfo(torch.float32).eps


def _error_table(approx, layouts: dict, got: dict, dense: torch.Tensor) -> dict:
    """Print the relative L2 error of each layout's output against dense attention per row class;
    returns ``{(row class, layout name): error}``."""
    L = dense.shape[1]
    a, qs = approx.anchor_len, approx.question_start
    c0_end = approx.chunk_bounds(0)[1]
    classes = [("anchor rows", 0, a, "exact"), ("C0 rows", a, c0_end, "exact"),
               ("C1.. rows", c0_end, qs, "approximate"), ("question rows", qs, L, "exact"),
               ("all rows", 0, L, "")]
    print("\nrelative L2 error against dense causal attention (fp32):")
    print(f"{'row class':<15}{'rows':>7}" + "".join(f"{n:>12}" for n in layouts) + "   expected")
    errors = {}
    for cname, s, e, kind in classes:
        if e > s:
            for name, t in got.items():
                errors[cname, name] = _rel_err(t[:, s:e], dense[:, s:e])[0]
            errs = "".join(f"{errors[cname, n]:>12.2e}" for n in layouts)
            print(f"{cname:<15}{e - s:>7}{errs}   {kind}")
    for name, lay in layouts.items():
        kept = sum(lay.passing_sizes[:-1]) / max(1, sum(lay.chunk_sizes[:-1]))
        print(f"  {name}: passing blocks keep {kept:.1%} of the keys of C0..C(2W-2) (pool "
              f"{lay.pool_kernel})")
    return errors


def _explain(layouts: dict, errors: dict) -> bool:
    """Print what the error table means and the exact-mode check; True when it passed."""
    import textwrap

    name = next(iter(layouts))
    approx_err = errors.get(("C1.. rows", name))
    exact_err = max(e for (_, n), e in errors.items() if n == "exact")
    passed = exact_err <= EXACT_REL_TOL
    text = (
        "How to read it: each entry is ||spava - dense|| / ||dense|| over those rows, dense being "
        "causal attention over the whole sequence in one process. Anchor, C0 and question rows "
        "see every key they may see, in every layout: their error is fp32 rounding. A row of a "
        "later chunk sees the anchor and its own chunk up to itself, but of each earlier chunk "
        "only its passing block (the p keys per kv head that the question's queries score "
        "highest, scores max-pooled over a small window): the attention "
        "weight of the keys left out is missing, so these rows differ from dense attention by "
        "design"
        + ("" if approx_err is None else f" ({approx_err:.0%} at {name})")
        + "; a larger p keeps more keys and the error falls. That is Spava's approximation; its "
        "cost is judged by answer accuracy (spava eval), not by this per-row error. In exact "
        "mode (p >= every chunk's length) every key is passed, so every row must equal dense "
        "attention.")
    print("\n" + textwrap.fill(text, 96))
    print(f"exact-mode check {'passed' if passed else 'FAILED'}: largest relative error "
          f"{exact_err:.1e} (tolerance {EXACT_REL_TOL:.1e})")
    return passed


def _explain_fp8(layer, layouts: dict, got: dict, hadamard: bool) -> bool:
    """FP8: what the table means, and the exact layout checked against the same quantisation
    and arithmetic in torch (spava_ext.fp8.spava_attention); True when it matches."""
    import textwrap

    from . import fp8

    want = fp8.spava_attention(layer.q, layer.k, layer.v, layouts["exact"], rotate=hadamard)
    err = _rel_err(got["exact"], want)[0]
    passed = err <= 1e-5
    print("\n" + textwrap.fill(
        "How to read it (FP8): every row now also carries e4m3 rounding of Q, K, V and the "
        "probabilities, so the exact rows differ from dense fp32 attention by a few percent on "
        "this peaked synthetic layer (docs/kernels/attn_fp8.md says when FP8 is worth it); the "
        "later chunks add Spava's approximation on top. The check below compares exact mode "
        "with spava_ext.fp8.spava_attention: the same quantisation and arithmetic on one "
        "process.", 96))
    print(f"FP8 exact-mode check {'passed' if passed else 'FAILED'}: relative error {err:.1e} "
          "against spava_ext.fp8.spava_attention (tolerance 1e-05)")
    return passed


def cmd_demo(args) -> int:
    import torch.multiprocessing as mp
    import torch.nn.functional as F

    layer = _demo_inputs(args)
    B, L, Hq, D = layer.q.shape
    layouts = _demo_layouts(args, L)
    approx = next(iter(layouts.values()))
    print(f"spava demo: synthetic video layer, {args.frames} frames x {args.tokens_per_frame} "
          f"tokens + prefix {args.prefix} + question {args.question} = {L} tokens; heads "
          f"{Hq}/{layer.k.shape[2]}, D {D}; needle frames {layer.needle_frames}")
    print(approx.describe())
    if args.attn_dtype == "fp8":
        print(f"FP8 attention{' with the Hadamard rotation' if args.hadamard else ''}: e4m3 "
              "Q, K, V in blocks of 128 rows, passing blocks sent as e4m3")
    print(f"running {args.world_size} CPU ranks (gloo processes), {len(layouts)} layouts, "
          f"{args.repeats} timed calls each ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_demo_rank, args=(args, tmp), nprocs=args.world_size,
                           join=True, start_method="spawn")
        results = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False)
                   for r in range(args.world_size)]

    # dense causal attention on the full sequence, one process (GQA by repeating kv heads)
    G = Hq // layer.k.shape[2]
    qd, kd, vd = (t.transpose(1, 2) for t in (layer.q, layer.k.repeat_interleave(G, 2),
                                              layer.v.repeat_interleave(G, 2)))
    t0 = time.perf_counter()
    dense = F.scaled_dot_product_attention(qd, kd, vd, is_causal=True).transpose(1, 2)
    dense_s = time.perf_counter() - t0

    got = {name: lay.unshard([res[name][0] for res in results]) for name, lay in layouts.items()}
    errors = _error_table(approx, layouts, got, dense)
    if args.attn_dtype == "fp8":
        exact_ok = _explain_fp8(layer, layouts, got, args.hadamard)
    else:
        exact_ok = _explain(layouts, errors)
    print(f"\n{'CPU time per layer, median':<28}" + "".join(f"{n:>12}" for n in layouts))
    for r, res in enumerate(results):
        print(f"  spava rank {r:<16}" + "".join(f"{res[n][1]:>11.3f}s" for n in layouts))
    print(f"  dense SDPA, one process   {dense_s:>11.3f}s")
    print(f"(the {args.world_size} ranks share this machine's {os.cpu_count()} cores: CPU times "
          "show that the schedule runs; speed is measured on GPUs, see BENCHMARKS.md)")
    return 0 if exact_ok else 1


