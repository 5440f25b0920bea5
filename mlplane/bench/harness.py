"""What the two traffic benchmarks (``traffic.py``, ``overhead.py``) share: the routers under test and
their command lines, child processes that cannot outlive the benchmark, readiness checks,
percentiles, and the report both print.

Our processes run as ``python -m mlplane.cli.main VERB ...`` (the real CLI); the peers are the
``sglang-router`` and ``vllm-router`` scripts next to this interpreter (or on PATH).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlplane.net.http import ConnectError, ResponseError

OURS = ("round-robin", "least-load", "prefix-only", "default")
PEERS = ("sglang-router", "vllm-router")
ROUTERS = tuple(f"mlplane:{p}" for p in OURS) + PEERS
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


def mlplane_argv(verb: str, *args: object) -> list[str]:
    """The command line of ``mlplane VERB ARGS`` with this interpreter."""
    return [sys.executable, "-m", "mlplane.cli.main", verb, *map(str, args)]


def peer_binary(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """In the child before exec: SIGTERM when the benchmark process ends, even killed (Linux)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # it ended before prctl took effect
            os._exit(1)


class Proc:
    """A child process in its own session with its output in a log file. It gets SIGTERM when the
    benchmark process ends, however it ends, so an interrupted run leaves nothing behind."""

    def __init__(self, name: str, argv: Sequence[object], logdir: Path):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = logdir / f"{name.replace(':', '_')}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        with open(self.log_path, "wb") as out:
            self.p = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, env=env,
                                      preexec_fn=functools.partial(_die_with, os.getpid()))

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
        """SIGTERM to its process group, SIGKILL after ``timeout`` s."""
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
        return mlplane_argv("gateway", *args, "--policy", router.split(":", 1)[1])
    binary = peer_binary(router)
    if binary is None:
        raise BenchError(f"{router} is not installed (pip install {router}; it is in mlplane's 'bench' extra)")
    # Both peers export Prometheus metrics on 0.0.0.0:29000 by default: give each run its own port.
    common = ["--host", "127.0.0.1", "--port", str(port), "--policy", "cache_aware",
              "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    if router == "sglang-router":
        return [binary, "launch", *common, "--log-level", "warn", "--worker-urls", *backends]
    if router == "vllm-router":
        return [binary, *common, "--log-level", "warning", "--worker-urls", *backends]
    raise BenchError(f"unknown router {router!r}; known: {', '.join(ROUTERS)}")


def parse_routers(text: str | None) -> list[str]:
    """``--routers a,b``: the names, checked; all routers when empty."""
    if not text:
        return list(ROUTERS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in ROUTERS:
            raise BenchError(f"--routers: unknown router {n!r}; known: {', '.join(ROUTERS)}")
    if not names:
        raise BenchError("--routers: no router named")
    return names


# --- HTTP probes -------------------------------------------------------------------------------

async def get(client, address: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``path`` on ``address``: (status, body), or (0, b"") when it could not be read."""
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


# --- figures and the report --------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in 0..100; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def rounded(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)


def measured(rows: Sequence[dict], key: str) -> dict[str, dict]:
    """The result rows that have a figure under ``key``, by router name."""
    return {r["router"]: r for r in rows if r.get(key) is not None}


def best_peer(by: dict[str, dict], key: str, *, lowest: bool) -> dict | None:
    """The row of the peer router with the best ``key`` (lowest or highest); None without peers."""
    peers = [by[p] for p in PEERS if p in by]
    if not peers:
        return None
    return (min if lowest else max)(peers, key=lambda r: r[key])


@dataclass
class Report:
    """One benchmark run. ``doc`` is what ``-o json`` prints, ``table`` the benchmark's own markdown
    table, ``goals`` rows of issue 5's goals for the table of ``mlplane.bench.HEADER``."""

    doc: dict
    settings: dict
    table: list[str]
    goals: list[str]
    plot: str | None = None  # SVG

    def settings_line(self) -> str:
        return "settings: " + ", ".join(f"{k} {','.join(v) if isinstance(v, list) else v}"
                                        for k, v in self.settings.items() if k != "mode" and v is not None)
