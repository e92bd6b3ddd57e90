"""spava_ext.trace: set_trace_file raises in builds without traces; in a trace build
(SPAVA_ATTN_TRACE=1, CUDA) attn_fwd and select_passing write their stamps to the file set."""

import pytest
import torch

from spava_ext import ops, trace
from utils import HAS_CUDA, grid_inputs

TRACE_BUILD = ops.build_info()["attn_fwd_trace"]
# common/trace.cuh: attn_fwd's stamps [8, 64, 4, 16] then spans [1024, 16]; select's [1088, 32]
ATTN_WORDS, SPAN_WORDS, SELECT_WORDS = 8 * 64 * 4 * 16, 1024 * 16, 1088 * 32


@pytest.mark.skipif(TRACE_BUILD, reason="a trace build")
def test_set_trace_file_raises_without_traces(tmp_path):
    with pytest.raises(RuntimeError, match="set_trace_file: this build has no traces"):
        trace.set_trace_file(tmp_path / "trace.bin")


def read_words(path) -> torch.Tensor:
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.int64)


@pytest.mark.skipif(not (HAS_CUDA and TRACE_BUILD), reason="needs CUDA and a trace build")
def test_trace_build_writes_the_stamps(tmp_path):
    """attn_fwd: CTA 0's first unit ends after its Q arrived (consumer 0), and every span of a
    CTA that ran ends after it started. select_passing: the qsum CTA 0 of the previous call ends
    after it started."""
    q, k, v = grid_inputs(1, 4096, 8, 2, 128, dtype=torch.bfloat16, seed=1, device="cuda")
    path = tmp_path / "attn.bin"
    with trace.trace_to(path):
        ops.attn_fwd(q, [k], [v], [0], [0])
    words = read_words(path)
    assert words.numel() == ATTN_WORDS + SPAN_WORDS
    stamps = words[:ATTN_WORDS].view(8, 64, 4, 16)
    assert stamps[0, 0, 1, 6] > stamps[0, 0, 1, 0] > 0  # kEvUnitEnd > kEvQFull
    spans = words[ATTN_WORDS:].view(1024, 16)
    ran = spans[:, 1] > 0  # kSpanTime0
    assert ran.any() and (spans[ran, 4] > spans[ran, 1]).all()  # kSpanTimeEnd > kSpanTime0

    qq = q[:, -64:]
    ops.select_passing(qq, k, v, [0, 2048], [2048, 2048], 256, 5)
    path = tmp_path / "select.bin"
    with trace.trace_to(path):
        ops.select_passing(qq, k, v, [0, 2048], [2048, 2048], 256, 5)
    words = read_words(path)
    assert words.numel() == SELECT_WORDS
    rows = words.view(1088, 32)
    assert rows[0, 1] >= rows[0, 0] > 0  # qsum CTA 0: end >= start (%globaltimer)
