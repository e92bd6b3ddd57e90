"""PNG of a layer_*.json result: speedup of Spava's critical path over dense SDPA, ZigZag ring,
APB-style and Star-style per-rank work, against context length, one line per world size.

    python benchmarks/plot_layer.py benchmarks/results/layer_<date>_<card>.json
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path: str) -> Path:
    data = json.loads(Path(path).read_text())
    pts = data["points"]
    worlds = sorted({p["world"] for p in pts})
    panels = [("vs dense causal SDPA (cuDNN), one GPU", "dense"),
              ("vs ZigZag ring per-rank work", "zigzag_ring_ms"),
              ("vs APB-style per-rank work", "apb_ms"),
              ("vs Star-style per-rank work", "star_ms")]
    panels = [pn for pn in panels if pn[1] == "dense" or pn[1] in pts[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.7 * len(panels), 4))
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
    fig.suptitle(f"simulated layer (Hq {data['heads_q']}, Hkv {data['heads_kv']}, "
                 f"D {data['head_dim']}), {data['card']}, {data['date']}, commit {data['commit']}")
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    print(main(sys.argv[1]))
