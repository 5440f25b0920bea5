"""`mlplane bench traffic`: the traffic benchmark from the command line (mlplane/bench/traffic.py and
overhead.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    """Add the `bench` verb (sub-verb `traffic`) to the top-level subparsers ``sub``."""
    bp = sub.add_parser("bench", help="run a benchmark against peers in the same run (bench traffic ...)")
    bsub = bp.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    bp.set_defaults(func=lambda args: (bp.print_help(), 1)[1])
    tp = bsub.add_parser(
        "traffic", help="replay a request trace through each router against simulated vLLM servers",
        description="Replay a Mooncake (JSONL) or Azure LLM (CSV) trace through mlplane's routing policies "
                    "and the peer routers sglang-router and vllm-router (cache_aware), each in front of fresh "
                    "simulated servers, and report TTFT, end-to-end latency, throughput, prefix-cache hit rate "
                    "and load balance. With --overhead, measure each router's added latency and max req/s "
                    "in front of an instant backend instead.")
    tp.add_argument("--trace", metavar="FILE", help="Mooncake .jsonl[.gz] or Azure LLM .csv[.gz] trace")
    tp.add_argument("--requests", type=int, default=200, metavar="K", help="replay the first K requests (200)")
    tp.add_argument("--skip", type=int, default=0, metavar="M",
                    help="start at request M of the trace (0): Mooncake's prefix reuse grows along the trace")
    tp.add_argument("--servers", type=int, default=8, metavar="N", help="simulated model servers (8)")
    tp.add_argument("--rate-scale", type=float, default=1.0, metavar="X",
                    help="arrival rate multiplier: request i is sent at trace time / X (1)")
    tp.add_argument("--time-scale", type=float, default=1.0, metavar="T",
                    help="simulator speed: every simulated duration is multiplied by T (1 = an H100)")
    tp.add_argument("--routers", metavar="LIST",
                    help="comma-separated routers (default: all): mlplane:round-robin, mlplane:least-load, "
                         "mlplane:prefix-only, mlplane:default, sglang-router, vllm-router")
    tp.add_argument("--sim-config", metavar="FILE",
                    help="engine constants for the simulated servers (serve-sim --config FILE)")
    tp.add_argument("--seed", type=int, default=0, help="simulator seed, the same for every router (0)")
    tp.add_argument("--request-timeout", type=float, default=300.0, metavar="S",
                    help="a request not finished after S seconds fails (300)")
    tp.add_argument("--router-timeout", type=float, default=None, metavar="S",
                    help="stop a router's replay after S seconds (default: replay span + request timeout)")
    tp.add_argument("--json-out", metavar="FILE", help="also write the results (with the settings) to FILE")
    tp.add_argument("--plot", metavar="FILE",
                    help="write an SVG plot (TTFT CDF and percentiles); default: next to --json-out")
    tp.add_argument("--overhead", action="store_true",
                    help="measure router overhead in front of an instant backend instead of replaying a trace")
    tp.add_argument("--rate", type=float, default=500.0, metavar="R",
                    help="--overhead: fixed request rate for the added-latency figures (500)")
    tp.add_argument("--duration", type=float, default=5.0, metavar="S",
                    help="--overhead: seconds of each measurement (5)")
    tp.add_argument("--concurrency", type=int, default=64, metavar="C",
                    help="--overhead: connections of the closed loop for max req/s (64)")
    tp.add_argument("-o", "--output", choices=["json"], help="print JSON instead of a table")
    tp.set_defaults(func=cmd_bench_traffic)


def _write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def cmd_bench_traffic(args: argparse.Namespace) -> int:
    from mlplane.bench import HEADER, machine
    from mlplane.bench.harness import BenchError, parse_routers
    from mlplane.bench.traces import TraceError

    try:
        routers = parse_routers(args.routers)
        if args.overhead:
            from mlplane.bench.overhead import OverheadSettings, bench_overhead

            report = bench_overhead(OverheadSettings(rate=args.rate, duration_s=args.duration,
                                                     concurrency=args.concurrency), routers)
        else:
            if not args.trace:
                print("error: --trace FILE is required (or --overhead)", file=sys.stderr)
                return 1
            from mlplane.bench.traffic import TrafficSettings, bench_traffic

            report = bench_traffic(TrafficSettings(
                trace=args.trace, requests=args.requests, skip=args.skip, servers=args.servers,
                rate_scale=args.rate_scale, time_scale=args.time_scale, seed=args.seed,
                request_timeout_s=args.request_timeout, router_timeout_s=args.router_timeout,
                sim_config=args.sim_config), routers)
    except (TraceError, BenchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json_out:
        doc = {**report.doc, "settings": report.settings, "machine": machine()}
        _write(args.json_out, json.dumps(doc, indent=2) + "\n")
    plot_path = args.plot or (str(Path(args.json_out).with_suffix(".svg")) if args.json_out else None)
    if report.plot is not None and plot_path:
        _write(plot_path, report.plot)
    if args.output == "json":
        print(json.dumps(report.doc, indent=2))
    else:
        print(machine())
        print(report.settings_line())
        print("\n".join(report.table))
        if report.goals:
            print()
            print(HEADER)
            print("\n".join(report.goals))
    return 0
