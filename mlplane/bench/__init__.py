"""Benchmarks: each runs with one command and compares against a baseline or peer in the same run."""

from __future__ import annotations

import os
import platform
import sys
from typing import Callable

HEADER = "| metric | mlplane | baseline | goal |\n|---|---|---|---|"


def machine() -> str:
    return f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def print_report(run: Callable[..., dict], rows: Callable[[dict], list[str]]) -> int:
    """The `python -m mlplane.bench.X [--quick]` entry point: the machine, then one markdown table."""
    print(machine())
    print(HEADER)
    print("\n".join(rows(run(quick="--quick" in sys.argv))))
    return 0
