"""The FP8 attention of one rank's layer (``spava_attention(..., attn_dtype="fp8")``;
docs/kernels/attn_fp8.md): what changes against the bf16 schedule of
:func:`spava_ext.attention.spava_attention_rank`.

* Each rank quantises what it owns once (:func:`spava_ext.ops.quantize_fp8`, blocks of
  :data:`~spava_ext.ops.FP8_BLOCK` rows): its local Q (per-row scales), K and V (V transposed,
  the layout FP8 wgmma reads), and each passing block and sharded-anchor slice as it sends it.
  The passing blocks are selected from the unquantised rows, as in bf16.
* A sent part is one byte buffer (:func:`pack`): e4m3 K ``[B, n, Hkv, D]``, e4m3 V transposed
  ``[B, Hkv, D, n_pad]`` and their fp32 block scales: about half the bytes of the bf16 part.
* Each gathered part is its own key source (its blocks start at its first row), so the layer
  plan's spans over a gather buffer are cut per part (:func:`fp8_plan`).
* Softmax, output (the input dtype) and the question rows' exact merge are as in bf16.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch

from . import ops

__all__ = ["MODES", "attn_mode", "check_inputs", "pack", "unpack", "fp8_plan", "operands"]

#: The FP8 modes of a layer: plain, and with the Hadamard rotation of Q and K.
MODES = ("fp8", "fp8+hadamard")


def attn_mode(call: str, attn_dtype: Optional[str], hadamard: bool) -> Optional[str]:
    """The layer's attention mode from the public arguments: None (attention in the inputs'
    dtype) or one of :data:`MODES`; a clear error for anything else."""
    if attn_dtype not in (None, "fp8"):
        raise ValueError(f"{call}: attn_dtype must be None (the inputs' dtype) or 'fp8', got "
                         f"{attn_dtype!r}")
    if hadamard and attn_dtype is None:
        raise ValueError(f"{call}: hadamard=True rotates Q and K before FP8 quantisation; it "
                         "needs attn_dtype='fp8'")
    return None if attn_dtype is None else MODES[int(bool(hadamard))]


def check_inputs(call: str, q: torch.Tensor, mode: str) -> None:
    """What FP8 needs beyond the bf16 layer's checks, raised before any work: a device with
    the FP8 attention (the CPU: the CUDA kernel is not written yet), and a power-of-two head
    dim for the rotation."""
    if q.device.type != "cpu":
        raise NotImplementedError(f"{call}: attn_dtype='fp8' runs on the CPU only: the FP8 "
                                  f"attention kernel is not written yet (q is on {q.device}; "
                                  "docs/kernels/attn_fp8.md)")
    D = q.shape[-1]
    if mode == "fp8+hadamard" and D & (D - 1):
        raise ValueError(f"{call}: hadamard=True needs a power-of-two head dim, got D = {D}")


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def _part_sizes(n: int, B: int, Hkv: int, D: int) -> tuple[int, int, int]:
    """Bytes of a packed part of ``n`` rows: K, transposed V, one of its two scale tensors (each
    rounded to 16 bytes, so every view is aligned)."""
    blocks = -(-n // ops.FP8_BLOCK)
    return (_round16(B * n * Hkv * D), _round16(B * Hkv * D * _round16(n)),
            _round16(4 * B * blocks * Hkv))


def unpack(buf: torch.Tensor, n: int, B: int, Hkv: int, D: int) -> tuple:
    """The views of a packed part ``buf`` (uint8, :func:`pack`): ``(k8 [B, n, Hkv, D], vt
    [B, Hkv, D, n_pad], k_scale, v_scale [B, ceil(n / FP8_BLOCK), Hkv])``."""
    kb, vb, sb = _part_sizes(n, B, Hkv, D)
    blocks = -(-n // ops.FP8_BLOCK)
    e4m3 = torch.float8_e4m3fn
    k8 = buf[: B * n * Hkv * D].view(e4m3).view(B, n, Hkv, D)
    vt = buf[kb : kb + B * Hkv * D * _round16(n)].view(e4m3).view(B, Hkv, D, _round16(n))
    scales = [buf[o : o + 4 * B * blocks * Hkv].view(torch.float32).view(B, blocks, Hkv)
              for o in (kb + vb, kb + vb + sb)]
    return k8, vt, scales[0], scales[1]


def pack(kv: torch.Tensor, rotate: bool) -> torch.Tensor:
    """A part to send, ``kv [n, 2, B, Hkv, D]`` (K and V rows, e.g. a passing block), quantised
    into one uint8 buffer (:func:`unpack` reads it); ``rotate``: K rotated first."""
    n, _, B, Hkv, D = kv.shape
    kb, vb, sb = _part_sizes(n, B, Hkv, D)
    buf = torch.empty(kb + vb + 2 * sb, dtype=torch.uint8, device=kv.device)
    k8, vt, ks, vs = unpack(buf, n, B, Hkv, D)
    ops.quantize_fp8(kv[:, 0].transpose(0, 1), rotate=rotate, values=k8, scales=ks)
    ops.quantize_fp8(kv[:, 1].transpose(0, 1), transpose=True, values=vt, scales=vs)
    return buf


@lru_cache(maxsize=1024)
def fp8_plan(layout, rank: int, order: tuple):
    """:func:`~spava_ext.attention.layer_plan` with every span over a gather buffer cut into
    spans of single parts: source ``1 + (g - 1) * W + j`` is part ``j`` of gather source ``g``
    (ANCHOR, PASSING1, PASSING2), source 0 the local rows. A piece that starts ``o`` keys into
    its segment keeps the segment's rule: ``diag - o``."""
    from .attention import ANCHOR, LOCAL, LayerPlan, layer_plan

    plan = layer_plan(layout, rank, order)
    W = layout.world_size
    part_rows = {ANCHOR: layout.anchor_cap, 2: layout.passing_cap, 3: layout.passing_cap}
    nseg, spans, rbs, dgs = [], [], [], []
    s = 0
    for n in plan.num_segments:
        count = 0
        for t in range(s, s + n):
            src, first, rows = plan.spans[3 * t : 3 * t + 3]
            if src == LOCAL:
                pieces = [(0, first, rows, 0)]
            else:
                cap, pieces, r = part_rows[src], [], first
                while r < first + rows:
                    j, off = divmod(r, cap)
                    m = min(cap - off, first + rows - r)
                    pieces.append((1 + (src - 1) * W + j, off, m, r - first))
                    r += m
            for source, f, m, o in pieces:
                spans += [source, f, m]
                rbs.append(plan.row_begin[t])
                dgs.append(plan.diag[t] - o)
                count += 1
        nseg.append(count)
        s += n
    return LayerPlan(plan.names, plan.rows, nseg, spans, rbs, dgs, plan.wait_for)


def operands(q, k, v, layout, mode: str, recv_anchor=None, recv1=None, recv2=None) -> tuple:
    """The rank's FP8 operands: its local Q, K, V quantised now, and the key sources of
    :func:`fp8_plan` (the local rows, then every gathered part). Returns ``(q8 [B, L, Hq, D],
    q_scale [B, L, Hq] per row, k sources, v sources, k scales, v scales)``."""
    rotate = mode == "fp8+hadamard"
    B, L, Hkv, D = k.shape
    q8, qs = ops.quantize_fp8(q, rotate=rotate)
    q_scale = qs.repeat_interleave(ops.FP8_BLOCK, dim=1)[:, :L]
    k8, ks = ops.quantize_fp8(k, rotate=rotate)
    vt, vs = ops.quantize_fp8(v, transpose=True)
    local = (k8, vt, ks, vs)
    sources = [local]
    for recv, rows in ((recv_anchor, layout.anchor_cap), (recv1, layout.passing_cap),
                       (recv2, layout.passing_cap)):
        for j in range(layout.world_size):
            sources.append(local if recv is None else unpack(recv[j], rows, B, Hkv, D))
    return (q8, q_scale, *(list(col) for col in zip(*sources)))
