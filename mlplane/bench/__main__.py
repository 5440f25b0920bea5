"""`python -m mlplane.bench` (`make bench`): every benchmark in one table (`--quick` for a smoke run).

Each row puts mlplane beside a baseline measured in the same run on the same machine.
"""

from __future__ import annotations

import sys

from mlplane.bench import HEADER, dra, job_startup, kueue, machine, store


def main() -> int:
    quick = "--quick" in sys.argv
    print(machine())
    print(HEADER)
    print("\n".join(store.rows(store.run(quick=quick))))
    job_startup.run(pods=20 if quick else 100)
    print("\n".join(kueue.rows(kueue.run(quick=quick))))
    print("\n".join(dra.rows(dra.run(quick=quick))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
