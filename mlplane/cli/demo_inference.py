"""The traffic part of `mlplane demo`: an InferencePool of model-server pods behind `mlplane gateway`.

For each InferencePool among the applied manifests it waits until every pod the pool selects is
Ready (one endpoint per pod IP and target port), starts `mlplane gateway --pool NS/NAME` as a real
process, and sends requests through it: a completion, a streamed chat completion, and a few requests
that share a long prompt prefix. For each it prints which endpoint served it (the gateway's
``x-gateway-destination-endpoint-served`` header) and what came back.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import subprocess
import sys
import threading
import time

from mlplane.api.core import Pod
from mlplane.api.inference import InferenceObjective, InferencePool
from mlplane.cli.printers import pod_status
from mlplane.control.store.http import HTTPStore
from mlplane.gateway.discovery import pool_endpoints, pool_objectives, selects, serving

SERVED = "x-gateway-destination-endpoint-served"
OBJECTIVE = "x-llm-d-inference-objective"
PREFIX = ("You are a helpful assistant for a cluster of GPUs. Answer briefly and precisely. " * 24).strip()


class Failed(Exception):
    """A step of the traffic demo did not work; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _elapsed(t0: float) -> str:
    return f"[{time.monotonic() - t0:5.1f}s]"


def _why(store: HTTPStore, pod: Pod) -> str:
    """Why a pod does not serve: its status and its container's message, else its last log line."""
    for cs in pod.status.container_statuses or []:
        ended = [s.terminated for s in (cs.state, cs.last_state) if s is not None and s.terminated]
        messages = [t.message for t in ended] + [cs.state.waiting.message if cs.state.waiting else None]
        message = next((m for m in messages if m), None)
        if message:
            return f"{pod_status(pod)}: {message}"
    try:
        text = b"".join(store.logs(pod.namespace, pod.name, tail_lines=3)).decode(errors="replace").strip()
    except Exception:  # no log yet: the status says enough
        text = ""
    return f"{pod_status(pod)}: {text.splitlines()[-1]}" if text else pod_status(pod)


def wait_for_endpoints(store: HTTPStore, pool: InferencePool, timeout: float) -> dict[str, str]:
    """Wait until every pod the pool selects is serving; returns endpoint address -> pod name."""
    t0 = time.monotonic()
    last = ""
    while True:
        pods = store.list(Pod, pool.namespace).items
        selected = sorted((p for p in pods if selects(pool, p)), key=lambda p: p.name)
        endpoints = pool_endpoints(pool, pods)
        ready = [p for p in selected if serving(p)]
        line = (f"    inferencepool/{pool.name}: {len(ready)}/{len(selected)} selected pods ready, "
                f"{len(endpoints)} endpoint(s): {', '.join(e.address for e in endpoints) or '-'}")
        if line != last:
            print(f"{line}  {_elapsed(t0)}", flush=True)
            last = line
        if selected and len(ready) == len(selected):
            return {e.address: e.name.split("/", 1)[1].rsplit(":", 1)[0] for e in endpoints}
        if time.monotonic() - t0 > timeout:
            detail = "; ".join(f"{p.name}: {_why(store, p)}" for p in selected if not serving(p)) \
                or "no pod matches its selector"
            raise Failed(f"inferencepool/{pool.name} is not ready after {timeout:.0f}s: {detail}")
        time.sleep(0.2)


class GatewayProcess:
    """`mlplane gateway --server URL --pool NS/NAME` as a child process on a free port."""

    def __init__(self, server: str, pool: str):
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "mlplane.cli.main", "gateway", "--server", server, "--pool", pool,
                    "--port", str(self.port)]
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> str:
        """Start it and return its "gateway listening on ..." line."""
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise Failed(f"the gateway did not start within {timeout:.0f}s: {' | '.join(seen)}") from None
            if line is None:
                raise Failed(f"the gateway exited with {self.proc.wait()}: {' | '.join(seen)}")
            if line.startswith("gateway listening"):
                return line
            seen.append(line)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def stop(self) -> None:
        from mlplane.cli.demo import stop_process

        if self.proc is not None:
            stop_process(self.proc, timeout=10)


def post(port: int, path: str, body: dict, headers: dict[str, str] | None = None,
         timeout: float = 60) -> tuple[int, dict[str, str], bytes, float | None, float]:
    """POST JSON; returns status, headers (lower-case), body, seconds to the first body byte, total seconds.
    A streamed body is read as it arrives."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        first, parts = None, []
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            if first is None:
                first = time.monotonic() - t0
            parts.append(chunk)
        return (resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(parts), first,
                time.monotonic() - t0)
    finally:
        conn.close()


def first_answer(port: int, body: dict, timeout: float) -> tuple:
    """The first completion, retried while the servers are still starting (503/502, refused)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = post(port, "/v1/completions", body, {OBJECTIVE: "chat"})
            if result[0] not in (502, 503) or time.monotonic() > deadline:
                return result
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _served(headers: dict[str, str], pods: dict[str, str]) -> str:
    address = headers.get(SERVED, "")
    return f"{pods.get(address, '?')} ({address})" if address else "no endpoint (header missing)"


