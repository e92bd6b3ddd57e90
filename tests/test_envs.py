"""spava_ext.envs: the one reader of environment variables (defaults, parsing, errors)."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spava_ext import envs

PACKAGE = Path(envs.__file__).parent


def test_defaults_when_unset_or_empty(monkeypatch):
    for name in envs.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert envs.collective_timeout_s() == 600.0
    assert envs.reserve_sms() == 4
    assert envs.ready_spin_us(leaves_sms=True) == 2000
    assert envs.ready_spin_us(leaves_sms=False) == 50
    assert envs.attn_fallback() is False and envs.attn_decode() is False
    assert envs.trace_file() is None and envs.commit() is None
    assert (envs.world_size(), envs.rank(), envs.local_rank()) == (1, 0, 0)
    monkeypatch.setenv("SPAVA_RESERVE_SMS", "  ")  # empty: the default
    assert envs.reserve_sms() == 4


def test_values_are_parsed_when_read(monkeypatch):
    monkeypatch.setenv("SPAVA_COLLECTIVE_TIMEOUT_S", "2.5")
    monkeypatch.setenv("SPAVA_RESERVE_SMS", "0")
    monkeypatch.setenv("SPAVA_READY_SPIN_US", "7")
    monkeypatch.setenv("SPAVA_ATTN_FALLBACK", "1")
    monkeypatch.setenv("SPAVA_ATTN_DECODE", "1")
    monkeypatch.setenv("SPAVA_COMMIT", "abc123")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert envs.collective_timeout_s() == 2.5 and envs.reserve_sms() == 0
    assert envs.ready_spin_us(leaves_sms=True) == envs.ready_spin_us(leaves_sms=False) == 7
    assert envs.attn_fallback() is True and envs.attn_decode() is True
    assert envs.commit() == "abc123"
    assert envs.world_size() == 8 and envs.local_rank() == 3
    monkeypatch.setenv("SPAVA_COLLECTIVE_TIMEOUT_S", "30")  # read again at each call
    assert envs.collective_timeout_s() == 30.0


@pytest.mark.parametrize("name,value,rule", [
    ("SPAVA_COLLECTIVE_TIMEOUT_S", "0", "seconds > 0"),
    ("SPAVA_COLLECTIVE_TIMEOUT_S", "inf", "seconds > 0"),
    ("SPAVA_RESERVE_SMS", "-1", "integer >= 0"),
    ("SPAVA_RESERVE_SMS", "four", "integer >= 0"),
    ("SPAVA_READY_SPIN_US", "2.5", "integer >= 0"),
    ("SPAVA_ATTN_FALLBACK", "yes", "0 or 1"),
    ("SPAVA_ATTN_DECODE", "on", "0 or 1"),
    ("WORLD_SIZE", "0", "integer >= 1"),
])
def test_bad_values_name_the_variable(monkeypatch, name, value, rule):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=rf"{name}='{re.escape(value)}' .*{rule}"):
        envs.get(name)


def test_timeout_nan_is_rejected(monkeypatch):
    monkeypatch.setenv("SPAVA_COLLECTIVE_TIMEOUT_S", "nan")
    with pytest.raises(ValueError, match="SPAVA_COLLECTIVE_TIMEOUT_S"):
        envs.collective_timeout_s()
    assert not math.isnan(envs.VARIABLES["SPAVA_COLLECTIVE_TIMEOUT_S"].default)


def test_table_lists_every_variable_once():
    table = envs.markdown_table()
    for name in envs.VARIABLES:
        assert table.count(f"`{name}`") == 1, name
    out = subprocess.run([sys.executable, "-m", "spava_ext.envs"], capture_output=True,
                         text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == table


def test_envs_is_the_only_reader_of_the_environment():
    readers = [p.name for p in sorted(PACKAGE.rglob("*.py"))
               if re.search(r"os\.environ|os\.getenv|getenv\(", p.read_text())]
    assert readers == ["envs.py"], readers
