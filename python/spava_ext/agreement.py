"""Rank agreement: every rank of a Spava layer must run the same configuration.

The collectives of a layer have sizes that follow from the layout, the batch, the head counts,
the head dim and the dtype. Ranks that disagree on any of them would exchange buffers of
different sizes (gloo aborts the process, NCCL hangs or returns garbage) or, where the sizes
happen to match (``pool_kernel``, ``softmax_scale``), silently compute wrong rows.

So before a configuration is used on a process group for the first time, the ranks exchange a
fixed-size fingerprint of it (one int64 per field, :data:`FIELDS`) in one all-gather: its size
never depends on the configuration, so the exchange itself cannot mismatch. Every rank then
holds every rank's values and raises the same :class:`RankMismatchError`, naming each field that
differs and each rank's value. A configuration that passed is remembered by the group's
communicator (``GroupComm.of``), so the steady state costs one tuple and a set lookup per call
(no collective, no synchronisation), and a layer captured in a CUDA graph after its first eager
call is covered by that first check.

Limit: the decision to exchange is taken per rank. A rank that alone switches to a configuration
the group has not used yet while the others repeat a checked one is caught by the exchange only
if the others also reach an unchecked configuration; in practice ranks step through the same
sequence of configurations (one layout per prompt, shared by every layer), and the first call of
every new layout is checked on every rank.
"""

from __future__ import annotations

import struct
import zlib
from typing import Optional

import torch

__all__ = ["RankMismatchError", "FIELDS", "layer_config", "check_agreement"]

#: The fields of a configuration, in the order they are exchanged.
FIELDS = ("seq_len", "anchor_len", "query_len", "world_size", "passing_len", "pool_kernel",
          "shard_anchor", "batch", "heads_q", "heads_kv", "head_dim", "dtype", "device_type", "softmax_scale",
          "decode_tokens", "attn_mode")

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn,
           torch.float8_e5m2, torch.int64, torch.int32)
_DEVICE_TYPES = ("cpu", "cuda", "meta", "xpu", "mps")
_ATTN_MODES = ("fp8", "fp8+hadamard")  # attention_fp8.MODES; None: the inputs' dtype


class RankMismatchError(RuntimeError):
    """Ranks of one process group called a Spava layer with different configurations."""


def _encode(name: str, value) -> int:
    if value is None:
        return -1
    if name == "dtype":
        if value in _DTYPES:
            return _DTYPES.index(value)
        return 1000 + zlib.crc32(str(value).encode()) % 1000  # the same on every rank
    if name == "device_type":
        return _DEVICE_TYPES.index(value) if value in _DEVICE_TYPES else 1000
    if name == "attn_mode":
        return _ATTN_MODES.index(value)
    if name == "softmax_scale":
        return struct.unpack("<q", struct.pack("<d", float(value)))[0]
    return int(value)


def _decode(name: str, code: int) -> str:
    if code == -1:
        return ("None" if name in ("passing_len", "softmax_scale", "decode_tokens", "attn_mode")
                else "-1")
    if name == "dtype":
        return str(_DTYPES[code]) if code < len(_DTYPES) else f"<dtype #{code}>"
    if name == "device_type":
        return _DEVICE_TYPES[code] if code < len(_DEVICE_TYPES) else f"<device #{code}>"
    if name == "attn_mode":
        return _ATTN_MODES[code]
    if name == "softmax_scale":
        return repr(struct.unpack("<d", struct.pack("<q", code))[0])
    if name == "shard_anchor":
        return str(bool(code))
    return str(code)


def layer_config(layout, q: torch.Tensor, k: torch.Tensor, softmax_scale: Optional[float],
                 decode: bool = False, attn_mode: Optional[str] = None) -> tuple:
    """The configuration of one rank's call, as a hashable tuple in :data:`FIELDS` order. A
    prefill rank's rows follow from the layout (and differ between ranks); a decode step's
    new tokens ``q.shape[1]`` are the same on every rank; ``attn_mode``: None or one of
    ``attention_fp8.MODES``."""
    return (layout.seq_len, layout.anchor_len, layout.query_len, layout.world_size,
            layout.passing_len, layout.pool_kernel, layout.shard_anchor, q.shape[0], q.shape[2], k.shape[2],
            q.shape[3], q.dtype, q.device.type, softmax_scale, q.shape[1] if decode else None,
            attn_mode)


def check_agreement(config: tuple, world: int, device: torch.device, what: str, gather) -> None:
    """Raise :class:`RankMismatchError` on every rank unless all ``world`` ranks call with the
    same ``config`` (:func:`layer_config`).

    ``gather(out [world, n], inp [n])`` is a blocking all-gather over the ranks' group (the
    caller's communicator, so that its timeout applies); ``device`` is where the collective's
    tensors live (the CUDA device for NCCL). Communicators call this once per configuration
    (``GroupComm.ensure_agreement``)."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RankMismatchError(
            f"{what}: this configuration has not been checked across ranks yet, and the check "
            "cannot run during CUDA-graph capture; call the layer once eagerly before capturing")
    codes = torch.tensor([_encode(n, v) for n, v in zip(FIELDS, config)], dtype=torch.int64)
    codes = codes.to(device)
    out = torch.empty((world, codes.numel()), dtype=torch.int64, device=device)
    gather(out, codes)
    table = out.cpu()
    diffs = []
    for f, name in enumerate(FIELDS):
        column = table[:, f]
        if bool((column != column[0]).any()):
            values = ", ".join(f"rank {r} = {_decode(name, int(c))}" for r, c in enumerate(column))
            diffs.append(f"{name}: {values}")
    if diffs:
        raise RankMismatchError(
            f"{what}: the ranks disagree on the layer's configuration; every rank must call with "
            "the same layout, batch, head counts, head dim, dtype, device kind and softmax scale. "
            + "; ".join(diffs))
