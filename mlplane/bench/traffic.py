"""`mlplane bench traffic`: replay a request trace through each router against simulated vLLM servers.

For every router, in one run and in the same way: a fresh ``mlplane serve-sim --servers N`` process
(fresh KV caches, same seed), the router as a real process on a free port (ours:
``mlplane gateway --backend ... --policy P``; peers: ``sglang-router launch`` and ``vllm-router`` in
``cache_aware`` mode with ``--worker-urls``), then an open-loop asyncio client that sends the first
K trace requests at their trace times divided by ``--rate-scale`` as streaming ``/v1/completions``
with ``max_tokens`` = the trace's output length (the simulator ignores EOS and produces exactly
that many tokens). TTFT is taken at the first chunk with text, end-to-end latency at ``[DONE]``.
Prefix-cache hit rate and per-server request counts come from the simulators' ``/metrics``
(vLLM counters), scraped before and after the replay.

The overhead mode (``--overhead``) is in ``overhead.py``; what both share is in ``harness.py``.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from mlplane.bench.harness import (STARTUP_TIMEOUT_S, BenchError, Proc, Report, best_peer, free_port, free_ports,
                                   get, log, measured, mlplane_argv, percentile, rounded, router_argv, wait_ready)
from mlplane.bench.plot import cdf_and_bars
from mlplane.bench.traces import PromptBuilder, TraceRecord, load_trace
from mlplane.net.http import Client, ConnectError, ResponseError, run

RESULT_KEYS = ("router", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "e2e_p50_s", "throughput_rps",
               "prefix_hit_rate", "completed", "failed")
# Simulator counters (vLLM names) read before and after each replay; the first one present is used.
HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
REQUESTS = ("vllm:request_success_total", "vllm:e2e_request_latency_seconds_count",
            "vllm:time_to_first_token_seconds_count")


def metric_sums(text: bytes) -> dict[str, float]:
    """Prometheus text -> {metric name: sum of its samples over all label sets}."""
    out: dict[str, float] = {}
    for line in text.decode("utf-8", "replace").splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            rest = line[line.rfind("}") + 1:].split()
        else:
            name, _, tail = line.partition(" ")
            rest = tail.split()
        if not rest:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + value
    return out


def first_metric(sums: dict[str, float], names: Sequence[str]) -> float | None:
    for n in names:
        if n in sums:
            return sums[n]
    return None


async def scrape_servers(client, addresses: Sequence[str]) -> list[dict[str, float]]:
    out = []
    for a in addresses:
        status, body = await get(client, a, "/metrics", timeout=5.0)
        out.append(metric_sums(body) if status == 200 else {})
    return out


# --- the trace replay --------------------------------------------------------------------------

@dataclass
class Outcome:
    ok: bool = False
    ttft: float | None = None
    e2e: float | None = None
    lag: float = 0.0  # how late the client sent it versus its schedule
    error: str = ""


@dataclass
class TrafficSettings:
    trace: str
    requests: int = 200
    skip: int = 0  # requests of the trace skipped before the K replayed
    servers: int = 8
    rate_scale: float = 1.0
    time_scale: float = 1.0
    seed: int = 0
    request_timeout_s: float = 300.0
    router_timeout_s: float | None = None  # default: the replay span + request timeout
    sim_config: str | None = None  # serve-sim --config FILE

    def as_dict(self, routers: Sequence[str]) -> dict:
        return {"mode": "traffic", "trace": self.trace, "requests": self.requests, "skip": self.skip,
                "servers": self.servers, "rate_scale": self.rate_scale, "time_scale": self.time_scale,
                "seed": self.seed, "sim_config": self.sim_config, "routers": list(routers)}


def _first_text(events: bytes) -> tuple[bool, str]:
    """(saw a content chunk, error message) for complete SSE events in ``events``."""
    for ev in events.split(b"\n\n"):
        for line in ev.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload or payload == b"[DONE]":
                continue
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            if "error" in obj:
                return False, str(obj["error"])[:200]
            for ch in obj.get("choices") or ():
                if ch.get("text") or (ch.get("delta") or {}).get("content"):
                    return True, ""
    return False, ""


async def one_request(client, address: str, body: bytes, timeout: float, out: Outcome) -> None:
    """Send one streaming completion; fill ``out`` with TTFT and e2e (from the send) or the error."""
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            resp = await client.request("POST", address, "/v1/completions",
                                        headers={"content-type": "application/json"}, body=body, timeout=timeout)
            async with resp:
                if resp.status != 200:
                    text = await resp.read()
                    out.error = f"HTTP {resp.status}: {text[:200].decode('utf-8', 'replace')}"
                    return
                buf = b""
                done = False
                async for chunk in resp.iter_chunks():
                    if out.ttft is None:
                        buf += chunk
                        cut = buf.rfind(b"\n\n")
                        if cut >= 0:
                            seen, err = _first_text(buf[:cut])
                            if err:
                                out.error = err
                                return
                            if seen:
                                out.ttft = time.perf_counter() - t0
                            buf = buf[cut + 2:] if out.ttft is None else buf[-16:]
                    else:
                        buf = buf[-16:] + chunk
                    if b"[DONE]" in buf:
                        done = True
                if not done:
                    out.error = "stream ended without [DONE]"
                    return
                if out.ttft is None:
                    out.error = "no content chunk in the stream"
                    return
            out.e2e = time.perf_counter() - t0
            out.ok = True
    except TimeoutError:
        out.error = f"timed out after {timeout:.0f} s"
    except (ConnectError, ResponseError, OSError) as e:
        out.error = f"{type(e).__name__}: {e}"


async def replay(client, address: str, arrivals: Sequence[float], bodies: Sequence[bytes],
                 request_timeout: float, deadline_s: float, label: str) -> tuple[list[Outcome], float]:
    """Open loop: request i is sent at ``arrivals[i]`` s after the start. Returns outcomes and wall time."""
    outcomes = [Outcome() for _ in bodies]
    tasks: list[asyncio.Task] = []
    start = time.perf_counter() + 0.05
    end_by = start + deadline_s

    async def progress() -> None:
        while True:
            await asyncio.sleep(5.0)
            fin = sum(1 for t in tasks if t.done())
            bad = sum(1 for t, o in zip(tasks, outcomes) if t.done() and not o.ok)
            log(f"[{label}] {time.perf_counter() - start:6.1f} s: sent {len(tasks)}/{len(bodies)}, "
                f"finished {fin} ({bad} failed)")

    reporter = asyncio.create_task(progress())
    try:
        for i, (at, body) in enumerate(zip(arrivals, bodies)):
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() > end_by:
                break
            outcomes[i].lag = max(0.0, time.perf_counter() - (start + at))
            tasks.append(asyncio.create_task(one_request(client, address, body, request_timeout, outcomes[i])))
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, end_by - time.perf_counter()))
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for t, o in zip(tasks, outcomes):
            if not o.ok and not o.error:
                o.error = "cancelled at the router timeout"
        for o in outcomes[len(tasks):]:
            o.error = "not sent before the router timeout"
    finally:
        reporter.cancel()
    return outcomes, time.perf_counter() - start


def summarize(router: str, outcomes: Sequence[Outcome], wall_s: float, before: list[dict], after: list[dict],
              ) -> dict:
    ok = [o for o in outcomes if o.ok]
    ttfts = [o.ttft for o in ok]
    e2es = [o.e2e for o in ok]
    hits = queries = 0.0
    per_server: list[int] = []
    for b, a in zip(before, after):
        h = (first_metric(a, HITS) or 0.0) - (first_metric(b, HITS) or 0.0)
        q = (first_metric(a, QUERIES) or 0.0) - (first_metric(b, QUERIES) or 0.0)
        hits += h
        queries += q
        per_server.append(int(round((first_metric(a, REQUESTS) or 0.0) - (first_metric(b, REQUESTS) or 0.0))))
    total = sum(per_server)
    mean = total / len(per_server) if per_server else 0.0
    errors: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            key = o.error[:80]
            errors[key] = errors.get(key, 0) + 1
    res = {
        "router": router,
        "ttft_p50_s": rounded(percentile(ttfts, 50)),
        "ttft_p90_s": rounded(percentile(ttfts, 90)),
        "ttft_p99_s": rounded(percentile(ttfts, 99)),
        "e2e_p50_s": rounded(percentile(e2es, 50)),
        "throughput_rps": round(len(ok) / wall_s, 3) if wall_s > 0 else 0.0,
        "prefix_hit_rate": round(hits / queries, 4) if queries > 0 else None,
        "completed": len(ok),
        "failed": len(outcomes) - len(ok),
        "ttft_mean_s": rounded(statistics.fmean(ttfts) if ttfts else None),
        "e2e_p90_s": rounded(percentile(e2es, 90)),
        "e2e_p99_s": rounded(percentile(e2es, 99)),
        "requests_per_server": per_server,
        "load_cv": round(statistics.pstdev(per_server) / mean, 4) if mean > 0 else None,
        "max_server_share": round(max(per_server) / total, 4) if total else None,
        "min_server_share": round(min(per_server) / total, 4) if total else None,
        "client_lag_p99_s": rounded(percentile([o.lag for o in outcomes], 99)),
        "wall_s": round(wall_s, 2),
    }
    if errors:
        res["errors"] = errors
    return res


def error_result(router: str, k: int, message: str) -> dict:
    return {"router": router, "ttft_p50_s": None, "ttft_p90_s": None, "ttft_p99_s": None, "e2e_p50_s": None,
            "throughput_rps": 0.0, "prefix_hit_rate": None, "completed": 0, "failed": k, "error": message}


def sim_argv(s: TrafficSettings, port: int) -> list[str]:
    return mlplane_argv("serve-sim", "--servers", s.servers, "--port", port, "--time-scale", s.time_scale,
                        "--seed", s.seed, *(["--config", s.sim_config] if s.sim_config else []))


async def start_sim(client, label: str, s: TrafficSettings, logdir: Path) -> tuple[Proc, list[str]]:
    """serve-sim with ``s.servers`` servers, ready; tried again on other ports if it could not listen."""
    for attempt in range(3):
        base = free_ports(s.servers)
        servers = [f"127.0.0.1:{base + i}" for i in range(s.servers)]
        log(f"[{label}] starting {s.servers} simulated servers on ports {base}..{base + s.servers - 1}")
        sim = Proc(f"{label}-serve-sim", sim_argv(s, base), logdir)
        try:
            for a in servers:
                await wait_ready(client, [sim], a, "/health", STARTUP_TIMEOUT_S)
            return sim, servers
        except BenchError:
            sim.stop()
            if attempt == 2 or "in use" not in sim.tail():
                raise
    raise AssertionError("unreachable")


async def _run_router(client, router: str, s: TrafficSettings, records: Sequence[TraceRecord],
                      prompts: Sequence[str], logdir: Path) -> tuple[dict, list[float]]:
    k = len(records)
    procs: list[Proc] = []
    try:
        router_argv(router, 0, [])  # a missing peer binary fails here, before anything starts
        sim, servers = await start_sim(client, router, s, logdir)
        procs.append(sim)
        port = free_port()
        argv = router_argv(router, port, [f"http://{a}" for a in servers])
        status, body = await get(client, servers[0], "/v1/models")
        models = orjson.loads(body).get("data") if status == 200 else None
        model = models[0]["id"] if models else "sim"
        log(f"[{router}] starting the router on port {port}")
        proc = Proc(router, argv, logdir)
        procs.append(proc)
        address = f"127.0.0.1:{port}"
        await wait_ready(client, [sim, proc], address, "/v1/models", STARTUP_TIMEOUT_S)
        bodies = [orjson.dumps({"model": model, "prompt": p, "max_tokens": r.output_tokens,
                                "min_tokens": r.output_tokens, "ignore_eos": True, "stream": True,
                                "temperature": 0.0}) for r, p in zip(records, prompts)]
        arrivals = [(r.arrival_s - records[0].arrival_s) / s.rate_scale for r in records]
        span = arrivals[-1] if arrivals else 0.0
        deadline = s.router_timeout_s if s.router_timeout_s is not None else span + s.request_timeout_s
        before = await scrape_servers(client, servers)
        cpu0 = (proc.cpu_s(), sim.cpu_s())
        log(f"[{router}] replaying {k} requests over {span:.1f} s")
        outcomes, wall = await replay(client, address, arrivals, bodies, s.request_timeout_s, deadline, router)
        cpu1 = (proc.cpu_s(), sim.cpu_s())
        after = await scrape_servers(client, servers)
        res = summarize(router, outcomes, wall, before, after)
        for key, a, b in (("router_cpu_s", cpu0[0], cpu1[0]), ("sim_cpu_s", cpu0[1], cpu1[1])):
            res[key] = None if a is None or b is None else round(b - a, 2)
        log(f"[{router}] done in {wall:.1f} s: {res['completed']} completed, {res['failed']} failed, "
            f"TTFT p90 {res['ttft_p90_s']} s")
        return res, [o.ttft for o in outcomes if o.ok]
    except BenchError as e:
        log(f"[{router}] error: {e}")
        return error_result(router, k, str(e)), []
    finally:
        for p in reversed(procs):
            p.stop()


async def run_traffic_async(s: TrafficSettings, routers: Sequence[str]) -> tuple[list[dict], dict[str, list[float]]]:
    records = load_trace(s.trace, s.requests, s.skip)
    if not records:
        raise BenchError(f"--skip {s.skip}: the trace has no requests after the first {s.skip}")
    builder = PromptBuilder()
    prompts = [builder.prompt(r) for r in records]
    results, ttfts = [], {}
    async with Client(max_idle_per_host=4096) as client:
        with tempfile.TemporaryDirectory(prefix="mlplane-bench-traffic-") as tmp:
            for router in routers:
                res, samples = await _run_router(client, router, s, records, prompts, Path(tmp))
                results.append(res)
                ttfts[router] = samples
    return results, ttfts


def run_traffic(s: TrafficSettings, routers: Sequence[str]) -> tuple[list[dict], dict[str, list[float]]]:
    """Every router in turn over the same trace slice: (result rows, TTFT samples per router)."""
    if s.requests < 1:
        raise BenchError("--requests must be at least 1")
    if s.skip < 0:
        raise BenchError("--skip must not be negative")
    if s.servers < 1:
        raise BenchError("--servers must be at least 1")
    if not (s.rate_scale > 0 and math.isfinite(s.rate_scale)):
        raise BenchError("--rate-scale must be a positive number")
    if not (s.time_scale > 0 and math.isfinite(s.time_scale)):
        raise BenchError("--time-scale must be a positive number")
    return run(run_traffic_async(s, routers))


def plot_svg(results: Sequence[dict], ttfts: dict[str, list[float]]) -> str:
    ok = [r for r in results if r.get("completed")]
    series = {name: [r.get(key) if r.get(key) is not None else float("nan") for r in ok]
              for name, key in (("p50", "ttft_p50_s"), ("p90", "ttft_p90_s"), ("p99", "ttft_p99_s"))}
    short = [r["router"].replace("mlplane:", "") for r in ok]
    return cdf_and_bars({r["router"]: ttfts.get(r["router"], []) for r in ok}, short, series,
                        "TTFT CDF", "time to first token (s)", "TTFT percentiles", "seconds")


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def traffic_table(results: Sequence[dict]) -> list[str]:
    lines = ["| router | TTFT p50 / p90 / p99 (s) | e2e p50 (s) | req/s | prefix hit | load CV | completed / failed |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r and not r["completed"]:
            lines.append(f"| {r['router']} | error: {r['error'][:80]} | | | | | 0 / {r['failed']} |")
            continue
        hit = "-" if r["prefix_hit_rate"] is None else f"{r['prefix_hit_rate']:.1%}"
        cv = "-" if r.get("load_cv") is None else f"{r['load_cv']:.2f}"
        lines.append(f"| {r['router']} | {_s(r['ttft_p50_s'])} / {_s(r['ttft_p90_s'])} / {_s(r['ttft_p99_s'])} "
                     f"| {_s(r['e2e_p50_s'])} | {r['throughput_rps']:.2f} | {hit} | {cv} "
                     f"| {r['completed']} / {r['failed']} |")
    return lines


def goal_rows(results: Sequence[dict]) -> list[str]:
    """Issue 5's TTFT goals as rows of the benchmark table (``mlplane.bench.HEADER``), when measured."""
    by = measured(results, "ttft_p90_s")
    ours = by.get("mlplane:default")
    if ours is None:
        return []
    rows = []
    best = best_peer(by, "ttft_p90_s", lowest=True)
    if best is not None:
        rows.append(f"| TTFT p90, mlplane:default vs the better peer | {ours['ttft_p90_s']:.3f} s "
                    f"| {best['ttft_p90_s']:.3f} s ({best['router']}) = "
                    f"{ours['ttft_p90_s'] / best['ttft_p90_s']:.2f}x | <= 0.8x |")
    rr = by.get("mlplane:round-robin")
    if rr is not None:
        rows.append(f"| TTFT p90, mlplane:default vs round-robin | {ours['ttft_p90_s']:.3f} s "
                    f"| {rr['ttft_p90_s']:.3f} s = {ours['ttft_p90_s'] / rr['ttft_p90_s']:.2f}x | <= 0.5x |")
    return rows


def bench_traffic(s: TrafficSettings, routers: Sequence[str]) -> Report:
    results, ttfts = run_traffic(s, routers)
    return Report({"results": results}, s.as_dict(routers), traffic_table(results), goal_rows(results),
                  plot_svg(results, ttfts))
