"""Property-based fuzz of every op's arguments (int64 extremes, negatives, empty and mismatched
sizes, strided views): each case is a clear error naming the op or a result equal to
spava_ext.reference (tests/fuzz_cases.py). The CUDA half runs the same cases on the GPU; a
seeded corpus of them runs under compute-sanitizer (scripts/sanitize_case.py fuzz)."""

import pytest
import torch

from fuzz_cases import CASES, Pick

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


class DrawPick(Pick):
    """Choices drawn by hypothesis (shrinks to small values and the first list entries)."""

    def __init__(self, data):
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", sorted(CASES))
def test_fuzz_op(op, device):
    @hypothesis.settings(max_examples=150, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.data())
    def run(data):
        torch.manual_seed(data.draw(st.integers(0, 2**32 - 1)))  # tensor values replay too
        CASES[op](DrawPick(data), device)

    run()
