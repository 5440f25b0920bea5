"""`python -m mlplane.bench` (`make bench`): every benchmark in one table (`--quick` for a smoke run).

Each row puts mlplane beside a baseline measured in the same run on the same machine. The traffic
benchmarks (trace replay, then router overhead) add their goal rows to that table and print their
own tables after it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlplane.bench import HEADER, dra, job_startup, kueue, machine, store

# The Mooncake trace of shared/data/README.md, next to the repository.
TRACE = Path(__file__).resolve().parents[3] / "shared/data/mooncake-fast25/synthetic_trace.jsonl.gz"


def traffic_settings(quick: bool):
    """The replay behind the recorded figures (docs/benchmarks.md); a short one with ``quick``."""
    from mlplane.bench.traffic import TrafficSettings

    if quick:
        return TrafficSettings(trace=str(TRACE), skip=3900, requests=20, servers=2, rate_scale=20, time_scale=0.01,
                               request_timeout_s=20)
    return TrafficSettings(trace=str(TRACE), skip=3000, requests=400, servers=8, rate_scale=4, time_scale=0.5)


def main() -> int:
    quick = "--quick" in sys.argv
    print(machine())
    print(HEADER)
    print("\n".join(store.rows(store.run(quick=quick))))
    job_startup.run(pods=20 if quick else 100)
    print("\n".join(kueue.rows(kueue.run(quick=quick))))
    print("\n".join(dra.rows(dra.run(quick=quick))), flush=True)

    from mlplane.bench.harness import ROUTERS
    from mlplane.bench.overhead import OverheadSettings, bench_overhead
    from mlplane.bench.traffic import bench_traffic

    reports = []

    def add(report) -> None:
        reports.append(report)
        for row in report.goals:
            print(row, flush=True)

    if TRACE.exists():
        add(bench_traffic(traffic_settings(quick), ROUTERS))
    else:
        print(f"traffic benchmark not run: the Mooncake trace is not at {TRACE} "
              "(see shared/data/README.md; or run `mlplane bench traffic --trace FILE`)", file=sys.stderr)
    add(bench_overhead(OverheadSettings(duration_s=1.0 if quick else 10.0), ROUTERS))
    for r in reports:
        print()
        print(r.settings_line())
        print("\n".join(r.table))
    return 0 if TRACE.exists() else 1


if __name__ == "__main__":
    sys.exit(main())
