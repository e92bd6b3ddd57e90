"""CUDA-graph prefills (spava_ext.graphs): replayed prefills give the eager tokens, one capture
per shape, eviction, the KV cache rewound; argument errors on the CPU."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import spava_ext  # noqa: E402
from spava_ext import SpavaKVCache, SpavaLayout  # noqa: E402
from spava_ext.graphs import PrefillGraphs, shape_key  # noqa: E402

VOCAB, NQ, NEW = 96, 10, 6


def tiny_model(device):
    """Qwen2 with head dim 64 (a head dim the CUDA kernels are built for), bf16 on CUDA."""
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=128, intermediate_size=256,
                                   num_hidden_layers=3, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=4096)
    model = transformers.Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # a sharp head: greedy decoding without near-ties
        model.lm_head.weight.mul_(40)
    return model.to(device=device, dtype=torch.bfloat16).eval()


def prompt(length: int, seed: int, device) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, VOCAB, (1, length), generator=g).to(device)}


def generate(model, inputs, graphs=None, passing_len=24):
    return spava_ext.generate(model, inputs, max_new_tokens=NEW, passing_len=passing_len,
                              anchor_len=32, query_len=NQ, stop_token_ids=[],
                              prefill_graphs=graphs)


@pytest.mark.cuda
@pytest.mark.parametrize("passing_len", [24, None])
def test_replayed_prefill_generates_the_eager_tokens(passing_len):
    model = tiny_model("cuda")
    graphs = PrefillGraphs(max_entries=1)
    for seed in (1, 2):  # two prompts of one shape: captured once, the second one replayed
        inputs = prompt(1000, seed, "cuda")
        want = generate(model, inputs, passing_len=passing_len)
        got = generate(model, inputs, graphs, passing_len=passing_len)
        assert torch.equal(got, want), (seed, got, want)
    assert graphs.captures == 1 and len(graphs) == 1
    inputs = prompt(777, 3, "cuda")  # a new shape: captured, the old entry evicted
    assert torch.equal(generate(model, inputs, graphs, passing_len=passing_len),
                       generate(model, inputs, passing_len=passing_len))
    assert graphs.captures == 2 and len(graphs) == 1


@pytest.mark.cuda
def test_replay_reads_the_new_inputs_and_rewinds_the_cache():
    model = tiny_model("cuda")
    graphs = PrefillGraphs()
    first, second = prompt(900, 4, "cuda"), prompt(900, 5, "cuda")
    generate(model, first, graphs)
    # the replay must not answer the first prompt again, nor see its generated tokens
    assert torch.equal(generate(model, second, graphs), generate(model, second))
    assert torch.equal(generate(model, first, graphs), generate(model, first))


def test_prefill_graphs_errors():
    with pytest.raises(ValueError, match="max_entries must be an integer >= 1"):
        PrefillGraphs(max_entries=0)
    with pytest.raises(ValueError, match="need the inputs on a CUDA device"):
        PrefillGraphs().run("k", lambda x, c: x, {"x": torch.ones(2)}, lambda: None)
    model = tiny_model("cpu").float()
    with pytest.raises(ValueError, match="not both"):
        spava_ext.generate(model, prompt(200, 1, "cpu"), max_new_tokens=2, query_len=NQ,
                           prefill_graphs=PrefillGraphs(), on_layer=lambda layer: None)


def test_shape_key_tells_shapes_dtypes_and_values_apart():
    a = {"x": torch.zeros(2, 3), "n": 4}
    assert shape_key(a) == shape_key({"x": torch.ones(2, 3), "n": 4})
    assert shape_key(a) != shape_key({"x": torch.zeros(3, 2), "n": 4})
    assert shape_key(a) != shape_key({"x": torch.zeros(2, 3, dtype=torch.half), "n": 4})
    assert shape_key(a) != shape_key({"x": torch.zeros(2, 3), "n": 5})


def test_rewind_keeps_the_prefill_rows_only():
    layout = SpavaLayout(300, 16, 10, 1, 20)
    cache = SpavaKVCache(layout, 0, 2, 1, 1, 8, torch.float32, "cpu", max_new_tokens=4)
    k = torch.randn(1, layout.local_len(0), 1, 8)
    cache.store_prefill(0, k, k)
    cache.append(0, torch.ones(1, 3, 1, 8), torch.ones(1, 3, 1, 8))
    assert cache.lengths == [cache.prefill_len + 3, 0]
    cache.rewind()
    assert cache.lengths == [cache.prefill_len, 0]
    assert torch.equal(cache.layer_kv(0)[0], k[:, : cache.prefill_len])


@pytest.mark.cuda
@pytest.mark.parametrize("passing_len", [24, None])
def test_graphed_decode_generates_the_eager_tokens(passing_len):
    model = tiny_model("cuda")
    inputs = prompt(1000, 6, "cuda")
    want = generate(model, inputs, passing_len=passing_len)
    got = spava_ext.generate(model, inputs, max_new_tokens=NEW, passing_len=passing_len,
                             anchor_len=32, query_len=NQ, stop_token_ids=[], decode_graphs=True,
                             prefill_graphs=PrefillGraphs())
    assert torch.equal(got, want), (got, want)


@pytest.mark.parametrize("rank", [0, 1])
def test_graph_decode_attention_equals_the_eager_decode(rank):
    """The capturable decode attention (device-side step) against decode_attention_comm over
    several steps, on rank 0 (whose cache grows) and rank 1 of a simulated W = 3."""
    from spava_ext.comm import SimulatedComm
    from spava_ext.decode import decode_attention_comm
    from spava_ext.decode_graph import graph_decode_attention

    torch.manual_seed(rank)
    layout = SpavaLayout(400, 20, 9, 3, 16)
    B, Hq, Hkv, D, steps = 2, 6, 2, 16, 4
    caches = [SpavaKVCache(layout, rank, 1, B, Hkv, D, torch.float32, "cpu", steps)
              for _ in range(2)]
    k = torch.randn(B, layout.local_len(rank), Hkv, D)
    v = torch.randn_like(k)
    for c in caches:
        c.store_prefill(0, k, v)
    caches[1].k[0, :, caches[1].prefill_len :] = float("nan")  # unwritten rows: anything
    caches[1].v[0, :, caches[1].prefill_len :] = float("nan")
    comm = SimulatedComm(rank, 3)
    for step in range(steps):
        q = torch.randn(B, 1, Hq, D)
        kn, vn = torch.randn(B, 1, Hkv, D), torch.randn(B, 1, Hkv, D)
        want = decode_attention_comm(q, kn, vn, caches[0], 0, comm, 0.3)
        got = graph_decode_attention(q, kn, vn, caches[1], 0, comm, 0.3, torch.tensor(step))
        torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-6)
    if rank == 0:  # the new rows landed where the eager cache appended them
        n = caches[0].lengths[0]
        torch.testing.assert_close(caches[1].k[0, :, :n], caches[0].k[0, :, :n])
