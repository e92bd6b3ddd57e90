"""spava's benchmarks, one entry point: ``--routine`` picks what to measure, the routine's own
options follow (``--routine NAME --help`` lists them). Every routine writes
benchmarks/results/<name>_<date>_<card>.json (and a copy to $OUT) with card, date and commit;
benchmarks/plot.py draws a result. Timing: spava_ext.timing (CUDA events, warm-up, median),
through benchmarks/bench_utils.py.

    python benchmarks/bench.py --routine kernels [--quick]     # per-rank kernels vs baselines
    python benchmarks/bench.py --routine kernels --unit-overhead
    python benchmarks/bench.py --routine layer                 # simulated W = 2, 4, 8 sweep
    python benchmarks/bench.py --routine e2e                   # Qwen2.5-VL-7B LM prefill
    python benchmarks/bench.py --routine e2e --model qwen3-vl-8b
    python benchmarks/bench.py --routine ttft                  # vision + prefill, both models
    python benchmarks/bench.py --routine decode                # tokens/s after 128K, W = 8
    python benchmarks/bench.py --routine scale                 # prefill at 128K-1M, memory
    torchrun --nproc-per-node W benchmarks/bench.py --routine multi-gpu
    python benchmarks/bench.py --routine fidelity [--device cpu]
    python benchmarks/bench.py --routine host                  # host enqueue, prefill GPU idle
    python benchmarks/bench.py --routine fp8 [--device cpu]    # FP8 scheme's accuracy
"""

from __future__ import annotations

import argparse
import importlib
import sys

# routine -> the module (in benchmarks/) with its add_arguments(parser) and run(args)
ROUTINES = {"kernels": "bench_kernels", "layer": "bench_layer", "e2e": "bench_e2e",
            "multi-gpu": "multi_gpu", "fidelity": "fidelity", "ttft": "bench_ttft",
            "decode": "bench_decode", "scale": "bench_scale", "host": "bench_host", "fp8": "bench_fp8"}


def parser_for(argv: list[str] | None) -> tuple[argparse.ArgumentParser, object]:
    """The parser of the routine named in ``argv`` (its options added) and the routine's
    module; without a routine, the parser alone (its --help lists the routines)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--routine", choices=list(ROUTINES))
    routine = first.parse_known_args(argv)[0].routine
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routine", required=True, choices=list(ROUTINES),
                        help="what to measure")
    if routine is None:
        return parser, None
    module = importlib.import_module(ROUTINES[routine])
    module.add_arguments(parser.add_argument_group(f"--routine {routine}", module.__doc__))
    return parser, module


def main(argv: list[str] | None = None) -> int:
    parser, module = parser_for(argv)
    args = parser.parse_args(argv)
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
