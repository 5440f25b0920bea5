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

The overhead mode (``--overhead``) puts each router in front of an instant backend (a server that
answers a tiny completion at once, in its own process) and measures the latency it adds at a fixed
rate and the most requests per second it passes with a closed loop of concurrent connections.

``python -m mlplane.bench.traffic verb NAME ARGS...`` runs one mlplane verb (serve-sim, gateway)
from its own CLI module, and ``python -m mlplane.bench.traffic instant-backend --port P [--servers
N]`` runs the instant backend; the benchmark starts its processes this way.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from mlplane.bench.traces import PromptBuilder, TraceRecord, load_trace

OURS = ("round-robin", "least-load", "prefix-only", "default")
PEERS = ("sglang-router", "vllm-router")
ROUTERS = tuple(f"mlplane:{p}" for p in OURS) + PEERS
RESULT_KEYS = ("router", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "e2e_p50_s", "throughput_rps",
               "prefix_hit_rate", "completed", "failed")
# Simulator counters (vLLM names) read before and after each replay; the first one present is used.
HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
REQUESTS = ("vllm:request_success_total", "vllm:e2e_request_latency_seconds_count",
            "vllm:time_to_first_token_seconds_count")
STARTUP_TIMEOUT_S = 60.0


class BenchError(Exception):
    """A benchmark that cannot run as asked (bad option, a process that did not start)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive ports that are free now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise BenchError(f"found no {n} consecutive free ports on 127.0.0.1")


def verb_argv(verb: str, args: Sequence[str]) -> list[str]:
    """The command line that runs ``mlplane VERB ARGS`` with this interpreter."""
    return [sys.executable, "-m", "mlplane.bench.traffic", "verb", verb, *map(str, args)]


def peer_binary(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


class Proc:
    """A child process in its own session with its output in a log file."""

    def __init__(self, name: str, argv: list[str], logdir: Path):
        self.name = name
        self.argv = argv
        self.log_path = logdir / f"{name.replace(':', '_')}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        with open(self.log_path, "wb") as out:
            self.p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, env=env)

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 1500) -> str:
        try:
            data = self.log_path.read_bytes()[-n:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def cpu_s(self) -> float | None:
        """User + system CPU seconds the process has used so far (Linux /proc), None if unknown."""
        try:
            fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self, timeout: float = 5.0) -> None:
        if self.p.poll() is not None:
            return
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(timeout)


def router_argv(router: str, port: int, backends: Sequence[str]) -> list[str]:
    """The command line of ``router`` listening on ``port`` in front of ``backends`` (URLs)."""
    if router.startswith("mlplane:"):
        args = ["--host", "127.0.0.1", "--port", port]
        for url in backends:
            args += ["--backend", url]
        return verb_argv("gateway", args + ["--policy", router.split(":", 1)[1]])
    binary = peer_binary(router)
    if binary is None:
        raise BenchError(f"{router} is not installed (pip install {router}; it is in mlplane's 'bench' extra)")
    # Both peers export Prometheus metrics on port 29000 by default: give each run its own port.
    common = ["--host", "127.0.0.1", "--port", str(port), "--policy", "cache_aware",
              "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    if router == "sglang-router":
        return [binary, "launch", *common, "--log-level", "warn", "--worker-urls", *backends]
    if router == "vllm-router":
        return [binary, *common, "--log-level", "warning", "--worker-urls", *backends]
    raise BenchError(f"unknown router {router!r}; known: {', '.join(ROUTERS)}")


def parse_routers(text: str | None) -> list[str]:
    if not text:
        return list(ROUTERS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in ROUTERS:
            raise BenchError(f"--routers: unknown router {n!r}; known: {', '.join(ROUTERS)}")
    if not names:
        raise BenchError("--routers: no router named")
    return names


# --- HTTP helpers ------------------------------------------------------------------------------

async def get(client, address: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    from mlplane.net.http import ConnectError, ResponseError

    try:
        resp = await client.request("GET", address, path, timeout=timeout)
        body = await asyncio.wait_for(resp.read(), timeout)
        return resp.status, body
    except (ConnectError, ResponseError, asyncio.TimeoutError, OSError):
        return 0, b""


async def wait_ready(client, procs: Sequence[Proc], address: str, path: str, timeout: float) -> None:
    """Until GET ``path`` on ``address`` answers 200; error if a process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if not p.alive():
                raise BenchError(f"{p.name} exited with code {p.p.returncode}: {p.tail()}")
        status, _ = await get(client, address, path, timeout=1.0)
        if status == 200:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{procs[-1].name} did not answer 200 on http://{address}{path} within "
                             f"{timeout:.0f} s: {procs[-1].tail()}")
        await asyncio.sleep(0.1)


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


