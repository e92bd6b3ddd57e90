import pytest
import torch

from spava_ext import SpavaLayout
from spava_ext.layout import LocalSegments


@pytest.mark.parametrize("shard_anchor", [False, True])
@pytest.mark.parametrize("L,a,nq,W,p", [(100, 10, 3, 1, 4), (257, 0, 1, 3, 5), (31, 7, 2, 4, None),
                                         (50, 0, 50, 2, 3), (1000, 128, 17, 8, 64),
                                         (60, 3, 2, 5, 4), (90, 11, 4, 4, 6)])
def test_partition_and_shard_roundtrip(L, a, nq, W, p, shard_anchor):
    lay = SpavaLayout(L, a, nq, W, p, shard_anchor=shard_anchor)
    assert sum(lay.chunk_sizes) == L - a - nq
    assert max(lay.chunk_sizes) - min(lay.chunk_sizes) <= 1
    # chunks tile [a, L - nq) in order
    assert lay.chunk_starts[0] == a
    for i in range(1, lay.num_chunks):
        assert lay.chunk_starts[i] == lay.chunk_bounds(i - 1)[1]
    segs = [lay.local_segments(r) for r in range(W)]
    covered = torch.cat([lay.local_indices(r)[s.chunk1_start: s.question_start]
                         for r, s in enumerate(segs)])
    assert sorted(covered.tolist()) == list(range(a, L - nq))
    # the anchor rows: all of them on every rank, or each anchor row on exactly one rank
    anchors = [lay.local_indices(r)[: s.anchor].tolist() for r, s in enumerate(segs)]
    if shard_anchor:
        assert sum(anchors, []) == list(range(a))
        assert anchors == [list(range(*lay.anchor_slice(r))) for r in range(W)]
        assert sum(lay.local_len(r) for r in range(W)) == L + (W - 1) * nq
    else:
        assert anchors == [list(range(a))] * W
    x = torch.randn(2, L, 3)
    parts = [lay.shard(x, r) for r in range(W)]
    for r, part in enumerate(parts):
        assert part.shape[1] == lay.local_len(r)
        assert torch.equal(part, x[:, lay.local_indices(r)])
    assert torch.equal(lay.unshard(parts), x)
    # M-RoPE style [3, B, L] positions shard along dim 2
    pos = torch.arange(L).expand(3, 2, L)
    assert torch.equal(lay.unshard([lay.shard(pos, r, dim=2) for r in range(W)], dim=2), pos)


def test_zigzag_local_order():
    lay = SpavaLayout(2 + 16 + 1, 2, 1, 4, 1)
    assert lay.rank_chunks(1) == (1, 6)
    idx = lay.local_indices(1).tolist()
    assert idx == [0, 1, 4, 5, 14, 15, 18]  # anchor | C1 | C6 | question


@pytest.mark.parametrize("a,W,sizes", [(13, 4, [4, 4, 4, 1]), (5, 4, [2, 2, 1, 0]),
                                        (3, 5, [1, 1, 1, 0, 0]), (0, 3, [0, 0, 0]),
                                        (2048, 8, [256] * 8)])
