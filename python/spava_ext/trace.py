"""Kernel traces of a trace build (``SPAVA_ATTN_TRACE=1``): where the kernel launches write them.

The stamps are described in csrc/kernels/common/trace.cuh; benchmarks/attn_trace.py and
benchmarks/select_trace.py read them back. In a build without traces both functions raise.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional, Union

import torch

from . import _C, envs  # noqa: F401  (_C loads the library and its schemas)

__all__ = ["set_trace_file", "trace_to"]


def set_trace_file(path: Optional[Union[str, os.PathLike]]) -> None:
    """Launches that follow write their raw uint64 stamps to ``path`` (``None`` or ``""``: no
    trace): each attn_fwd launch waits for its kernel and writes that kernel's trace; each
    select_passing call first waits for the stream and writes the stamps of the previous call of
    its dtype."""
    torch.ops.spava.set_trace_file(os.fspath(path) if path else "")


@contextmanager
def trace_to(path: Union[str, os.PathLike]) -> Iterator[None]:
    """``set_trace_file(path)`` for the ``with`` block, then no trace."""
    set_trace_file(path)
    try:
        yield
    finally:
        set_trace_file(None)


if envs.trace_file():  # SPAVA_TRACE_FILE: trace every launch of the process to that file
    set_trace_file(envs.trace_file())
