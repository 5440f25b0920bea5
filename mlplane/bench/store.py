"""Store and API benchmark: durable writes/s in process, creates/s over HTTP, watch-event latency.

    python -m mlplane.bench.store [--quick] [--json]

Each number is measured next to a baseline in the same run:

- durable writes/s of ``EmbeddedStore`` with concurrent writers (1, 8 and 32 threads; the best is
  reported) versus the same JSON written by plain sqlite3 (WAL, synchronous=FULL) with one
  transaction per write, which is what a store without group commit can do;
- creates/s through the HTTP API with concurrent keep-alive clients versus ``GET /healthz``
  requests/s on the same server (the ceiling of the HTTP layer itself);
- watch-event latency p50/p99 over HTTP: from the start of a create call to a separate watch
  client receiving its ADDED event, at a moderate rate.

The API server runs in its own process, as ``mlplane up`` runs it, with the same GIL switch
interval (0.5 ms instead of Python's default 5 ms, which adds up to 5 ms to every hand-over
between threads under load); this process uses it too.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from mlplane.api import Namespace, ObjectMeta, Pod
from mlplane.control.store.embedded import EmbeddedStore
from mlplane.control.store.http import HTTPStore

SWITCH_INTERVAL = 0.0005  # seconds; what the `mlplane up` server process uses
GOALS = {"writes_per_s": 10_000, "http_creates_per_s": 1_000, "watch_p99_ms": 50.0}

_SERVER = """
import sys
sys.setswitchinterval(float(sys.argv[2]))
from mlplane.api import Namespace, ObjectMeta
from mlplane.control.apiserver import ApiServer
from mlplane.control.store.embedded import EmbeddedStore
store = EmbeddedStore(sys.argv[1])
store.create(Namespace(metadata=ObjectMeta(name="default")))
server = ApiServer(store).start()
print(server.url, flush=True)
sys.stdin.read()  # serve until the benchmark closes our stdin
server.stop()
store.close()
"""


def _pod(name: str) -> Pod:
    """A small but realistic pod: what a Job controller writes."""
    return Pod.model_validate({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench", "job-name": "bench"}},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "python:3.11", "command": ["python", "-c", "print('hi')"],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}})


def _run_threads(count: int, target) -> float:
    """Run ``target(i)`` on ``count`` threads at once; the seconds until all are done."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


# -- (a) durable writes in process --------------------------------------------------------------------

def embedded_writes(folder: str, writers: int, total: int, label: str = "") -> float:
    """Creates/s of EmbeddedStore with ``writers`` threads (objects built before the clock starts)."""
    store = EmbeddedStore(os.path.join(folder, f"embedded-{label}{writers}.db"))
    try:
        store.create(Namespace(metadata=ObjectMeta(name="default")))
        per = total // writers
        objects = [[_pod(f"w{i}-{j}") for j in range(per)] for i in range(writers)]

        def write(i: int) -> None:
            for obj in objects[i]:
                store.create(obj)

        return per * writers / _run_threads(writers, write)
    finally:
        store.close()


def embedded_batched_writes(folder: str, batch: int, total: int) -> float:
    """Creates/s of EmbeddedStore.create_many in batches (how the Job controller creates its pods):
    every object is acknowledged only after the one commit that holds its batch."""
    store = EmbeddedStore(os.path.join(folder, f"embedded-batched-{batch}.db"))
    try:
        store.create(Namespace(metadata=ObjectMeta(name="default")))
        objects = [_pod(f"b{j}") for j in range(total)]
        start = time.perf_counter()
        for i in range(0, total, batch):
            store.create_many(objects[i:i + batch])
        return total / (time.perf_counter() - start)
    finally:
        store.close()