# --- statistics --------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in 0..100; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)


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
    sim_args: list[str] = field(default_factory=list)


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
    from mlplane.net.http import ConnectError, ResponseError

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
        "ttft_p50_s": _round(percentile(ttfts, 50)),
        "ttft_p90_s": _round(percentile(ttfts, 90)),
        "ttft_p99_s": _round(percentile(ttfts, 99)),
        "e2e_p50_s": _round(percentile(e2es, 50)),
        "throughput_rps": round(len(ok) / wall_s, 3) if wall_s > 0 else 0.0,
        "prefix_hit_rate": round(hits / queries, 4) if queries > 0 else None,
        "completed": len(ok),
        "failed": len(outcomes) - len(ok),
        "ttft_mean_s": _round(statistics.fmean(ttfts) if ttfts else None),
        "e2e_p90_s": _round(percentile(e2es, 90)),
        "e2e_p99_s": _round(percentile(e2es, 99)),
        "requests_per_server": per_server,
        "load_cv": round(statistics.pstdev(per_server) / mean, 4) if mean > 0 else None,
        "max_server_share": round(max(per_server) / total, 4) if total else None,
        "min_server_share": round(min(per_server) / total, 4) if total else None,
        "client_lag_p99_s": _round(percentile([o.lag for o in outcomes], 99)),
        "wall_s": round(wall_s, 2),
    }
    if errors:
        res["errors"] = errors
    return res


def error_result(router: str, k: int, message: str) -> dict:
    return {"router": router, "ttft_p50_s": None, "ttft_p90_s": None, "ttft_p99_s": None, "e2e_p50_s": None,
            "throughput_rps": 0.0, "prefix_hit_rate": None, "completed": 0, "failed": k, "error": message}


def sim_argv(s: TrafficSettings, port: int) -> list[str]:
    return verb_argv("serve-sim", ["--servers", s.servers, "--port", port, "--time-scale", s.time_scale,
                                   "--seed", s.seed, *s.sim_args])


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
    from mlplane.net.http import Client

    records = load_trace(s.trace, s.requests, s.skip)
    if not records:
        raise BenchError(f"--skip {s.skip}: the trace has no requests after the first {s.skip}")
    builder = PromptBuilder()
    prompts = [builder.prompt(r) for r in records]
    results, ttfts = [], {}
    client = Client(max_idle_per_host=4096)
    try:
        with tempfile.TemporaryDirectory(prefix="mlplane-bench-traffic-") as tmp:
            for router in routers:
                res, samples = await _run_router(client, router, s, records, prompts, Path(tmp))
                results.append(res)
                ttfts[router] = samples
    finally:
        await client.aclose()
    return results, ttfts


def run_traffic(s: TrafficSettings, routers: Sequence[str]) -> tuple[list[dict], dict[str, list[float]]]:
    """Every router in turn over the same trace slice: (result rows, TTFT samples per router)."""
    from mlplane.net.http import run

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
    from mlplane.bench.plot import cdf_and_bars

    ok = [r for r in results if r.get("completed")]
    series = {name: [r.get(key) if r.get(key) is not None else float("nan") for r in ok]
              for name, key in (("p50", "ttft_p50_s"), ("p90", "ttft_p90_s"), ("p99", "ttft_p99_s"))}
    short = [r["router"].replace("mlplane:", "") for r in ok]
    return cdf_and_bars({r["router"]: ttfts.get(r["router"], []) for r in ok}, short, series,
                        "TTFT CDF", "time to first token (s)", "TTFT percentiles", "seconds")


