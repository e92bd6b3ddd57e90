"""PEP 517 build backend: setuptools' own, plus the build requirements that depend on the machine.

pyproject.toml's [build-system].requires holds the fixed ones (setuptools, cmake, ninja). For an
isolated build (`pip install .`, `pip wheel .`, `pip install <sdist>`, `python -m build`) this adds:

* torch, pinned to the release installed in the environment that pip installs into (any torch
  >= 2.11 builds a wheel that runs under all of them, as it uses torch's stable ABI: this one
  spares a second download), or, where that has no torch, to the tested release of
  requirements-torch.txt.
  SPAVA_BUILD_TORCH (a requirement, e.g. "torch==2.15.0") overrides both.
* nvidia-cutlass, for the CUTLASS / CuTe headers of the CUDA kernels, when the build may compile
  them (nvcc under CUDA_HOME or /usr/local/cuda, or SPAVA_WITH_CUDA=1; never with
  SPAVA_WITH_CUDA=0), unless SPAVA_CUTLASS_INCLUDE_DIR names the headers. Its own requirements
  (numpy, scipy, cuda-python, networkx, pydot, treelib) land in the temporary build environment.

With --no-build-isolation none of this runs: the build uses the environment as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook unchanged)

ROOT = Path(__file__).resolve().parent.parent
CUTLASS = "nvidia-cutlass==4.2.0.0"


def cuda_home() -> Optional[Path]:
    home = os.environ.get("CUDA_HOME")
    if not home and Path("/usr/local/cuda").exists():
        home = "/usr/local/cuda"
    return Path(home) if home else None


def cuda_requested() -> Optional[bool]:
    """SPAVA_WITH_CUDA as a bool, None when unset (then setup.py decides from torch and nvcc)."""
    flag = os.environ.get("SPAVA_WITH_CUDA")
    return None if flag is None else flag not in ("0", "", "false", "OFF")


def nvcc_found() -> bool:
    home = cuda_home()
    return home is not None and (home / "bin" / "nvcc").exists()


def installed_torch() -> Optional[str]:
    """torch's version in the environment of the interpreter running the frontend (pip runs the
    hooks with it, the build environment put first on its path by PYTHONPATH), or None."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    probe = "import importlib.metadata as m; print(m.version('torch'))"
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    return run.stdout.strip() if run.returncode == 0 else None


def tested_torch() -> str:
    lines = (ROOT / "requirements-torch.txt").read_text().split()
    return next(line for line in lines if line.startswith("torch=="))


def torch_requirement() -> str:
    if os.environ.get("SPAVA_BUILD_TORCH"):
        return os.environ["SPAVA_BUILD_TORCH"]
    version = installed_torch()
    return f"torch=={version}" if version else tested_torch()


def machine_requirements() -> list[str]:
    reqs = [torch_requirement()]
    cuda = cuda_requested()
    cuda = cuda if cuda is not None else nvcc_found()
    if cuda and not os.environ.get("SPAVA_CUTLASS_INCLUDE_DIR"):
        reqs.append(CUTLASS)
    print(f"spava: build requirements for this machine: {', '.join(reqs)}", flush=True)
    return reqs


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + machine_requirements()


def get_requires_for_build_editable(config_settings=None):
    return _setuptools.get_requires_for_build_editable(config_settings) + machine_requirements()