def sqlite_baseline(folder: str, total: int) -> float:
    """Writes/s of plain sqlite3 committing each write alone (WAL, synchronous=FULL), same JSON."""
    db = sqlite3.connect(os.path.join(folder, "baseline.db"), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE objects (resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, "
                   "rv INTEGER NOT NULL, data TEXT, PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID")
        rows = [("pods", "default", f"b{i}", i + 1, _pod(f"b{i}").to_json()) for i in range(total)]
        start = time.perf_counter()
        for row in rows:
            db.execute("INSERT INTO objects VALUES (?, ?, ?, ?, ?)", row)  # autocommit: one transaction each
        return total / (time.perf_counter() - start)
    finally:
        db.close()


# -- the API server process ------------------------------------------------------------------------------

class _Server:
    """An API server over a fresh embedded store, in a child process like `mlplane up`."""

    def __init__(self, folder: str):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, os.path.join(folder, "server.db"),
                                      str(SWITCH_INTERVAL)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.url = self.proc.stdout.readline().decode().strip()
        if not self.url:
            self.close()
            raise RuntimeError("the benchmark's API server did not start")

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


# -- (b) creates over HTTP -------------------------------------------------------------------------------

def http_creates(url: str, clients: int, total: int, prefix: str) -> float:
    """Creates/s through the API with ``clients`` threads, each on its own keep-alive connection."""
    per = total // clients
    objects = [[_pod(f"{prefix}{i}-{j}") for j in range(per)] for i in range(clients)]
    store = HTTPStore(url)
    try:
        store.healthz()

        def create(i: int) -> None:
            store.healthz()  # open this thread's connection before the clock starts
            for obj in objects[i]:
                store.create(obj)

        return per * clients / _run_threads(clients, create)
    finally:
        store.close()


def http_healthz(url: str, clients: int, total: int) -> float:
    """GET /healthz requests/s with the same clients: what the HTTP layer alone can serve."""
    per = total // clients
    store = HTTPStore(url)
    try:
        def ping(i: int) -> None:
            for _ in range(per):
                if not store.healthz():
                    raise RuntimeError("healthz failed")

        return per * clients / _run_threads(clients, ping)
    finally:
        store.close()


# -- (c) watch latency ------------------------------------------------------------------------------------

def watch_latency(url: str, count: int, rate: float) -> tuple[float, float]:
    """p50 and p99 milliseconds from a create call starting to the watcher receiving its ADDED event."""
    writer, reader = HTTPStore(url), HTTPStore(url)
    started: dict[str, float] = {}
    received: dict[str, float] = {}
    objects = [_pod(f"lat-{i}") for i in range(count)]
    start_rv = writer.list(Pod, "default", label_selector="app=nothing").resource_version
    watch = reader.watch(Pod, "default", resource_version=start_rv)

    def read() -> None:
        for event in watch:
            if event.type == "ADDED":
                received[event.object.name] = time.perf_counter()
                if len(received) == count:
                    return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        interval = 1.0 / rate
        begin = time.perf_counter()
        for i, obj in enumerate(objects):
            delay = begin + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            started[obj.name] = time.perf_counter()
            writer.create(obj)
        thread.join(timeout=30)
    finally:
        watch.stop()
        thread.join()
        writer.close()
        reader.close()
    if len(received) < count:
        raise RuntimeError(f"the watcher received {len(received)} of {count} events")
    latencies = sorted((received[name] - t) * 1000 for name, t in started.items())
    return statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]


# -- the whole benchmark ---------------------------------------------------------------------------------

def run(quick: bool = False) -> dict:
    """Run every measurement; the numbers as a dict (also what ``--json`` prints)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    scale = 0.25 if quick else 1.0
    results: dict = {"switch_interval_s": SWITCH_INTERVAL, "quick": quick}
    try:
        with tempfile.TemporaryDirectory(prefix="mlplane-bench-") as folder:
            embedded_writes(folder, 8, 500, "warm-")  # warm up: first-use costs of pydantic and sqlite3
            sweep = {n: embedded_writes(folder, n, int(8000 * scale)) for n in (1, 8, 32)}
            results["writes_per_s_by_writers"] = sweep
            results["writes_per_s"] = max(sweep.values())
            results["batched_writes_per_s"] = embedded_batched_writes(folder, 100, int(8000 * scale))
            results["baseline_writes_per_s"] = sqlite_baseline(folder, int(2000 * scale))
            server = _Server(folder)
            try:
                clients = 16
                results["http_clients"] = clients
                http_creates(server.url, clients, int(800 * scale), "warm")  # warm up both processes
                results["http_creates_per_s"] = http_creates(server.url, clients, int(6400 * scale), "c")
                results["http_healthz_per_s"] = http_healthz(server.url, clients, int(6400 * scale))
                p50, p99 = watch_latency(server.url, int(2000 * scale), rate=400.0)
                results["watch_p50_ms"], results["watch_p99_ms"] = p50, p99
            finally:
                server.close()
    finally:
        sys.setswitchinterval(previous)
    return results


def rows(r: dict) -> list[str]:
    """The markdown table rows (metric | mlplane | baseline | goal) for results from ``run()``."""
    cells = [
        ("durable writes/s in process (best of 1/8/32 writers)", f"{r['writes_per_s']:,.0f}",
         f"{r['baseline_writes_per_s']:,.0f} (sqlite3, 1 txn/write)", f">= {GOALS['writes_per_s']:,}"),
        ("durable writes/s in process, create_many batches of 100 (1 writer)", f"{r['batched_writes_per_s']:,.0f}",
         f"{r['baseline_writes_per_s']:,.0f} (sqlite3, 1 txn/write)", f">= {GOALS['writes_per_s']:,}"),
        (f"creates/s over HTTP ({r['http_clients']} keep-alive clients)", f"{r['http_creates_per_s']:,.0f}",
         f"{r['http_healthz_per_s']:,.0f} (GET /healthz/s)", f">= {GOALS['http_creates_per_s']:,}"),
        ("watch latency p50 over HTTP (ms)", f"{r['watch_p50_ms']:.1f}", "", ""),
        ("watch latency p99 over HTTP (ms)", f"{r['watch_p99_ms']:.1f}", "", f"< {GOALS['watch_p99_ms']:.0f}"),
    ]
    return ["| " + " | ".join(row) + " |" for row in cells]


def table(r: dict) -> str:
    """The whole report: header, rows, and how the numbers were taken."""
    sweep = ", ".join(f"{n}: {v:,.0f}" for n, v in r["writes_per_s_by_writers"].items())
    return "\n".join([
        "| metric | mlplane | baseline | goal |", "| --- | ---: | ---: | ---: |", *rows(r), "",
        f"Writers sweep (writes/s by writer threads): {sweep}.",
        f"GIL switch interval {r['switch_interval_s'] * 1000:.1f} ms in this process and in the API server "
        "process (as `mlplane up` sets it); the server runs in its own process."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlplane.bench.store", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the work (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")
    args = parser.parse_args(argv)
    print(f"running the store benchmark{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
    results = run(quick=args.quick)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
