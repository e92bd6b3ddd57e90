"""Registration checks for every op: schema, fake kernel, autograd registration, torch.compile."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from spava_ext import SpavaLayout, attention_op, ops, spava_attention
from spava_ext.comm import GroupComm
from utils import DEVICES, randn_inputs


def op_args(name: str, device: str):
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    D = 16 if device == "cpu" else 64
    q, k, v = randn_inputs(2, 24, 4, 2, D, dtype=dtype, device=device)
    if name == "attn_fwd":
        out = torch.empty_like(q)
        lse = torch.empty(2, 4, 24, device=device)
        return (q, [k[:, :5], k[:, 5:]], [v[:, :5], v[:, 5:]], [3, 0], [ops.FULL, 0], None, out,
                lse)
    if name == "select_passing":
        idx = torch.empty(2, 2, 2, 4, dtype=torch.long, device=device)
        kv = torch.empty(2, 4, 2, 2, 2, D, dtype=dtype, device=device)
        return (q[:, -3:], k, v, [0, 10], [10, 11], 4, 5, idx, kv)
    if name == "merge_states":
        outs = torch.randn(3, 2, 5, 4, D, device=device)
        lses = torch.randn(3, 2, 4, 5, device=device)
        return (outs, lses, torch.empty(2, 5, 4, D, device=device, dtype=dtype),
                torch.empty(2, 4, 5, device=device))
    raise KeyError(name)


OPS = ["attn_fwd", "select_passing", "merge_states"]


def available(name, device):
    return device == "cpu" or name in ops.build_info()["cuda_ops"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPS)
def test_opcheck(name, device):
    if not available(name, device):
        pytest.skip(f"no CUDA kernel for {name}")
    torch.library.opcheck(getattr(torch.ops.spava, name).default, op_args(name, device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPS)
def test_compile_fullgraph_matches_eager(name, device):
    if not available(name, device):
        pytest.skip(f"no CUDA kernel for {name}")
    op = getattr(torch.ops.spava, name).default
    args = op_args(name, device)
    eager = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    op(*eager)

    def fn(*a):
        op(*a)
        return [t * 1 for t in a if isinstance(t, torch.Tensor) and t.dtype != torch.long][-2:]

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = compiled(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    want = [t for t in eager if isinstance(t, torch.Tensor) and t.dtype != torch.long][-2:]
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def attention_args(device: str, requires_grad: bool = False):
    """Arguments of spava.attention at W = 1 (a single process, group "")."""
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    D = 16 if device == "cpu" else 64
    q, k, v = randn_inputs(2, 45, 4, 2, D, dtype=dtype, device=device)
    q, k, v = (t.requires_grad_(requires_grad) for t in (q, k, v))
    return (q, k, v, 45, 6, 5, 1, 4, 3, None, "")


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_attention(device):
    """Inference-only: no input requires grad (a backward through the op raises, see below)."""
    torch.library.opcheck(torch.ops.spava.attention.default, attention_args(device))


@pytest.mark.parametrize("device", DEVICES)
def test_attention_op_is_spava_attention(device):
    q, k, v, *layout_args, scale, group = attention_args(device)
    layout = SpavaLayout(*layout_args)
    got = torch.ops.spava.attention(q, k, v, *layout_args, scale, group)
    assert torch.equal(got, spava_attention(q, k, v, layout))
    assert torch.equal(attention_op.attention(q, k, v, layout), got)


def test_attention_op_is_inference_only():
    out = torch.ops.spava.attention(*attention_args("cpu", requires_grad=True))
    with pytest.raises(RuntimeError, match="no autograd formula"):
        out.sum().backward()


def test_attention_op_unknown_group():
    with pytest.raises(ValueError, match="group_name 'tp' given but torch.distributed"):
        torch.ops.spava.attention(*attention_args("cpu")[:-1], "tp")


class _OpsSeen(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("shared", [True, False])
def test_attention_comm_uses_the_op_on_a_shared_group_comm(shared):
    """attention_comm goes through the op exactly when the op would run on the same
    communicator (GroupComm.of(group)); a communicator of its own takes the direct path."""
    q, k, v, *layout_args, scale, _ = attention_args("cpu")
    layout = SpavaLayout(*layout_args)
    comm = GroupComm.of(None) if shared else GroupComm(None)
    with _OpsSeen() as mode:
        got = attention_op.attention_comm(q, k, v, layout, comm)
    assert (torch.ops.spava.attention.default in mode.seen) == shared
    assert torch.equal(got, spava_attention(q, k, v, layout))
