"""Shared test helpers: inputs, the dtype-derived tolerance rule, and gloo rank processes."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import traceback
from typing import Callable, Optional

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HAS_CUDA = torch.cuda.is_available()
#: ``device`` parameters: the CUDA case carries the ``cuda`` marker (skipped without a GPU).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def grid_inputs(B: int, L: int, Hq: int, Hkv: int, D: int, dtype=torch.float32, seed: int = 0,
                device: str = "cpu"):
    """q, k on a grid of 0.5 steps (small integers / 2) and Gaussian v.

    Every selection score (sums of products of such values) is exact in fp32 whatever the
    summation order, so every implementation selects the same keys and ties are real ties."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-3, 4, (B, L, Hq, D), generator=g).float() * 0.5
    k = torch.randint(-3, 4, (B, L, Hkv, D), generator=g).float() * 0.5
    v = torch.randn(B, L, Hkv, D, generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def randn_inputs(B, L, Hq, Hkv, D, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, L, Hq, D), (B, L, Hkv, D), (B, L, Hkv, D)]
    return tuple(torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in shapes)


def assert_attn_close(name: str, out: torch.Tensor, ref: torch.Tensor,
                      ref_lowprec: Optional[torch.Tensor] = None, eps: float = 1e-5) -> None:
    """FlashAttention's rule: max|out - ref| <= 2 * max|ref_lowprec - ref| + eps, with ``ref`` in
    fp32 and ``ref_lowprec`` the same math in the tested dtype. Also: no NaN anywhere."""
    out, ref = out.float().cpu(), ref.float().cpu()
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert not torch.isnan(out).any(), f"{name}: NaN in output"
    base = 0.0 if ref_lowprec is None else (ref_lowprec.float().cpu() - ref).abs().max().item()
    err = (out - ref).abs()
    tol = 2 * base + eps
    if err.numel() and err.max().item() > tol:
        where = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        raise AssertionError(f"{name}: max error {err.max().item():.3g} at {where} > tolerance "
                             f"{tol:.3g} (lowprec baseline {base:.3g})")


def assert_lse_close(name: str, lse: torch.Tensor, ref: torch.Tensor,
                     ref_lowprec: Optional[torch.Tensor] = None) -> None:
    """Log-sum-exps against the fp32 reference: the same -inf rows (rows that see no key), no NaN,
    and elsewhere max|lse - ref| <= 2 * max|ref_lowprec - ref| + 8 * eps(fp32) * max(1, max|ref|):
    the rounding of an fp32 log-sum-exp of that size (measured on CPU in fp32: up to 1.3 eps times
    |ref|), plus the FlashAttention rule when ``ref_lowprec`` (the same math in the tested dtype)
    is given."""
    lse, ref = lse.float().cpu(), ref.float().cpu()
    assert lse.shape == ref.shape, f"{name}: lse shape {tuple(lse.shape)} != {tuple(ref.shape)}"
    assert not torch.isnan(lse).any(), f"{name}: NaN in lse"
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref)), f"{name}: -inf rows differ"
    fin = torch.isfinite(ref)
    if not fin.any():
        return
    base = 0.0
    if ref_lowprec is not None:
        base = (ref_lowprec.float().cpu()[fin] - ref[fin]).abs().max().item()
    tol = 2 * base + 8 * torch.finfo(torch.float32).eps * max(1.0, ref[fin].abs().max().item())
    err = (lse[fin] - ref[fin]).abs().max().item()
    assert err <= tol, f"{name}: lse max error {err:.3g} > tolerance {tol:.3g} (base {base:.3g})"


# ---------------------------------------------------------------------------------- ranks
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_group(backend: str, rank: int, world: int) -> None:
    """gloo, or NCCL on GPU ``rank`` with the options the schedule is run with."""
    if backend == "nccl":
        from spava_ext.comm import nccl_options

        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", rank=rank, world_size=world,
                                device_id=torch.device("cuda", rank), pg_options=nccl_options())
    else:
        dist.init_process_group(backend, rank=rank, world_size=world)


def _worker(rank: int, world: int, port: int, fn: Callable, args: tuple, result_dir: str,
            backend: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        _init_group(backend, rank, world)
        result = fn(rank, world, *args)
        torch.save({"ok": result}, os.path.join(result_dir, f"rank{rank}.pt"))
    except BaseException:  # report the traceback to the parent
        torch.save({"error": traceback.format_exc()}, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    # The result is on disk: leave without interpreter finalisation, during which a gloo worker
    # thread still releasing a finished collective's tensors aborts the process (it needs the
    # GIL; seen in a core dump under load on the 2-core CI machine).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(fn: Callable, world: int, *args, backend: str = "gloo") -> list:
    """Run ``fn(rank, world, *args)`` in ``world`` processes of a ``backend`` group (gloo, or
    NCCL with one GPU per rank); returns each rank's result. ``fn`` must be a module-level
    function (it is pickled)."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(world, _free_port(), fn, args, tmp, backend),
                           nprocs=world, join=True, start_method="spawn")
        results = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False)
                   for r in range(world)]
    errors = [f"rank {r}:\n{res['error']}" for r, res in enumerate(results) if "error" in res]
    if errors:
        raise AssertionError("\n".join(errors))
    return [res["ok"] for res in results]


def write_video(path, frames: int, seed: int = 0, size: int = 64, fps: int = 4) -> None:
    """A short random-noise video file (mpeg4 in .mp4) written with PyAV."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for _ in range(frames):
            img = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


# ---------------------------------------------------------------------------------- models
def reference_generate(model, inputs: dict, layout, max_new_tokens: int
                       ) -> tuple[torch.Tensor, float]:
    """What Spava generation must produce, from one process: ``model.generate`` (greedy) with
    every decoder layer's prefill attention replaced by ``spava_ext.reference.spava_attention``
    over the whole prompt (``layout``) and exact attention over the cache while decoding.
    Returns the new token ids ``[B, max_new_tokens]`` and the smallest gap between the two best
    logits of any step (a test's precondition: no near-ties)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from spava_ext import reference
    from spava_ext.integrations.transformers import _decoder

    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        if query.shape[2] != layout.seq_len:  # a decode step: exact
            return sdpa_attention_forward(module, query, key, value, attention_mask,
                                          scaling=scaling, **kwargs)
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))
        return reference.spava_attention(q, k, v, layout, softmax_scale=scaling), None

    AttentionInterface.register("spava_test_reference", attention)
    decoder = _decoder(model)
    previous = decoder.config._attn_implementation
    decoder.set_attn_implementation("spava_test_reference")
    try:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=None, output_scores=True,
                                 return_dict_in_generate=True)
    finally:
        decoder.set_attn_implementation(previous)
    top2 = torch.stack(out.scores).topk(2, dim=-1).values
    gap = (top2[..., 0] - top2[..., 1]).min().item()
    return out.sequences[:, inputs["input_ids"].shape[1]:], gap
