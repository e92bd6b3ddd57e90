"""torch.ops.spava.attention inside a model: a decoder layer that calls the op compiles with
torch.compile(fullgraph=True) and inductor into one graph (no breaks) that matches eager, at
W = 1 and over gloo ranks; on CUDA, a CUDA-graph-captured layer matches eager too."""

import pytest
import torch
import torch._dynamo.testing
import torch.distributed as dist
from torch import nn

from spava_ext import SpavaLayout, reference
from spava_ext.attention_op import group_name
from utils import assert_attn_close, run_ranks

HIDDEN, HQ, HKV = 32, 4, 2


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer (no RoPE): x [B, L_r, HIDDEN] -> [B, L_r, HIDDEN]; attention is
    ``torch.ops.spava.attention`` over ``layout`` on the group named ``group``, or ``attend``;
    head dimension ``D``."""

    def __init__(self, layout: SpavaLayout, group: str = "", D: int = 8) -> None:
        super().__init__()
        self.layout, self.group, self.D = layout, group, D
        self.norm1, self.norm2 = nn.RMSNorm(HIDDEN), nn.RMSNorm(HIDDEN)
        self.q_proj = nn.Linear(HIDDEN, HQ * D)
        self.kv_proj = nn.Linear(HIDDEN, 2 * HKV * D)
        self.o_proj = nn.Linear(HQ * D, HIDDEN)
        self.mlp = nn.Sequential(nn.Linear(HIDDEN, 2 * HIDDEN), nn.SiLU(),
                                 nn.Linear(2 * HIDDEN, HIDDEN))

    def attend(self, q, k, v):
        lay = self.layout
        return torch.ops.spava.attention(q, k, v, lay.seq_len, lay.anchor_len, lay.query_len,
                                         lay.world_size, lay.passing_len, lay.pool_kernel, None,
                                         self.group, lay.shard_anchor)

    def forward(self, x, attend=None):
        (B, L, _), D = x.shape, self.D
        h = self.norm1(x)
        q = self.q_proj(h).view(B, L, HQ, D)
        k, v = self.kv_proj(h).view(B, L, 2, HKV, D).unbind(2)
        a = (attend or self.attend)(q, k, v)
        x = x + self.o_proj(a.flatten(2))
        return x + self.mlp(self.norm2(x))


def reference_layer(layer: DecoderLayer, x_full: torch.Tensor) -> torch.Tensor:
    """The layer on the full sequence with the reference attention (fp32 math)."""
    return layer(x_full, lambda q, k, v: reference.spava_attention(q, k, v, layer.layout))


def compile_checked(layer: DecoderLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer compiled with inductor and fullgraph=True, run on ``x``; asserts one graph, no
    graph break, and the op as one node of it."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    out = torch.compile(layer, fullgraph=True, backend=counter)(x)
    breaks = dict(torch._dynamo.utils.counters["graph_break"])
    assert counter.frame_count == 1 and not breaks, (counter.frame_count, breaks)
    op = torch.ops.spava.attention
    targets = [n.target for n in counter.graphs[0].graph.nodes if n.op == "call_function"]
    assert sum(t in (op, op.default) for t in targets) == 1, targets
    return out


def make_layer(layout: SpavaLayout, group: str = "", D: int = 8, seed: int = 0) -> DecoderLayer:
    torch.manual_seed(seed)
    return DecoderLayer(layout, group, D).eval()


def layer_input(layout: SpavaLayout, B: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, layout.seq_len, HIDDEN, generator=torch.Generator().manual_seed(seed))


# fp32 on CPU: compiled and eager differ only by inductor's reordering of the fp32 math
FP32 = dict(rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_compiled_layer_w1():
    layout = SpavaLayout(53, 7, 6, 1, 5, 3)
    layer, x = make_layer(layout), layer_input(layout)
    eager = layer(x)
    torch.testing.assert_close(compile_checked(layer, x), eager, **FP32)
    assert_attn_close("layer vs reference", eager, reference_layer(layer, x), eps=1e-4)


def _compiled_rank(rank: int, world: int, layout: SpavaLayout, x_full: torch.Tensor):
    layer = make_layer(layout, group_name(dist.group.WORLD))
    x = layout.shard(x_full, rank)
    with torch.no_grad():
        return layer(x), compile_checked(layer, x)


@pytest.mark.parametrize("shard_anchor", [False, True])
def test_compiled_layer_gloo_ranks(shard_anchor):
    layout = SpavaLayout(71, 5, 6, 2, 3, 3, shard_anchor=shard_anchor)  # anchor slices 3, 2
    x_full = layer_input(layout, B=1)
    results = run_ranks(_compiled_rank, 2, layout, x_full)
    for rank, (eager, compiled) in enumerate(results):
        torch.testing.assert_close(compiled, eager, **FP32, msg=lambda m: f"rank {rank}: {m}")
    with torch.no_grad():
        want = reference_layer(make_layer(layout), x_full)
    assert_attn_close("ranks vs reference", layout.unshard([e for e, _ in results]), want,
                      eps=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("shard_anchor", [False, True])
@torch.no_grad()
def test_compiled_and_cuda_graph_layer_w1(shard_anchor):
    layout = SpavaLayout(1000, 64, 40, 1, 96, 5, shard_anchor=shard_anchor)
    layer = make_layer(layout, D=64).to("cuda", torch.bfloat16)  # the kernels' head dims
    x, x_next = layer_input(layout, seed=1), layer_input(layout, seed=2)
    want = reference_layer(make_layer(layout, D=64), x_next)  # fp32 on the CPU
    lowprec = layer(x_next.cuda().to(torch.bfloat16))

    compiled = compile_checked(layer, x_next.cuda().to(torch.bfloat16))

    static_x = x.cuda().to(torch.bfloat16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (allocations, lazy init)
        for _ in range(2):
            layer(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = layer(static_x)
    static_x.copy_(x_next)
    graph.replay()
    torch.cuda.synchronize()

    for name, got in (("compiled", compiled), ("cuda graph", static_out)):
        assert_attn_close(name, got, want, lowprec, eps=1e-2)
    assert_attn_close("eager", lowprec, want, eps=0.1)
