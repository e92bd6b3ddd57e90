"""Build driver: setuptools packages python/spava_ext and runs CMake for spava_ext._C.

    pip install .                               isolated build (build_backend/spava_build.py adds
                                                torch and the CUTLASS headers to its requirements)
    pip install --no-build-isolation -e .       development: builds against this environment's
                                                torch, cmake, ninja and nvidia-cutlass

Metadata lives in pyproject.toml; the torch requirement is set here (torch_requirement).
_C uses only torch's stable ABI and Python's limited API: one wheel (tag cp310-abi3) runs under
every CPython >= 3.10 and every torch >= SPAVA_OLDEST_TORCH (cmake/torch.cmake).

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

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "build_backend"))
from spava_build import cuda_home, cuda_requested, nvcc_found  # noqa: E402

#: The oldest CPython the wheel runs under (requires-python in pyproject.toml; Py_LIMITED_API
#: in CMakeLists.txt): the limited API of that version.
PYTHON_ABI = "cp310"


def oldest_torch() -> str:
    """The torch release whose stable ABI _C targets (TORCH_TARGET_VERSION): the oldest it runs
    under, and the oldest it builds against."""
    text = (ROOT / "cmake" / "torch.cmake").read_text()
    return re.search(r"set\(SPAVA_OLDEST_TORCH ([0-9.]+)\)", text).group(1)


def torch_minor(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def torch_requirement() -> str:
    """Requires-Dist for torch: _C uses torch's stable ABI, so any release from the oldest it
    targets on, whichever torch it was built against."""
    return f"torch>={oldest_torch()}"


def tool(name: str) -> str:
    """cmake / ninja: from PATH (an isolated build's environment puts its own first), else from
    this interpreter's scripts dir (a venv that is not activated)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), sysconfig.get_path("scripts")])
    found = shutil.which(name, path=path)
    if found is None:
        raise RuntimeError(f"spava: {name} not found on PATH: pip install {name}")
    return found


def want_cuda(torch) -> bool:
    flag = cuda_requested()
    return flag if flag is not None else bool(torch.version.cuda) and nvcc_found()


def build_dir(torch) -> Path:
    """build/cmake-pyXY, emptied first when the tools, compilers or torch it was configured with
    have changed: an isolated build's environment is deleted after it, and a CMake cache naming
    its ninja or torch would fail the next build."""
    env = {"python": sys.executable, "cmake": tool("cmake"), "ninja": tool("ninja"),
           "torch": torch.__file__, "torch_version": torch.__version__,
           "cuda_home": str(cuda_home()),
           **{key: os.environ.get(key) for key in ("CC", "CXX", "CUDAHOSTCXX")}}
    path = ROOT / "build" / f"cmake-py{sys.version_info.major}{sys.version_info.minor}"
    stamp, text = path / "spava-build-env.json", json.dumps(env, indent=1)
    if path.exists() and (not stamp.exists() or stamp.read_text() != text):
        print(f"spava: new build environment, emptying {path}", flush=True)
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    stamp.write_text(text)
    return path


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[], py_limited_api=True)  # named _C.abi3.so


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import torch

        if torch_minor(torch.__version__) < torch_minor(oldest_torch()):
            raise RuntimeError(f"spava_ext builds against torch >= {oldest_torch()}, found "
                               f"{torch.__version__}")
        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        cuda = want_cuda(torch)
        args = [
            f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}",
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
        print(f"spava: building _C against torch {torch.__version__} with CUDA "
              f"{'on' if cuda else 'off'}, {jobs} jobs", flush=True)
        build = build_dir(torch)
        cmake = tool("cmake")
        subprocess.check_call([cmake, "-S", str(ROOT), "-B", str(build), "-G", "Ninja", *args])
        subprocess.check_call([cmake, "--build", str(build), "-j", jobs])

    def copy_extensions_to_source(self) -> None:
        """--inplace and editable builds: _C, then the _build_config.py CMake wrote beside it. A
        _C of another name left there (e.g. _C.cpython-311-x86_64-linux-gnu.so from a build
        before the limited API) is removed: Python would import it before _C.abi3.so."""
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            package = ext.name.rpartition(".")[0]
            package_dir = Path(build_py.get_package_dir(package))
            current = Path(self.get_ext_filename(ext.name)).name
            for stale in package_dir.glob("_C.*.so"):
                if stale.name != current:
                    stale.unlink()
            built = Path(self.build_lib, *package.split("."), "_build_config.py")
            self.copy_file(str(built), str(package_dir / built.name))


setup(
    install_requires=[torch_requirement()],
    ext_modules=[CMakeExtension("spava_ext._C")],
    cmdclass={"build_ext": CMakeBuild},
    options={"bdist_wheel": {"py_limited_api": PYTHON_ABI}},
)
