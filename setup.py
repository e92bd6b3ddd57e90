"""Build driver: setuptools packages python/spava_ext and runs CMake for spava_ext._C.

    pip install --no-build-isolation -e .      (or without -e)

Environment (all optional, read here only):
    SPAVA_WITH_CUDA=0|1          force the CUDA kernels off/on (default: on when torch is a CUDA
                                 build and nvcc is found under CUDA_HOME)
    CUDA_HOME                    CUDA toolkit root (default /usr/local/cuda when it exists)
    SPAVA_CUDA_ARCHS             archs for arch-generic kernels, e.g. "90a" (default) or "80;90a"
    SPAVA_CUTLASS_INCLUDE_DIR    CUTLASS include dir (default: the nvidia-cutlass wheel's headers)
    SPAVA_DISABLE_HDIMS          attn_fwd head dims to leave out, e.g. "64;80" (faster builds)
    SPAVA_ATTN_TRACE=0|1         compile the kernel traces in (benchmarks/attn_trace.py and
                                 select_trace.py; default 0; every build sets it on or off)
    MAX_JOBS                     parallel compile jobs (default: number of CPUs, at most 8)
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def cuda_home() -> Path | None:
    home = os.environ.get("CUDA_HOME") or ("/usr/local/cuda" if Path("/usr/local/cuda").exists() else None)
    return Path(home) if home else None


def want_cuda() -> bool:
    flag = os.environ.get("SPAVA_WITH_CUDA")
    if flag is not None:
        return flag not in ("0", "", "false", "OFF")
    import torch

    home = cuda_home()
    return bool(torch.version.cuda) and home is not None and (home / "bin" / "nvcc").exists()


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_dir = ROOT / "build" / f"cmake-py{sys.version_info.major}{sys.version_info.minor}"
        build_dir.mkdir(parents=True, exist_ok=True)
        cuda = want_cuda()
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DSPAVA_WITH_CUDA={'ON' if cuda else 'OFF'}",
        ]
        if cuda:
            args.append(f"-DCMAKE_CUDA_COMPILER={cuda_home() / 'bin' / 'nvcc'}")
            # always passed: a cached ON must not outlive the build that asked for it
            trace = os.environ.get("SPAVA_ATTN_TRACE", "0") not in ("", "0")
            args.append(f"-DSPAVA_ATTN_TRACE={'ON' if trace else 'OFF'}")
            for key in ("SPAVA_CUDA_ARCHS", "SPAVA_CUTLASS_INCLUDE_DIR", "SPAVA_DISABLE_HDIMS"):
                if os.environ.get(key):
                    args.append(f"-D{key}={os.environ[key]}")
        jobs = os.environ.get("MAX_JOBS") or str(min(8, os.cpu_count() or 1))
        print(f"spava: building _C with CUDA {'on' if cuda else 'off'}, {jobs} jobs", flush=True)
        subprocess.check_call(["cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja", *args])
        subprocess.check_call(["cmake", "--build", str(build_dir), "-j", jobs])


setup(
    name="spava_ext",
    version="0.1.0",
    description="Sequence-parallel approximate attention (Spava) for long-video LMMs: "
    "PyTorch C++/CUDA extension",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[CMakeExtension("spava_ext._C")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.10",
    entry_points={"console_scripts": ["spava=spava_ext.cli:main"]},
    zip_safe=False,
)
