"""PNG of a benchmark result, written next to its JSON (the kind read from the file name):

* kernels_*.json: attn_fwd TFLOP/s per call vs FlexAttention and dense SDPA,
* layer_*.json: speedup of Spava's critical path over dense SDPA, ZigZag ring, APB-style and
  Star-style per-rank work, against context length, one line per world size,
* fidelity_*.json: needle recall against keep ratio, row-class error against passing_len and
  anchor_len,
* scale_*.json: per-rank prefill time and peak memory against context length (Spava's slowest
  timed rank, the ZigZag ring's rank 0, dense on one GPU; estimates hollow, OOM as crosses).

    python benchmarks/plot.py benchmarks/results/<routine>_<date>_<card>.json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def plot_file(path: Path) -> Path:
    """Draws the result at ``path`` into ``path`` with suffix .png; returns that path."""
    path = Path(path)
    kind = path.name.split("_")[0]
    if kind not in PLOTS:
        raise SystemExit(f"plot: no plot for {path.name} (known: "
                         + ", ".join(f"{k}_*.json" for k in PLOTS) + ")")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(path.read_text())
    fig, title = PLOTS[kind](plt, data)
    fig.suptitle(f"{title}, {data['card']}, {data['date']}, commit {data['commit']}")
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def kernels(plt, data: dict):
    fig, axes = plt.subplots(1, len(data["workloads"]), figsize=(5 * len(data["workloads"]), 4),
                             sharey=True, squeeze=False)
    for ax, (name, w) in zip(axes[0], data["workloads"].items()):
        labels = [f"r{c['rank']} {c['call']}" for c in w["calls"]]
        x = range(len(labels))
        # attn_fwd alone and sustained (the headline), then the side-by-side timings (attn_fwd
        # and FlexAttention interleaved sample by sample: same clocks)
        series = [("spava attn_fwd, alone (sustained)", lambda c: c["spava"]),
                  ("spava attn_fwd, side by side", lambda c: c["spava"].get("side_by_side", {})),
                  ("FlexAttention, same mask, side by side", lambda c: c.get("flex", {}))]
        width = 0.8 / len(series)
        for i, (label, get) in enumerate(series):
            vals = [get(c).get("tflops", 0) for c in w["calls"]]
            if any(vals):
                ax.bar([xi + (i - 1) * width for xi in x], vals, width, label=label)
        for backend, style in (("cudnn", "--"), ("flash", ":")):
            tf = w.get("dense", {}).get(backend, {}).get("tflops")
            if tf:
                ax.axhline(tf, linestyle=style, color="k",
                           label=f"dense causal SDPA {backend}, full sequence")
        own_dense_lines(ax, w.get("own_dense", {}))
        ax.set_xticks(list(x), labels, rotation=30, ha="right")
        ax.set_title(f"{name} (Hq {w['heads_q']}, Hkv {w['heads_kv']}, D {w['head_dim']})")
    axes[0][0].set_ylabel("TFLOP/s on allowed pairs")
    axes[0][0].legend(fontsize=7)
    return fig, "per-rank attention of W=8 at 128K tokens"


def own_dense_lines(ax, od: dict) -> None:
    """attn_fwd's and cuDNN's rates on plain causal attention: interleaved and alone."""
    for key, label, color in (("spava", "attn_fwd", "tab:blue"), ("cudnn", "cuDNN", "tab:red")):
        tf = od.get("tflops") if key == "spava" else od.get(key, {}).get("tflops")
        if tf:
            ax.axhline(tf, linestyle="-.", color=color, linewidth=1,
                       label=f"dense causal {od['tokens'] // 1024}K, {label} (interleaved)")
        alone = od.get("sustained", {}).get(key, {})
        if alone.get("tflops"):
            ax.axhline(alone["tflops"], linestyle="-", color=color, linewidth=1,
                       label=f"dense causal {od['tokens'] // 1024}K, {label} (alone, sustained)")


def layer(plt, data: dict):
    pts = data["points"]
    worlds = sorted({p["world"] for p in pts})
    panels = [("vs dense causal SDPA (cuDNN), one GPU", "dense"),
              ("vs ZigZag ring per-rank work", "zigzag_ring_ms"),
              ("vs APB-style per-rank work", "apb_ms"),
              ("vs Star-style per-rank work", "star_ms")]
    panels = [pn for pn in panels if pn[1] == "dense" or pn[1] in pts[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.7 * len(panels), 4), squeeze=False)
    axes = axes[0]
    for ax, (title, key) in zip(axes, panels):
        for w in worlds:
            row = sorted((p for p in pts if p["world"] == w), key=lambda p: p["context"])
            base = [p["dense_ms"]["cudnn"] if key == "dense" else p[key] for p in row]
            ax.plot([p["context"] // 1024 for p in row],
                    [b / p["critical_path_ms"] for b, p in zip(base, row)], marker="o",
                    label=f"W = {w}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context tokens (K)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup of Spava's critical path")
    axes[0].legend()
    return fig, (f"simulated layer (Hq {data['heads_q']}, Hkv {data['heads_kv']}, "
                 f"D {data['head_dim']})")


def fidelity(plt, data: dict):
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for beta in sorted({r["beta"] for r in data["recall"]}):
        rows = [r for r in data["recall"] if r["beta"] == beta]
        axes[0].plot([r["keep_ratio"] for r in rows], [r["recall"] for r in rows], marker="o",
                     label=f"needle strength {beta}")
    keeps = [r["keep_ratio"] for r in data["recall"] if r["beta"] == 0.0]
    axes[0].plot(keeps, keeps, "k--", label="random selection")
    axes[0].set(xlabel="share of context keys kept", ylabel="needle recall",
                title="query-aware selection")
    axes[0].legend(fontsize=7)
    for ax, key, name in ((axes[1], "passing_sweep", "passing_len"),
                          (axes[2], "anchor_sweep", "anchor_len")):
        rows = data[key]
        for cls in ("later_chunks", "C0", "question"):
            ys = [r[cls] for r in rows]
            if any(y is not None for y in ys):
                ax.plot([r[name] for r in rows], [y or 0 for y in ys], marker="o", label=cls)
        ax.set(xlabel=name, ylabel="relative L2 error vs dense",
               title=f"row-class error vs {name}")
        ax.set_xscale("symlog", linthresh=16)
        ax.legend(fontsize=7)
    return fig, f"fidelity probes, L = {data['L']}, W = {data['world']}"


def scale(plt, data: dict):
    pts = data["points"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = ((axes[0], "layer", "ms", "one attention layer, ms per rank"),
              (axes[1], "e2e", "ms", "prefill, ms per rank"),
              (axes[2], "e2e", "peak_gib", "prefill, peak memory per rank (GiB)"))
    for ax, part, key, title in panels:
        for label, get in (("Spava (slowest timed rank)",
                            lambda p, k=key: max(p["spava"].values(),
                                                 key=lambda r: r.get(k) or 0)),
                           ("ZigZag ring, compute only", lambda p: p["ring_rank0"]),
                           ("dense, one GPU", lambda p: p["dense"])):
            xs, ys, est, oom = [], [], [], []
            for p in pts:
                res, x = get(p[part]), p["context"] / 1024
                probe = res.get("one_layer", {})
                if "OOM" in res["status"]:
                    oom.append(x)
                elif res.get(key) is not None:
                    xs.append(x)
                    ys.append(res[key])
                elif key == "ms" and "estimated_ms" in res:
                    est.append((x, res["estimated_ms"]))
                elif probe.get(key) is not None:  # a skipped prefill's first-layer peak
                    est.append((x, probe[key]))
            line = ax.plot(xs, ys, marker="o", label=label)[0]
            if est:
                ax.plot(*zip(*est), marker="o", linestyle="none", mfc="none",
                        color=line.get_color())
            for x in oom:
                ax.axvline(x, color=line.get_color(), linestyle=":", alpha=0.6)
                top = data.get("card_memory_gib") if key == "peak_gib" else None
                ax.plot([x], [top or ax.get_ylim()[1]], marker="x", color=line.get_color())
        if key == "peak_gib" and data.get("card_memory_gib"):
            ax.axhline(data["card_memory_gib"], color="k", linestyle="--", label="card memory")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log" if key == "ms" else "linear")
        ax.set(xlabel="context tokens (K)", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig, f"scale, W = {data['world']}, {data['model']} (hollow: estimated, x: OOM)"


PLOTS = {"kernels": kernels, "layer": layer, "fidelity": fidelity, "scale": scale}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        print(plot_file(Path(arg)))
