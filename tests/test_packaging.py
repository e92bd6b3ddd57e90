"""Packaging: the installed extension loads, registers every op and computes; a mismatched or
missing build fails with a clear message. With SPAVA_WHEEL set (scripts/wheel_smoke.sh, in a fresh
venv where that wheel is installed) also the wheel's tag, metadata and version."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from utils import assert_attn_close, randn_inputs

import spava_ext
from spava_ext import SpavaLayout, _build_config, reference
from spava_ext._load import mismatch

OPS = ["select_passing", "attn_fwd", "attn_fwd_group", "merge_states", "wait_flag", "set_flag",
       "quantize_fp8"]
PACKAGE = Path(spava_ext.__file__).parent
WHEEL = os.environ.get("SPAVA_WHEEL")
needs_wheel = pytest.mark.skipif(not WHEEL, reason="SPAVA_WHEEL not set (scripts/wheel_smoke.sh)")


@pytest.mark.parametrize("name", OPS)
def test_op_registered(name):
    assert isinstance(getattr(torch.ops.spava, name), torch._ops.OpOverloadPacket)


def test_spava_attention_w1_equals_reference():
    L, a, nq, Hq, Hkv, D = 53, 7, 3, 4, 2, 24  # irregular: 43 context tokens in chunks 22, 21
    layout = SpavaLayout(L, a, nq, 1, 5)
    q, k, v = randn_inputs(2, L, Hq, Hkv, D, seed=3)
    out = spava_ext.spava_attention(*[layout.shard(t, 0) for t in (q, k, v)], layout)
    assert_attn_close("spava_attention W=1", layout.unshard([out]), reference.spava_attention(
        q, k, v, layout))


def test_no_runpath():
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf not found")
    dynamic = subprocess.run([readelf, "-d", spava_ext._load._C.__file__], capture_output=True,
                             text=True, check=True).stdout
    assert "NEEDED" in dynamic and "PATH" not in dynamic, dynamic


def test_only_stable_abi_and_limited_api():
    """_C is one module for every CPython (abi3) and calls torch only through the stable ABI's C
    shims: no C++ symbol of torch's (c10::, at::, torch::) is imported, no libc10 linked."""
    so = Path(spava_ext._load._C.__file__)
    assert so.name == "_C.abi3.so", so
    nm, readelf = shutil.which("nm"), shutil.which("readelf")
    if nm is None or readelf is None:
        pytest.skip("nm / readelf not found")
    undefined = subprocess.run([nm, "-D", "--undefined-only", str(so)], capture_output=True,
                               text=True, check=True).stdout.split()
    unstable = [sym for sym in undefined if sym.startswith(("_ZN3c10", "_ZN2at", "_ZN5torch"))]
    assert not unstable, unstable
    dynamic = subprocess.run([readelf, "-d", str(so)], capture_output=True, text=True,
                             check=True).stdout
    assert "libc10" not in dynamic and "libtorch_python" not in dynamic, dynamic


@pytest.mark.parametrize("built, running, expected", [
    (("2.14.1", "13.0", True, "2.11"), ("2.14.1", "13.0"), None),
    (("2.14.1", "13.0", True, "2.11"), ("2.14.0+cu130", "13.2"), None),
    (("2.14.1+cpu", "", False, "2.11"), ("2.14.1", "13.0"), None),
    (("2.14.1", "", False, "2.11"), ("2.14.1+cpu", None), None),
    # the stable ABI: later and earlier releases down to the targeted one load
    (("2.14.1", "13.0", True, "2.11"), ("2.15.0", "13.0"), None),
    (("2.14.1", "13.0", False, "2.11"), ("2.11.0+cpu", None), None),
    (("2.14.1", "13.0", True, "2.11"), ("2.10.0", "13.0"),
     ["torch 2.14.1 (CUDA 13.0)", "torch 2.10.0 (CUDA 13.0)", "needs torch >= 2.11",
      "pip install 'torch>=2.11'"]),
    (("2.14.1", "13.0", True, "2.11"), ("2.14.1+cpu", None),
     ["torch 2.14.1+cpu (CPU-only)", "need a CUDA build of torch", "pip install torch==2.14.1",
      "rebuild spava_ext"]),
    (("2.14.1", "12.8", True, "2.11"), ("2.14.1", "13.0"),
     ["CUDA 12.8", "CUDA 13.0", "CUDA 12.x", "rebuild spava_ext"]),
])
def test_mismatch_message(built, running, expected):
    problem = mismatch(*built, *running)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        for part in expected:
            assert part in problem, problem


def _import_copy(tmp_path, config: str = None, prelude: str = "") -> subprocess.CompletedProcess:
    """`import spava_ext` from a copy of the package: without _C and _build_config.py, or with
    _C and the given _build_config.py text."""
    copy = tmp_path / "spava_ext"
    left_out = ["__pycache__", "_build_config.py"] + (["*.so"] if config is None else [])
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns(*left_out))
    if config is not None:
        (copy / "_build_config.py").write_text(config)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return subprocess.run([sys.executable, "-c", f"{prelude}import spava_ext"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)


def test_import_without_build_says_how_to_build(tmp_path):
    run = _import_copy(tmp_path)
    assert run.returncode != 0
    assert "spava_ext._C is not built" in run.stderr and "pip install ." in run.stderr, run.stderr
    assert "circular import" not in run.stderr


def test_cuda_build_under_cpu_only_torch_is_refused(tmp_path):
    version = torch.__version__.split("+")[0]
    config = (f'TORCH_VERSION = "{version}"\nTORCH_CUDA = "13.0"\nOLDEST_TORCH = "2.11"\n'
              'WITH_CUDA = True\n')
    run = _import_copy(tmp_path, config, prelude="import torch; torch.version.cuda = None; ")
    assert run.returncode != 0
    assert f"built against torch {version} (CUDA 13.0)" in run.stderr, run.stderr
    assert "need a CUDA build of torch" in run.stderr, run.stderr


@needs_wheel
def test_wheel_installed_not_the_source_tree():
    assert Path(sys.prefix) in PACKAGE.parents, PACKAGE


@needs_wheel
def test_wheel_tag_version_and_metadata():
    name = Path(WHEEL).name
    # one wheel for every CPython >= 3.10 (the limited API) and torch >= OLDEST_TORCH
    assert "-cp310-abi3-manylinux_" in name and name.endswith("_x86_64.whl"), name
    assert name.startswith(f"spava_ext-{spava_ext.__version__}-"), name
    assert importlib.metadata.version("spava_ext") == spava_ext.__version__
    with zipfile.ZipFile(WHEEL) as whl:
        meta = whl.read(f"spava_ext-{spava_ext.__version__}.dist-info/METADATA").decode()
    torch_req = next(line for line in meta.splitlines() if line.startswith("Requires-Dist: torch"))
    assert torch_req == f"Requires-Dist: torch>={_build_config.OLDEST_TORCH}", torch_req
    for extra in ("video", "bench"):
        assert f"Provides-Extra: {extra}" in meta
    assert 'Requires-Dist: av>=18; extra == "video"' in meta
