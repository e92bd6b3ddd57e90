"""Loads spava_ext._C after checking that it can run under the running torch.

_C uses only torch's stable ABI as of the oldest torch supported (OLDEST_TORCH in
_build_config.py, TORCH_TARGET_VERSION in cmake/torch.cmake): it loads under that torch release
and every later one, whichever it was built against, and, when it holds the CUDA kernels, only
under a CUDA build of torch of the same CUDA major version. The build writes _build_config.py
next to _C (from cmake/build_config.py.in); a mismatch is reported here by name, instead of as
an undefined symbol or a missing libtorch_cuda.so.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

REBUILD = ("rebuild spava_ext for the running torch from a source checkout: "
           "`pip install --no-build-isolation --force-reinstall --no-deps .` (or `make install`)")

NOT_BUILT = ("spava_ext: the compiled extension spava_ext._C is not built. Install the package "
             "with `pip install .` (or `make install`) from a source checkout; for development "
             "in place, `python setup.py build_ext --inplace`.")


def _minor(version: str) -> str:
    """'2.14.1+cpu' -> '2.14'."""
    return ".".join(version.split("+")[0].split(".")[:2])


def _describe(version: str, cuda: Optional[str]) -> str:
    return f"torch {version} ({f'CUDA {cuda}' if cuda else 'CPU-only'})"


def _release(version: str) -> tuple[int, int]:
    """'2.14.1+cpu' -> (2, 14)."""
    major, minor = _minor(version).split(".")
    return int(major), int(minor)


def mismatch(built_torch: str, built_cuda: str, with_cuda: bool, oldest_torch: str,
             torch_version: str, torch_cuda: Optional[str]) -> Optional[str]:
    """Why a _C built against torch ``built_torch`` (CUDA ``built_cuda``, "" for a CPU-only torch;
    ``with_cuda``: CUDA kernels compiled in; ``oldest_torch``: the stable ABI release it targets)
    cannot load under torch ``torch_version`` (CUDA ``torch_cuda``, None for a CPU-only torch),
    or None when it can."""
    built, running = _describe(built_torch, built_cuda), _describe(torch_version, torch_cuda)
    head = f"spava_ext was built against {built} but runs under {running}"
    if _release(torch_version) < _release(oldest_torch):
        return f"{head}: it needs torch >= {oldest_torch}: `pip install 'torch>={oldest_torch}'`"
    if with_cuda and not torch_cuda:
        return (f"{head}, and its CUDA kernels need a CUDA build of torch: install one, e.g. "
                f"`pip install torch=={built_torch.split('+')[0]}` from PyPI, or {REBUILD}")
    if with_cuda and built_cuda.split(".")[0] != torch_cuda.split(".")[0]:
        return (f"{head}: its CUDA kernels need a torch built for CUDA "
                f"{built_cuda.split('.')[0]}.x, or {REBUILD}")
    return None


def load_extension():
    """Import and return spava_ext._C, raising ImportError with the remedy when it cannot load."""
    try:
        built = importlib.import_module(f"{__package__}._build_config")
    except ModuleNotFoundError:
        raise ImportError(NOT_BUILT) from None
    # builds from before the stable ABI record no OLDEST_TORCH: they need their own release
    oldest = getattr(built, "OLDEST_TORCH", _minor(built.TORCH_VERSION))
    problem = mismatch(built.TORCH_VERSION, built.TORCH_CUDA, built.WITH_CUDA, oldest,
                       torch.__version__, torch.version.cuda)
    if problem:
        raise ImportError(problem)
    try:
        return importlib.import_module(f"{__package__}._C")
    except ModuleNotFoundError:
        raise ImportError(NOT_BUILT) from None
    except ImportError as e:
        raise ImportError(f"spava_ext: cannot load spava_ext._C, built against "
                          f"{_describe(built.TORCH_VERSION, built.TORCH_CUDA)}: {e}. "
                          f"Reinstall it, or {REBUILD}") from e


_C = load_extension()