def _s(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if unit == "ms" else f"{v:.3f}"


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
    by = {r["router"]: r for r in results if r.get("ttft_p90_s") is not None}
    ours = by.get("mlplane:default")
    if ours is None:
        return []
    rows = []
    peers = [by[p] for p in PEERS if p in by]
    if peers:
        best = min(peers, key=lambda r: r["ttft_p90_s"])
        rows.append(f"| TTFT p90, mlplane:default vs the better peer | {ours['ttft_p90_s']:.3f} s "
                    f"| {best['ttft_p90_s']:.3f} s ({best['router']}) = "
                    f"{ours['ttft_p90_s'] / best['ttft_p90_s']:.2f}x | <= 0.8x |")
    rr = by.get("mlplane:round-robin")
    if rr is not None:
        rows.append(f"| TTFT p90, mlplane:default vs round-robin | {ours['ttft_p90_s']:.3f} s "
                    f"| {rr['ttft_p90_s']:.3f} s = {ours['ttft_p90_s'] / rr['ttft_p90_s']:.2f}x | <= 0.5x |")
    return rows


def overhead_goal_rows(rows: Sequence[dict]) -> list[str]:
    """Issue 5's overhead goals as benchmark-table rows: added p99 at the fixed rate, max req/s vs peers."""
    by = {r["router"]: r for r in rows if "error" not in r}
    ours = by.get("mlplane:default")
    if ours is None:
        return []
    out = [f"| added latency p99, mlplane:default | {ours['added_p99_ms']:.3f} ms | | < 2 ms |"]
    peers = [by[p] for p in PEERS if p in by]
    if peers:
        best = max(peers, key=lambda r: r["max_rps"])
        out.append(f"| max req/s, mlplane:default vs the faster peer | {ours['max_rps']:,.0f} "
                   f"| {best['max_rps']:,.0f} ({best['router']}) = {ours['max_rps'] / best['max_rps']:.2f}x "
                   f"| >= 0.5x |")
    return out


# --- the overhead mode -------------------------------------------------------------------------

INSTANT_BODY = orjson.dumps({"id": "cmpl-instant", "object": "text_completion", "created": 0, "model": "instant",
                             "choices": [{"index": 0, "text": " ok", "logprobs": None, "finish_reason": "length"}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
INSTANT_MODELS = orjson.dumps({"object": "list", "data": [{"id": "instant", "object": "model", "created": 0,
                                                           "owned_by": "mlplane", "max_model_len": 4096}]})
INSTANT_METRICS = (b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"instant\"} 0\n"
                   b"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"instant\"} 0\n"
                   b"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"instant\"} 0\n")


async def _instant_backend(port: int, servers: int) -> None:
    from mlplane.net.http import Response, start_server

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


async def _fixed_rate(client, address: str, body: bytes, rate: float, duration: float) -> tuple[list[float], int]:
    """Open loop at ``rate`` req/s for ``duration`` s: (latencies of the good answers, failures)."""
    lat: list[float] = []
    failed = 0

    async def one(t_sched: float) -> None:
        nonlocal failed
        t0 = time.perf_counter()
        try:
            resp = await client.request("POST", address, "/v1/completions",
                                        headers={"content-type": "application/json"}, body=body, timeout=10.0)
            await resp.read()
            if resp.status == 200:
                lat.append(time.perf_counter() - t0)
            else:
                failed += 1
        except Exception:  # noqa: BLE001 (every failure counts the same here)
            failed += 1

    n = int(rate * duration)
    start = time.perf_counter() + 0.02
    tasks = []
    for i in range(n):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    return lat, failed


async def _closed_loop(client, address: str, body: bytes, concurrency: int, duration: float) -> tuple[float, int]:
    """``concurrency`` connections each sending the next request when the last returns: (req/s, failures)."""
    done = failed = 0
    end = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done, failed
        while time.perf_counter() < end:
            try:
                resp = await client.request("POST", address, "/v1/completions",
                                            headers={"content-type": "application/json"}, body=body, timeout=10.0)
                await resp.read()
                if resp.status == 200:
                    done += 1
                else:
                    failed += 1
            except Exception:  # noqa: BLE001
                failed += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - t0), failed


@dataclass
class OverheadSettings:
    rate: float = 500.0
    duration_s: float = 5.0
    concurrency: int = 64
    servers: int = 2


async def _measure(client, address: str, body: bytes, o: OverheadSettings, label: str) -> dict:
    await _fixed_rate(client, address, body, min(o.rate, 200.0), 0.5)  # warm the connections
    lat, failed = await _fixed_rate(client, address, body, o.rate, o.duration_s)
    rps, failed2 = await _closed_loop(client, address, body, o.concurrency, o.duration_s)
    row = {"p50_ms": _round(percentile([x * 1000 for x in lat], 50), 3),
           "p99_ms": _round(percentile([x * 1000 for x in lat], 99), 3),
           "max_rps": round(rps, 1), "failed": failed + failed2}
    log(f"[{label}] p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms at {o.rate:.0f} req/s; "
        f"max {row['max_rps']} req/s at concurrency {o.concurrency}")
    return row


async def run_overhead_async(routers: Sequence[str], o: OverheadSettings) -> list[dict]:
    from mlplane.net.http import Client

    body = orjson.dumps({"model": "instant", "prompt": "hello world", "max_tokens": 1})
    rows: list[dict] = []
    async with Client(max_idle_per_host=4096) as client:
        return await _overhead(client, body, routers, o, rows)


async def _overhead(client, body: bytes, routers: Sequence[str], o: OverheadSettings, rows: list[dict]) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="mlplane-bench-overhead-") as tmp:
        logdir = Path(tmp)
        base = free_ports(o.servers)
        backends = [f"127.0.0.1:{base + i}" for i in range(o.servers)]
        backend = Proc("instant-backend", [sys.executable, "-m", "mlplane.bench.traffic", "instant-backend",
                                           "--port", str(base), "--servers", str(o.servers)], logdir)
        try:
            for a in backends:
                await wait_ready(client, [backend], a, "/health", STARTUP_TIMEOUT_S)
            direct = await _measure(client, backends[0], body, o, "direct")
            rows.append({"router": "direct", "added_p50_ms": 0.0, "added_p99_ms": 0.0, **direct})
            for router in routers:
                proc = None
                try:
                    port = free_port()
                    proc = Proc(router, router_argv(router, port, [f"http://{a}" for a in backends]), logdir)
                    address = f"127.0.0.1:{port}"
                    await wait_ready(client, [backend, proc], address, "/v1/models", STARTUP_TIMEOUT_S)
                    # the direct figures again just before, so that both see the same machine load
                    lat, _ = await _fixed_rate(client, backends[0], body, o.rate, o.duration_s)
                    base50 = percentile([x * 1000 for x in lat], 50)
                    base99 = percentile([x * 1000 for x in lat], 99)
                    m = await _measure(client, address, body, o, router)
                    add50 = None if m["p50_ms"] is None or base50 is None else round(m["p50_ms"] - base50, 3)
                    add99 = None if m["p99_ms"] is None or base99 is None else round(m["p99_ms"] - base99, 3)
                    rows.append({"router": router, "added_p50_ms": add50, "added_p99_ms": add99, **m,
                                 "direct_p50_ms": _round(base50, 3), "direct_p99_ms": _round(base99, 3)})
                except BenchError as e:
                    log(f"[{router}] error: {e}")
                    rows.append({"router": router, "added_p50_ms": None, "added_p99_ms": None, "max_rps": None,
                                 "error": str(e)})
                finally:
                    if proc is not None:
                        proc.stop()
        finally:
            backend.stop()
    return rows


def run_overhead(routers: Sequence[str], o: OverheadSettings) -> list[dict]:
    from mlplane.net.http import run

    if not (o.rate > 0 and o.duration_s > 0 and o.concurrency > 0):
        raise BenchError("--rate, --duration and --concurrency must be positive")
    return run(run_overhead_async(routers, o))


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


# --- process entry points ----------------------------------------------------------------------

def _verb_main(verb: str, argv: list[str]) -> int:
    import importlib

    module = importlib.import_module(f"mlplane.cli.{verb.replace('-', '_')}")
    parser = argparse.ArgumentParser(prog="mlplane")
    sub = parser.add_subparsers(dest="command")
    module.add_parser(sub)
    args = parser.parse_args([verb, *argv])
    return args.func(args) or 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verb"] and len(argv) >= 2:
        return _verb_main(argv[1], argv[2:])
    if argv[:1] == ["instant-backend"]:
        p = argparse.ArgumentParser(prog="python -m mlplane.bench.traffic instant-backend")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--servers", type=int, default=1)
        a = p.parse_args(argv[1:])
        from mlplane.net.http import run

        run(_instant_backend(a.port, a.servers))
        return 0
    from mlplane.cli.bench import main as bench_main

    return bench_main(["traffic", *argv])


if __name__ == "__main__":
    sys.exit(main())
