"""PNG of a kernels_*.json result: attn_fwd TFLOP/s per call vs FlexAttention and dense SDPA.

    python benchmarks/plot_kernels.py benchmarks/results/kernels_<date>_<card>.json
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path: str) -> Path:
    data = json.loads(Path(path).read_text())
    fig, axes = plt.subplots(1, len(data["workloads"]), figsize=(5 * len(data["workloads"]), 4),
                             sharey=True)
    for ax, (name, w) in zip(axes, data["workloads"].items()):
        labels = [f"r{c['rank']} {c['call']}" for c in w["calls"]]
        x = range(len(labels))
        # attn_fwd alone and sustained (the headline since session 8), then the side-by-side
        # timings (attn_fwd and FlexAttention interleaved sample by sample: same clocks)
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
        od = w.get("own_dense", {})
        for key, label, color in (("tflops", "attn_fwd", "tab:blue"), ("cudnn", "cuDNN", "tab:red")):
            tf = od.get("tflops") if key == "tflops" else od.get(key, {}).get("tflops")
            if tf:
                ax.axhline(tf, linestyle="-.", color=color, linewidth=1,
                           label=f"dense causal {od['tokens'] // 1024}K, {label} (interleaved)")
            alone = od.get("sustained", {}).get("spava" if key == "tflops" else key, {})
            if alone.get("tflops"):
                ax.axhline(alone["tflops"], linestyle="-", color=color, linewidth=1,
                           label=f"dense causal {od['tokens'] // 1024}K, {label} (alone, sustained)")
        ax.set_xticks(list(x), labels, rotation=30, ha="right")
        ax.set_title(f"{name} (Hq {w['heads_q']}, Hkv {w['heads_kv']}, D {w['head_dim']})")
    axes[0].set_ylabel("TFLOP/s on allowed pairs")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"per-rank attention of W=8 at 128K tokens - {data['card']}, {data['date']}, "
                 f"commit {data['commit']}")
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    print(main(sys.argv[1]))