def _usage(usage: dict | None) -> str:
    if not usage:
        return "no usage"
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return (f"{usage.get('prompt_tokens')} prompt tokens ({cached} cached), "
            f"{usage.get('completion_tokens')} completion tokens")


def _sse_events(body: bytes) -> list[dict]:
    events = []
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[6:]))
    return events


def exercise_pool(store: HTTPStore, server: str, pool: InferencePool, timeout: float) -> None:
    """Wait for the pool, put a gateway in front of it, and show requests going through; Failed if not."""
    ref = f"{pool.namespace}/{pool.name}"
    print(f"==> inference: waiting for the endpoints of inferencepool/{pool.name} "
          f"(selector {','.join(f'{k}={v}' for k, v in pool.spec.selector.match_labels.items())}, "
          f"ports {','.join(map(str, pool.ports))})", flush=True)
    pods = wait_for_endpoints(store, pool, timeout)
    objectives = pool_objectives(pool, store.list(InferenceObjective, pool.namespace).items)
    if objectives:
        print("    objectives: " + ", ".join(f"{n} (priority {p}{', sheddable' if p < 0 else ''})"
                                              for n, p in objectives.items()))
    gateway = GatewayProcess(server, ref)
    print(f"==> mlplane gateway --server {server} --pool {ref} --port {gateway.port}", flush=True)
    try:
        print(f"    {gateway.start()}", flush=True)
        model = _model(gateway.port, timeout=30)
        print(f"    GET /v1/models: {model}")

        body = {"model": model, "prompt": "The three planes of mlplane are", "max_tokens": 24}
        print(f"==> POST /v1/completions  ({OBJECTIVE}: chat)", flush=True)
        status, headers, raw, _, took = first_answer(gateway.port, body, timeout=30)
        if status != 200:
            raise Failed(f"the completion got {status}: {raw[:300].decode(errors='replace')}")
        answer = json.loads(raw)
        print(f"    {status} in {took:.2f}s, served by {_served(headers, pods)}: "
              f"{answer['choices'][0]['text'].strip()!r}")
        print(f"    usage: {_usage(answer.get('usage'))}")

        chat = {"model": model, "messages": [{"role": "user", "content": "Stream me a short answer."}],
                "max_tokens": 24, "stream": True, "stream_options": {"include_usage": True}}
        print(f"==> POST /v1/chat/completions, streamed  ({OBJECTIVE}: batch)", flush=True)
        status, headers, raw, first, took = post(gateway.port, "/v1/chat/completions", chat, {OBJECTIVE: "batch"})
        if status != 200:
            raise Failed(f"the streamed chat completion got {status}: {raw[:300].decode(errors='replace')}")
        events = _sse_events(raw)
        text = "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices", []))
        usage = next((e["usage"] for e in reversed(events) if e.get("usage")), None)
        print(f"    {status}, {len(events)} SSE chunks (first after {first or 0:.2f}s, last after {took:.2f}s), "
              f"served by {_served(headers, pods)}: {text.strip()!r}")
        print(f"    usage: {_usage(usage)}")

        print(f"==> 6 completions that share a {len(PREFIX.encode())}-byte prompt prefix", flush=True)
        rows = []
        for i in range(6):
            status, headers, raw, _, took = post(gateway.port, "/v1/completions",
                                                 {"model": model, "prompt": f"{PREFIX}\nQuestion {i}: why?",
                                                  "max_tokens": 8})
            if status != 200:
                raise Failed(f"shared-prefix request {i} got {status}: {raw[:300].decode(errors='replace')}")
            usage = json.loads(raw).get("usage") or {}
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            rows.append((pods.get(headers.get(SERVED, ""), "?"), cached, usage.get("prompt_tokens", 0), took))
        for i, (pod, cached, prompt, took) in enumerate(rows):
            print(f"    request {i}: {pod}, {cached}/{prompt} prompt tokens cached, {took * 1000:.0f} ms")
    finally:
        gateway.stop()


def _model(port: int, timeout: float) -> str:
    """The model the pool serves, from the gateway's /v1/models (the union of its servers' models),
    asked again while the servers are still starting."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/v1/models")
            data = json.loads(conn.getresponse().read() or b"{}")
        except (OSError, ValueError):
            data = {}
        finally:
            conn.close()
        models = [m.get("id") for m in data.get("data") or [] if isinstance(m, dict) and m.get("id")]
        if models:
            return models[0]
        if time.monotonic() > deadline:
            raise Failed(f"the gateway's /v1/models lists no model after {timeout:.0f}s: {data}")
        time.sleep(0.2)
