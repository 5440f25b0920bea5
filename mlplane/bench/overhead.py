"""`mlplane bench traffic --overhead`: the latency each router adds and the most requests per second
it passes, in front of an instant backend.

The instant backend answers a tiny completion at once, in its own process
(``python -m mlplane.bench.overhead backend --port P [--servers N]``). For each router, in one run:
the backend measured directly just before (so both figures see the same machine load), then through
the router at a fixed rate (open loop; added latency = through - direct at p50 and p99), then a
closed loop of concurrent connections for max req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from mlplane.bench.harness import (STARTUP_TIMEOUT_S, BenchError, Proc, Report, best_peer, free_port, free_ports,
                                   log, measured, percentile, router_argv, rounded, wait_ready)
from mlplane.net.http import Client, Response, run, start_server

INSTANT_BODY = orjson.dumps({"id": "cmpl-instant", "object": "text_completion", "created": 0, "model": "instant",
                             "choices": [{"index": 0, "text": " ok", "logprobs": None, "finish_reason": "length"}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
INSTANT_MODELS = orjson.dumps({"object": "list", "data": [{"id": "instant", "object": "model", "created": 0,
                                                           "owned_by": "mlplane", "max_model_len": 4096}]})
INSTANT_METRICS = (b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"instant\"} 0\n"
                   b"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"instant\"} 0\n"
                   b"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"instant\"} 0\n")
REQUEST_BODY = orjson.dumps({"model": "instant", "prompt": "hello world", "max_tokens": 1})


@dataclass
class OverheadSettings:
    rate: float = 500.0  # req/s of the fixed-rate measurement
    duration_s: float = 5.0  # of each measurement
    concurrency: int = 64  # connections of the closed loop
    servers: int = 2  # instant backends behind each router

    def as_dict(self, routers: Sequence[str]) -> dict:
        return {"mode": "overhead", "rate": self.rate, "duration_s": self.duration_s,
                "concurrency": self.concurrency, "backends": self.servers, "routers": list(routers)}


# --- the instant backend -----------------------------------------------------------------------

async def _instant_backend(port: int, servers: int) -> None:
    async def handler(req):
        if req.method == "POST" and req.path in ("/v1/completions", "/v1/chat/completions", "/generate"):
            return Response(200, INSTANT_BODY)
        if req.path == "/v1/models":
            return Response(200, INSTANT_MODELS)
        if req.path == "/metrics":
            return Response(200, INSTANT_METRICS, content_type="text/plain; version=0.0.4")
        if req.method == "GET":  # /health, /get_model_info, /get_server_info, /version ... as the peers probe
            return Response(200, b'{"model_path": "instant", "version": "0"}')
        return Response(404, b'{"error": "not found"}')

    started = [await start_server(handler, "127.0.0.1", port + i) for i in range(servers)]
    try:
        await asyncio.Event().wait()
    finally:
        for s in started:
            await s.close()


# --- load --------------------------------------------------------------------------------------

async def _post_ok(client: Client, address: str) -> bool:
    """One tiny completion through ``address``: whether it came back 200."""
    try:
        resp = await client.request("POST", address, "/v1/completions",
                                    headers={"content-type": "application/json"}, body=REQUEST_BODY, timeout=10.0)
        await resp.read()
        return resp.status == 200
    except Exception:  # noqa: BLE001 (every failure counts the same here)
        return False


async def _fixed_rate(client: Client, address: str, rate: float, duration: float) -> tuple[list[float], int]:
    """Open loop at ``rate`` req/s for ``duration`` s: (latencies in ms of the good answers, failures)."""
    lat: list[float] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        t0 = time.perf_counter()
        if await _post_ok(client, address):
            lat.append((time.perf_counter() - t0) * 1000)
        else:
            failed += 1

    start = time.perf_counter() + 0.02
    tasks = []
    for i in range(int(rate * duration)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return lat, failed


async def _closed_loop(client: Client, address: str, concurrency: int, duration: float) -> tuple[float, int]:
    """``concurrency`` connections each sending the next request when the last returns: (req/s, failures)."""
    done = failed = 0
    end = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done, failed
        while time.perf_counter() < end:
            if await _post_ok(client, address):
                done += 1
            else:
                failed += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - t0), failed


def _p50_p99(lat_ms: Sequence[float]) -> tuple[float | None, float | None]:
    return rounded(percentile(lat_ms, 50), 3), rounded(percentile(lat_ms, 99), 3)


async def _measure(client: Client, address: str, o: OverheadSettings, label: str) -> dict:
    await _fixed_rate(client, address, min(o.rate, 200.0), 0.5)  # warm the connections
    lat, failed = await _fixed_rate(client, address, o.rate, o.duration_s)
    rps, failed2 = await _closed_loop(client, address, o.concurrency, o.duration_s)
    p50, p99 = _p50_p99(lat)
    log(f"[{label}] p50 {p50} ms, p99 {p99} ms at {o.rate:.0f} req/s; max {rps:.1f} req/s at concurrency "
        f"{o.concurrency}")
    return {"p50_ms": p50, "p99_ms": p99, "max_rps": round(rps, 1), "failed": failed + failed2}


# --- one run -----------------------------------------------------------------------------------

async def _router_row(client: Client, router: str, backend: Proc, backends: Sequence[str], o: OverheadSettings,
                      logdir: Path) -> dict:
    proc = None
    try:
        port = free_port()
        proc = Proc(router, router_argv(router, port, [f"http://{a}" for a in backends]), logdir)
        address = f"127.0.0.1:{port}"
        await wait_ready(client, [backend, proc], address, "/v1/models", STARTUP_TIMEOUT_S)
        direct50, direct99 = _p50_p99((await _fixed_rate(client, backends[0], o.rate, o.duration_s))[0])
        m = await _measure(client, address, o, router)

        def added(through: float | None, direct: float | None) -> float | None:
            return None if through is None or direct is None else round(through - direct, 3)

        return {"router": router, "added_p50_ms": added(m["p50_ms"], direct50),
                "added_p99_ms": added(m["p99_ms"], direct99), **m,
                "direct_p50_ms": direct50, "direct_p99_ms": direct99}
    except BenchError as e:
        log(f"[{router}] error: {e}")
        return {"router": router, "added_p50_ms": None, "added_p99_ms": None, "max_rps": None, "error": str(e)}
    finally:
        if proc is not None:
            proc.stop()


async def run_overhead_async(routers: Sequence[str], o: OverheadSettings) -> list[dict]:
    async with Client(max_idle_per_host=4096) as client:
        with tempfile.TemporaryDirectory(prefix="mlplane-bench-overhead-") as tmp:
            logdir = Path(tmp)
            base = free_ports(o.servers)
            backends = [f"127.0.0.1:{base + i}" for i in range(o.servers)]
            backend = Proc("instant-backend", [sys.executable, "-m", "mlplane.bench.overhead", "backend",
                                               "--port", base, "--servers", o.servers], logdir)
            try:
                for a in backends:
                    await wait_ready(client, [backend], a, "/health", STARTUP_TIMEOUT_S)
                direct = await _measure(client, backends[0], o, "direct")
                rows = [{"router": "direct", "added_p50_ms": 0.0, "added_p99_ms": 0.0, **direct}]
                for router in routers:
                    rows.append(await _router_row(client, router, backend, backends, o, logdir))
                return rows
            finally:
                backend.stop()


def run_overhead(routers: Sequence[str], o: OverheadSettings) -> list[dict]:
    """The direct row, then one row per router (an ``error`` row for a router that did not start)."""
    if not (o.rate > 0 and o.duration_s > 0 and o.concurrency > 0):
        raise BenchError("--rate, --duration and --concurrency must be positive")
    return run(run_overhead_async(routers, o))


# --- reporting ---------------------------------------------------------------------------------

def overhead_table(rows: Sequence[dict]) -> list[str]:
    lines = ["| router | added latency p50 / p99 (ms) | through the router p50 / p99 (ms) "
             "| direct, just before, p50 / p99 (ms) | max req/s |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['router']} | error: {r['error'][:80]} | | | |")
            continue
        direct = f"{r['direct_p50_ms']} / {r['direct_p99_ms']}" if "direct_p50_ms" in r else ""
        lines.append(f"| {r['router']} | {r['added_p50_ms']} / {r['added_p99_ms']} | {r['p50_ms']} / {r['p99_ms']} "
                     f"| {direct} | {r['max_rps']:,.0f} |")
    return lines


def overhead_goal_rows(rows: Sequence[dict]) -> list[str]:
    """Issue 5's overhead goals as benchmark-table rows: added p99 at the fixed rate, max req/s vs peers."""
    by = measured(rows, "max_rps")
    ours = by.get("mlplane:default")
    if ours is None:
        return []
    p99 = ours["added_p99_ms"]
    out = [f"| added latency p99, mlplane:default | {'-' if p99 is None else f'{p99:.3f} ms'} | | < 2 ms |"]
    best = best_peer(by, "max_rps", lowest=False)
    if best is not None:
        out.append(f"| max req/s, mlplane:default vs the faster peer | {ours['max_rps']:,.0f} "
                   f"| {best['max_rps']:,.0f} ({best['router']}) = {ours['max_rps'] / best['max_rps']:.2f}x "
                   f"| >= 0.5x |")
    return out


def bench_overhead(o: OverheadSettings, routers: Sequence[str]) -> Report:
    rows = run_overhead(routers, o)
    return Report({"overhead": rows}, o.as_dict(routers), overhead_table(rows), overhead_goal_rows(rows))


def main(argv: list[str] | None = None) -> int:
    """``backend --port P [--servers N]``: run the instant backend until killed."""
    p = argparse.ArgumentParser(prog="python -m mlplane.bench.overhead")
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("backend", help="instant backends on ports P..P+N-1")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--servers", type=int, default=1)
    a = p.parse_args(argv)
    run(_instant_backend(a.port, a.servers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
