"""Every environment variable spava reads, in one table; nothing else in spava_ext reads the
environment.

Each accessor reads its variable when called (a test can ``monkeypatch.setenv`` it), and a
value that does not parse raises ``ValueError`` naming the variable. An unset or empty
variable takes the default. ``python -m spava_ext.envs`` prints the table (name, default,
meaning) in Markdown.

Options reach the C++ ops as explicit arguments; the two process-wide switches,
``SPAVA_ATTN_FALLBACK`` and ``SPAVA_ATTN_DECODE``, are applied when ``spava_ext.ops`` is
imported.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["EnvVar", "VARIABLES", "get", "collective_timeout_s", "reserve_sms", "ready_spin_us",
           "attn_fallback", "attn_decode", "trace_file", "commit", "world_size", "rank", "local_rank",
           "markdown_table"]


@dataclass(frozen=True)
class EnvVar:
    """One variable: its default (unset or empty) and the parser of a set value, which raises
    ``ValueError`` with the rule the value breaks."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    doc: str


def _positive_seconds(text: str) -> float:
    x = float(text)
    if not (math.isfinite(x) and x > 0):
        raise ValueError("must be a finite number of seconds > 0")
    return x


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            x = int(text)
        except ValueError:
            raise ValueError(f"must be an integer >= {low}") from None
        if x < low:
            raise ValueError(f"must be an integer >= {low}")
        return x
    return parse


def _zero_or_one(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("must be 0 or 1")
    return text == "1"


def _text(text: str) -> str:
    return text


VARIABLES: dict[str, EnvVar] = {v.name: v for v in [
    EnvVar("SPAVA_COLLECTIVE_TIMEOUT_S", 600.0, _positive_seconds,
           "Seconds a collective may take (and an attention launch may wait for the data it "
           "gathers) before spava raises, or the kernel traps, instead of hanging."),
    EnvVar("SPAVA_RESERVE_SMS", 4, _int_at_least(0),
           "SMs a rank's attention launch leaves to the gathers' NCCL kernels when W > 1 (and "
           "the CTA cap of `comm.nccl_options`); 0 takes every SM."),
    EnvVar("SPAVA_READY_SPIN_US", None, _int_at_least(0),
           "Microseconds a CTA polls a late ready flag before it gives its unit back to the "
           "finishing launch; unset: 2000 when the launch leaves SMs to the gathers, else 50."),
    EnvVar("SPAVA_ATTN_FALLBACK", False, _zero_or_one,
           "1: attn_fwd runs its ATen path on every GPU (the path of GPUs without the sm_90a "
           "kernels), to test it on an H100. Applied when spava_ext is imported."),
    EnvVar("SPAVA_ATTN_DECODE", False, _zero_or_one,
           "1: attn_fwd calls of at most 16 query rows per kv head (decode steps) run the "
           "split-KV decode kernel on an sm_90 GPU; 0: the prefill kernel, as every other call "
           "(docs/kernels/attn_decode.md). Applied when spava_ext is imported."),
    EnvVar("SPAVA_TRACE_FILE", None, _text,
           "Trace builds (SPAVA_ATTN_TRACE=1 at build time): the file the kernels' timestamps "
           "are written to; unset: no trace."),
    EnvVar("SPAVA_COMMIT", None, _text,
           "The commit recorded with benchmark results (set it where the tree has no git "
           "metadata)."),
    EnvVar("WORLD_SIZE", 1, _int_at_least(1), "Set by torchrun: ranks of the job."),
    EnvVar("RANK", 0, _int_at_least(0), "Set by torchrun: this process's rank."),
    EnvVar("LOCAL_RANK", 0, _int_at_least(0),
           "Set by torchrun: this process's rank on its host (its GPU)."),
]}


def get(name: str) -> Any:
    """The value of variable ``name`` of :data:`VARIABLES`, read now."""
    var = VARIABLES[name]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return var.default
    try:
        return var.parse(raw)
    except ValueError as e:
        raise ValueError(f"spava: environment variable {name}={raw!r} {e}") from None


def collective_timeout_s() -> float:
    return get("SPAVA_COLLECTIVE_TIMEOUT_S")


def reserve_sms() -> int:
    return get("SPAVA_RESERVE_SMS")


def ready_spin_us(leaves_sms: bool) -> int:
    """The poll limit of a late ready flag for a launch that leaves SMs to the flags' producers
    (``leaves_sms``) or not. Long when it does: those producers (the gathers) run meanwhile, and
    a CTA that waits keeps its place where one that gives up early pushes its work behind the
    gathers (with several ranks queued layer after layer that convoy cost 2-3x the layer time
    on 4 x H100, BENCHMARKS.md "Multi-GPU"). Short when it does not: the producers may need the
    launch's SMs."""
    value = get("SPAVA_READY_SPIN_US")
    if value is not None:
        return value
    return 2000 if leaves_sms else 50


def attn_fallback() -> bool:
    return get("SPAVA_ATTN_FALLBACK")


def attn_decode() -> bool:
    return get("SPAVA_ATTN_DECODE")


def trace_file() -> Optional[str]:
    return get("SPAVA_TRACE_FILE")


def commit() -> Optional[str]:
    return get("SPAVA_COMMIT")


def world_size() -> int:
    return get("WORLD_SIZE")


def rank() -> int:
    return get("RANK")


def local_rank() -> int:
    return get("LOCAL_RANK")


def markdown_table() -> str:
    """The variables as a Markdown table (for the README)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for v in VARIABLES.values():
        shown = int(v.default) if isinstance(v.default, bool) else v.default
        default = "unset" if v.default is None else f"`{shown}`"
        rows.append(f"| `{v.name}` | {default} | {v.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
