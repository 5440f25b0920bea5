"""`python -m mlplane.bench` (`make bench`): every benchmark of the walking skeleton, one table.

Each row puts mlplane beside a baseline measured in the same run on the same machine.
"""

from __future__ import annotations

import platform
import sys

from mlplane.bench import job_startup, store


def main() -> int:
    quick = "--quick" in sys.argv
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} CPUs, Python {platform.python_version()}")
    print("| metric | mlplane | baseline | goal |\n|---|---|---|---|")
    print("\n".join(store.rows(store.run(quick=quick))))
    job_startup.run(pods=20 if quick else 100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