def test_anchor_slices_partition_anchor(a, W, sizes):
    """ceil(a / W) rows per slice from the start (the last ones shorter or empty): the slices
    tile the anchor, and gathered into ceil(a / W)-row parts they read as one contiguous run;
    the largest slice is as small as a balanced split's."""
    for shard_anchor in (False, True):
        lay = SpavaLayout(a + 40, a, 2, W, 8, shard_anchor=shard_anchor)
        spans = [lay.anchor_slice(r) for r in range(W)]
        assert [e - s for s, e in spans] == sizes == lay.anchor_sizes
        assert spans[0][0] == 0 and spans[-1][1] == a
        assert all(spans[i][1] == spans[i + 1][0] for i in range(W - 1))
        assert all(s == min(a, r * lay.anchor_cap) for r, (s, _) in enumerate(spans))
        assert lay.anchor_cap == max(sizes) == -(-a // W)
        local = [lay.local_anchor_slice(r) for r in range(W)]
        assert local == ([(0, n) for n in sizes] if shard_anchor else spans)


def test_sharded_anchor_local_order_and_identity():
    lay = SpavaLayout(5 + 16 + 1, 5, 1, 4, 1, shard_anchor=True)
    assert lay.local_indices(1).tolist() == [2, 3, 7, 8, 17, 18, 21]  # A_1 | C1 | C6 | question
    assert lay.local_indices(3).tolist() == [11, 12, 13, 14, 21]  # empty A_3
    assert lay.local_segments(2) == LocalSegments(1, 2, 2, 1)
    replicated = SpavaLayout(22, 5, 1, 4, 1)
    assert lay != replicated and hash(lay) != hash(replicated)
    assert lay == SpavaLayout(22, 5, 1, 4, 1, 5, True)
    assert SpavaLayout.auto(22, 1, 4, shard_anchor=True).shard_anchor
    assert "anchor sharded, slices of 2" in repr(lay) and "anchor sharded" not in repr(replicated)
    assert "rank 1: anchor (2, 4) |" in lay.describe()
    with pytest.raises(ValueError, match="shard_anchor must be a bool, got 1"):
        SpavaLayout(22, 5, 1, 4, 1, shard_anchor=1)


def test_passing_sizes_and_exact():
    lay = SpavaLayout(10 + 7 + 1, 0, 1, 2, 3)  # 17 context tokens, chunks 5,4,4,4
    assert lay.chunk_sizes == [5, 4, 4, 4]
    assert lay.passing_sizes == [3, 3, 3, 3] and lay.passing_cap == 3 and not lay.exact
    lay = SpavaLayout(18, 0, 1, 2, 4)
    assert lay.passing_sizes == [4, 4, 4, 4] and not lay.exact  # C0 has 5 > 4
    assert SpavaLayout(18, 0, 1, 2, 5).exact and SpavaLayout(18, 0, 1, 2, None).exact
    assert SpavaLayout(10, 9, 1, 2, 3).passing_cap == 0  # no context at all


def test_auto_defaults_match_paper():
    lay = SpavaLayout.auto(131072 + 64, 64, 8)
    assert lay.anchor_len == 2048 and lay.passing_len == 1024
    assert lay.chunk_sizes == [8064] * 16
    small = SpavaLayout.auto(100, 10, 2)
    assert small.anchor_len <= 90 and small.passing_len == 128


@pytest.mark.parametrize("kwargs,needle", [
    (dict(seq_len=10, anchor_len=8, query_len=3, world_size=1, passing_len=2), "exceeds"),
    (dict(seq_len=10, anchor_len=0, query_len=0, world_size=1, passing_len=2), "query_len"),
    (dict(seq_len=10, anchor_len=0, query_len=1, world_size=0, passing_len=2), "world_size"),
    (dict(seq_len=10, anchor_len=0, query_len=1, world_size=1, passing_len=0), "passing_len"),
    (dict(seq_len=10, anchor_len=-1, query_len=1, world_size=1, passing_len=2), "anchor_len"),
    (dict(seq_len=10, anchor_len=0, query_len=1, world_size=1, passing_len=2, pool_kernel=4),
     "pool_kernel"),
    (dict(seq_len=10.0, anchor_len=0, query_len=1, world_size=1, passing_len=2), "seq_len"),
])
def test_invalid_arguments_name_the_value(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SpavaLayout(**kwargs)


def test_shard_errors():
    lay = SpavaLayout(20, 2, 2, 2, 3)
    with pytest.raises(ValueError, match="seq_len"):
        lay.shard(torch.zeros(1, 19), 0)
    with pytest.raises(ValueError, match="rank"):
        lay.shard(torch.zeros(1, 20), 2)
    with pytest.raises(ValueError, match="parts"):
        lay.unshard([torch.zeros(1, lay.local_len(0))])


def test_numpy_and_torch_integers_are_ints():
    np = pytest.importorskip("numpy")
    lay = SpavaLayout(np.int64(100), np.int32(10), torch.tensor(3),
                      torch.tensor(2, dtype=torch.int8), np.uint16(4), pool_kernel=np.int64(3))
    assert lay == SpavaLayout(100, 10, 3, 2, 4, pool_kernel=3)
    assert all(type(x) is int for x in (lay.seq_len, lay.anchor_len, lay.query_len,
                                        lay.world_size, lay.passing_len, lay.pool_kernel))
    assert lay.local_len(np.int64(1)) == lay.local_len(1)
    assert lay.chunk_bounds(torch.tensor(3)) == lay.chunk_bounds(3)
    assert torch.equal(lay.shard(torch.arange(100)[None], np.int32(1)),
                       lay.shard(torch.arange(100)[None], 1))
    assert SpavaLayout.auto(np.int64(1000), torch.tensor(10), np.int64(2)) == \
        SpavaLayout.auto(1000, 10, 2)


@pytest.mark.parametrize("value", [True, 3.0, torch.tensor(3.0), torch.tensor([3]),
                                   torch.tensor(True), "3", None])
def test_non_integers_are_rejected(value):
    with pytest.raises(ValueError, match=r"SpavaLayout: seq_len must be an integer, got "):
        SpavaLayout(value, 0, 1, 1, 2)


def test_sizes_that_do_not_fit_name_the_field():
    from spava_ext.layout import MAX_WORLD_SIZE

    with pytest.raises(ValueError, match=rf"world_size = {10**9} exceeds the supported maximum "
                                         rf"{MAX_WORLD_SIZE}"):
        SpavaLayout(100, 0, 1, 10**9, 2)
    assert SpavaLayout(100, 0, 1, MAX_WORLD_SIZE, 2).num_chunks == 2 * MAX_WORLD_SIZE
    with pytest.raises(ValueError, match=rf"seq_len = {2**63} does not fit in int64"):
        SpavaLayout(2**63, 0, 1, 1, 2)
    with pytest.raises(ValueError, match=rf"passing_len = {2**64} does not fit in int64"):
        SpavaLayout(100, 0, 1, 1, 2**64)
    with pytest.raises(ValueError, match=r"SpavaLayout: rank tensor\(2\) not in \[0, 2\)"):
        SpavaLayout(100, 0, 1, 2, 2).local_len(torch.tensor(2))
    with pytest.raises(ValueError, match=r"chunk_bounds: chunk must be >= 0, got -1"):
        SpavaLayout(100, 0, 1, 2, 2).chunk_bounds(-1)


@pytest.mark.parametrize("heads,message", [
    ((4, 0, 8), "Hkv \\(kv heads\\) must be >= 1, got 0"),
    ((0, 2, 8), "Hq \\(query heads\\) must be >= 1, got 0"),
    ((4, 2, 0), "D \\(head dim\\) must be >= 1, got 0"),
    ((6, 4, 8), "Hq = 6 query heads is not a multiple of Hkv = 4 kv heads"),
    ((4.0, 2, 8), "Hq \\(query heads\\) must be an integer, got 4.0"),
])
def test_check_heads(heads, message):
    from spava_ext.layout import check_heads

    assert check_heads("call", 28, 4, 128) == (28, 4, 128) and check_heads("c", 8, 8) == (8, 8)
    with pytest.raises(ValueError, match="^call: " + message):
        check_heads("call", *heads)
