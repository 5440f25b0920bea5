"""The gateway's data path against real model-server stand-ins on loopback (servers built on
mlplane.net.http that speak the OpenAI API and expose vLLM metric names).

Behaviour follows the GIE endpoint-picker protocol (gateway-api-inference-extension
docs/proposals/004-endpoint-picker-protocol): 503 when no endpoint is ready, 429 when a sheddable
request meets a saturated pool, ``x-gateway-destination-endpoint-served`` names the endpoint that served.
"""

import asyncio
import os
import socket
import sys

import orjson

from mlplane.gateway.app import make_policy, GatewayConfig
from mlplane.gateway.metrics import GatewayMetrics
from mlplane.gateway.pool import PoolRuntime
from mlplane.gateway.proxy import SERVED_HEADER, Gateway
from mlplane.net.http import Client, Response, StreamResponse, json_response, start_server
from mlplane.policy.traffic.types import Decision, Endpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def arun(coro, timeout=15):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Backend:
    """A model-server stand-in: /metrics with a settable queue, /v1/models, and completions that echo the
    raw body (non-streaming) or stream SSE chunks, optionally one per ``gates`` event, optionally dying
    after ``die_after`` chunks."""

    def __init__(self, name, models=("m",), waiting=0):
        self.name = name
        self.models = [m if isinstance(m, dict) else {"id": m, "object": "model"} for m in models]
        self.waiting = waiting
        self.bodies = []
        self.gates = None
        self.die_after = None
        self.fail_status = None
        self.hang = None  # an Event: completions wait for it before answering
        self.streams_closed = 0
        self.stream_type = "text/event-stream"
        self.received = asyncio.Event()  # set when a completion request arrives

    async def start(self):
        self.server = await start_server(self.handle, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.port}"
        return self

    async def handle(self, req):
        if req.path == "/metrics":
            return Response(200, f'vllm:num_requests_waiting{{engine="0"}} {self.waiting}\n'
                                 f'vllm:num_requests_running{{engine="0"}} 0\n'
                                 f'vllm:kv_cache_usage_perc{{engine="0"}} 0.1\n', content_type="text/plain")
        if req.path == "/v1/models":
            return json_response(200, {"object": "list", "data": self.models})
        self.bodies.append(req.body)
        self.headers = req.headers
        self.received.set()
        if self.hang is not None:
            await self.hang.wait()
        if self.fail_status:
            return json_response(self.fail_status, {"error": {"message": "engine overloaded"}})
        if orjson.loads(req.body).get("stream"):
            return StreamResponse(200, self.stream(), headers={"x-backend": self.name},
                                  content_type=self.stream_type)
        return json_response(200, {"backend": self.name, "raw": req.body.decode()}, headers={"x-backend": self.name})

    async def stream(self):
        try:
            async for chunk in self._chunks():
                yield chunk
        finally:
            self.streams_closed += 1

    async def _chunks(self):
        for i in range(3):
            if self.die_after is not None and i == self.die_after:
                raise RuntimeError("engine crashed")  # the server aborts the connection mid-body
            if self.gates is not None and i > 0:
                await self.gates[i - 1].wait()
            yield b'data: {"n": %d}\n\n' % i
        yield b"data: [DONE]\n\n"

    async def close(self):
        await self.server.close()


async def until(condition, timeout=5.0):
    """Wait (bounded) until ``condition()`` holds, checking as the loop runs."""
    async def poll():
        while not condition():
            await asyncio.sleep(0.002)
    await asyncio.wait_for(poll(), timeout)


def assert_idle(pool):
    """Nothing is left counted in flight at any endpoint."""
    assert [(e.name, e.inflight, e.inflight_tokens) for e in pool.endpoints] == [
        (e.name, 0, 0) for e in pool.endpoints]


async def broken_head_server(reply):
    """A raw TCP server that reads a request and answers ``reply`` bytes, then closes."""
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


def dead_address():
    """A loopback address where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


class Harness:
    """Backends + one gateway (one pool) in this event loop; ``client`` talks to the gateway."""

    def __init__(self, addresses, policy="round-robin", objectives=None, scrape=False, flow_control=False,
                 request_timeout=5.0):
        self.request_timeout = request_timeout
        self.addresses = addresses
        self.policy = policy
        self.objectives = objectives
        self.scrape = scrape
        self.flow_control = flow_control

    async def __aenter__(self):
        self.upstream = Client()
        self.metrics = GatewayMetrics()
        picker, flow, detector = make_policy(GatewayConfig(policy=self.policy, flow_control=self.flow_control))
        self.pool = PoolRuntime("default", picker, self.upstream, flow=flow, detector=detector,
                                objectives=self.objectives, metrics=self.metrics)
        self.pool.set_endpoints([Endpoint(name=a, address=a) for a in self.addresses])
        if self.scrape:  # one scrape of every endpoint (metrics and model lists), no background tasks
            for e in self.pool.endpoints:
                await self.pool.scrape(e)
                await self.pool.fetch_models(e)
        self.gateway = Gateway([self.pool], self.upstream, self.metrics, request_timeout=self.request_timeout)
        self.server = await start_server(self.gateway.handle, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.port}"
        self.client = Client()
        return self

    async def post(self, body, path="/v1/completions", headers=None):
        resp = await self.client.request("POST", self.address, path, headers or {}, body, timeout=10)
        return resp, await resp.read()

    async def __aexit__(self, *exc):
        await self.client.aclose()
        await self.server.close()
        await self.pool.close()
        await self.upstream.aclose()


COMPLETION = b'{"model": "m",  "prompt": "hello there",\n "max_tokens": 4, "zz_unknown_field": [1, 2.50]}'


def test_routes_to_backends_and_forwards_the_body_unchanged():
    async def main():
        a, b = await Backend("a").start(), await Backend("b").start()
        async with Harness([a.address, b.address]) as h:
            served = []
            for _ in range(4):
                resp, body = await h.post(COMPLETION)
                assert resp.status == 200
                doc = orjson.loads(body)
                assert doc["raw"] == COMPLETION.decode()  # not re-serialised: spacing and order kept
                backend = {"a": a, "b": b}[doc["backend"]]
                assert resp.headers[SERVED_HEADER] == backend.address
                assert resp.headers["x-backend"] == doc["backend"]  # backend headers pass through
                served.append(doc["backend"])
            assert sorted(served) == ["a", "a", "b", "b"]  # round-robin over both
            assert a.bodies == [COMPLETION, COMPLETION] and b.bodies == [COMPLETION, COMPLETION]
        await a.close()
        await b.close()

    arun(main())


def test_streaming_chunks_arrive_as_the_backend_sends_them():
    async def main():
        a = await Backend("a").start()
        a.gates = [asyncio.Event(), asyncio.Event()]
        async with Harness([a.address]) as h:
            resp = await h.client.request("POST", h.address, "/v1/chat/completions", {},
                                          b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}')
            assert resp.status == 200
            assert resp.headers["content-type"] == "text/event-stream"
            assert resp.headers[SERVED_HEADER] == a.address
            chunks = resp.iter_chunks()
            # the backend cannot send chunk 1 before gate 0 opens: chunk 0 came through on its own
            assert await chunks.__anext__() == b'data: {"n": 0}\n\n'
            a.gates[0].set()
            assert await chunks.__anext__() == b'data: {"n": 1}\n\n'
            a.gates[1].set()
            rest = b"".join([c async for c in chunks])
            assert rest == b'data: {"n": 2}\n\ndata: [DONE]\n\n'
            key = ("default", a.address)
            assert h.metrics.ttft.count(key) == 1 and h.metrics.duration.count(key) == 1
            assert h.pool.endpoints[0].inflight == 0
        await a.close()

    arun(main())


def test_retries_on_the_next_endpoint_when_the_first_refuses_connections():
    async def main():
        live = await Backend("live").start()
        dead = dead_address()
        async with Harness([dead, live.address]) as h:
            for _ in range(2):  # round-robin sends one of the two to the dead endpoint first
                resp, body = await h.post(COMPLETION)
                assert resp.status == 200
                assert resp.headers[SERVED_HEADER] == live.address
            assert h.metrics.retries.get(("default",)) == 1
            dead_ep = next(e for e in h.pool.endpoints if e.address == dead)
            assert not dead_ep.healthy
            assert all(e.inflight == 0 for e in h.pool.endpoints)
        await live.close()

    arun(main())


def test_502_when_no_endpoint_can_be_reached():
    async def main():
        async with Harness([dead_address(), dead_address()]) as h:
            resp, body = await h.post(COMPLETION)
            assert resp.status == 502
            assert orjson.loads(body)["error"]["message"].startswith("no endpoint of pool default could be reached")
            assert h.metrics.failed.get(("default", "connect")) == 1
            assert all(not e.healthy and e.inflight == 0 for e in h.pool.endpoints)
            assert SERVED_HEADER not in resp.headers
            resp, body = await h.post(COMPLETION)  # both are known down now
            assert resp.status == 503
            assert_idle(h.pool)

    arun(main())


def test_a_5xx_answer_goes_to_the_client_without_a_retry():
    """The backend ran the request: sending it again elsewhere could run it twice (retry only when
    nothing reached the endpoint)."""
    async def main():
        bad, good = await Backend("bad").start(), await Backend("good").start()
        bad.fail_status = 503
        async with Harness([bad.address, good.address]) as h:
            statuses = {}
            for _ in range(2):  # round-robin: one to each
                resp, body = await h.post(COMPLETION)
                statuses[resp.headers[SERVED_HEADER]] = resp.status
                if resp.status == 503:
                    assert orjson.loads(body)["error"]["message"] == "engine overloaded"  # the backend's answer
            assert statuses == {bad.address: 503, good.address: 200}
            assert len(bad.bodies) == 1 and len(good.bodies) == 1
            assert h.metrics.retries.get(("default",)) == 0
            assert h.metrics.failed.get(("default", "backend_error")) == 1
            assert_idle(h.pool)
        await bad.close()
        await good.close()

    arun(main())


def test_backend_dying_mid_stream_ends_the_client_stream():
    async def main():
        a = await Backend("a").start()
        a.die_after = 1
        async with Harness([a.address]) as h:
            resp = await h.client.request("POST", h.address, "/v1/completions", {},
                                          b'{"model":"m","prompt":"x","stream":true}')
            assert resp.status == 200
            body = b"".join([c async for c in resp.iter_chunks()])  # ends: no hang
            assert body.startswith(b'data: {"n": 0}\n\n')
            error = orjson.loads(body.split(b"\n\n")[1][len(b"data: "):])
            assert error["error"]["code"] == 502 and "broke off the stream" in error["error"]["message"]
            assert h.metrics.failed.get(("default", "stream_broken")) == 1
            assert_idle(h.pool)
        await a.close()

    arun(main())


def test_client_leaving_mid_stream_releases_the_backend_and_the_endpoint():
    async def main():
        a = await Backend("a").start()
        a.gates = [asyncio.Event(), asyncio.Event()]
        async with Harness([a.address]) as h:
            resp = await h.client.request("POST", h.address, "/v1/completions", {},
                                          b'{"model":"m","prompt":"x","stream":true}')
            assert await resp.iter_chunks().__anext__() == b'data: {"n": 0}\n\n'
            assert h.pool.endpoints[0].inflight == 1
            resp.close()  # the client hangs up
            while a.streams_closed == 0 or h.pool.endpoints[0].inflight:
                await asyncio.sleep(0.005)  # the gateway drops its upstream connection; the backend sees it
            assert h.metrics.failed.get(("default", "client_gone")) == 1
            assert_idle(h.pool)
        await a.close()

    arun(main())


def test_503_when_no_endpoint_is_ready():
    async def main():
        async with Harness([dead_address()], scrape=True) as h:  # the scrape fails: unhealthy
            resp, body = await h.post(COMPLETION)
            assert resp.status == 503
            assert orjson.loads(body)["error"]["message"] == "no ready endpoints in pool default"
            health = await h.client.request("GET", h.address, "/health")
            assert health.status == 503
            await health.read()
            assert h.metrics.failed.get(("default", "no_endpoints")) == 1

    arun(main())


def test_400_for_bad_json_says_why():
    async def main():
        a = await Backend("a").start()
        async with Harness([a.address]) as h:
            resp, body = await h.post(b'{"model": "m", "prompt": ')
            assert resp.status == 400
            err = orjson.loads(body)["error"]
            assert err["type"] == "invalid_request_error" and err["code"] == 400
            assert err["message"].startswith("body is not valid JSON")
            resp, body = await h.post(b'{"model": "m"}', path="/v1/chat/completions")
            assert resp.status == 400 and orjson.loads(body)["error"]["message"] == "'messages' is required"
            assert a.bodies == []
        await a.close()

    arun(main())


def test_sheddable_objective_gets_429_when_the_pool_is_saturated():
    async def main():
        # every backend reports a long queue (GIE queueDepthThreshold 5): the pool is saturated
        a, b = await Backend("a", waiting=50).start(), await Backend("b", waiting=50).start()
        async with Harness([a.address, b.address], objectives={"batch": -1, "chat": 10}, scrape=True) as h:
            resp, body = await h.post(COMPLETION, headers={"x-llm-d-inference-objective": "batch"})
            assert resp.status == 429
            assert "saturated" in orjson.loads(body)["error"]["message"]
            resp, _ = await h.post(COMPLETION, headers={"x-gateway-inference-objective": "batch"})  # old alias
            assert resp.status == 429
            resp, _ = await h.post(COMPLETION, headers={"x-llm-d-inference-objective": "chat"})
            assert resp.status == 200  # not sheddable: dispatched
            resp, _ = await h.post(COMPLETION)
            assert resp.status == 200
            assert h.metrics.shed.get(("default",)) == 2
            assert a.bodies + b.bodies == [COMPLETION, COMPLETION]
        await a.close()
        await b.close()

    arun(main())


def test_flow_control_queues_while_saturated_and_releases_when_load_drops():
    async def main():
        a = await Backend("a", waiting=50).start()
        async with Harness([a.address], scrape=True, flow_control=True, objectives={"batch": -1}) as h:
            shed, _ = await h.post(COMPLETION, headers={"x-llm-d-inference-objective": "batch"})
            assert shed.status == 429  # sheddable: rejected, not queued
            waiting = asyncio.ensure_future(h.post(COMPLETION))
            while h.pool.queued() == 0:  # the request reaches the queue
                await asyncio.sleep(0.005)
            assert not waiting.done() and a.bodies == []
            text = h.metrics.render().decode()  # GIE's flow control gauges, per priority band
            assert 'inference_extension_flow_control_queue_size{inference_pool="default",priority="0"} 1' in text
            assert (f'inference_extension_flow_control_queue_bytes{{inference_pool="default",priority="0"}} '
                    f'{len(COMPLETION)}') in text
            a.waiting = 0
            await h.pool.scrape(h.pool.endpoints[0])  # fresh metrics: no longer saturated
            resp, body = await waiting
            assert resp.status == 200 and orjson.loads(body)["backend"] == "a"
            assert h.pool.queued() == 0
        await a.close()

    arun(main())


def test_504_when_the_backend_sends_no_response_head_in_time():
    async def main():
        a = await Backend("a").start()
        a.hang = asyncio.Event()
        async with Harness([a.address], request_timeout=0.3) as h:
            resp, body = await h.post(COMPLETION)
            assert resp.status == 504
            assert "sent no response in 0.3s" in orjson.loads(body)["error"]["message"]
            assert h.metrics.failed.get(("default", "timeout")) == 1
            assert SERVED_HEADER not in resp.headers  # the gateway made this answer: nothing was served
            assert_idle(h.pool)
        a.hang.set()
        await a.close()

    arun(main())


def test_metrics_and_models_endpoints():
    async def main():
        a = await Backend("a", models=["m"]).start()
        b = await Backend("b", models=["m", {"id": "sql-lora", "object": "model", "parent": "m"}]).start()
        async with Harness([a.address, b.address], scrape=True) as h:
            for _ in range(2):
                resp, _ = await h.post(COMPLETION)
                assert resp.status == 200
            resp = await h.client.request("GET", h.address, "/v1/models")
            models = orjson.loads(await resp.read())
            assert models["object"] == "list"
            assert sorted(m["id"] for m in models["data"]) == ["m", "sql-lora"]
            resp = await h.client.request("GET", h.address, "/metrics")
            assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = (await resp.read()).decode()
            for ep in (a, b):
                assert f'mlplane_gateway_requests_total{{pool="default",endpoint="{ep.address}",code="200"}} 1' in text
                # non-streaming answers arrive whole: they count in the duration, not as a first token
                assert f'mlplane_gateway_ttft_seconds_count{{pool="default",endpoint="{ep.address}"}}' not in text
                assert (f'mlplane_gateway_request_duration_seconds_bucket{{pool="default",endpoint="{ep.address}",'
                        f'le="+Inf"}} 1' in text)
                assert f'inference_pool_per_pod_queue_size{{model_server_pod="{ep.address}",name="default"}} 0' in text
            assert "inference_extension_scheduler_e2e_duration_seconds_count 2" in text  # GIE's name
            assert 'inference_pool_ready_pods{name="default"} 2' in text
            assert 'inference_pool_average_kv_cache_utilization{name="default"} 0.1' in text
            assert "# TYPE mlplane_gateway_shed_total counter" in text
            assert "# TYPE mlplane_gateway_failed_total counter" in text
            health = await h.client.request("GET", h.address, "/health")
            assert health.status == 200 and orjson.loads(await health.read())["ready_endpoints"] == {"default": 2}
        await a.close()
        await b.close()

    arun(main())


def test_within_a_pool_requests_go_to_endpoints_that_list_the_model():
    async def main():
        a, b = await Backend("a", models=["llama"]).start(), await Backend("b", models=["qwen"]).start()
        async with Harness([a.address, b.address], scrape=True) as h:
            for _ in range(3):
                resp, body = await h.post(b'{"model": "qwen", "prompt": "p"}')
                assert orjson.loads(body)["backend"] == "b"
            h.pool.mark_failed(next(e for e in h.pool.endpoints if e.address == b.address))
            resp, body = await h.post(b'{"model": "qwen", "prompt": "p"}')
            assert resp.status == 503  # not sent to an endpoint that does not serve it
            resp, body = await h.post(b'{"model": "llama", "prompt": "p"}')
            assert orjson.loads(body)["backend"] == "a"
        await a.close()
        await b.close()

    arun(main())


def test_requests_go_to_the_pool_that_serves_the_model():
    async def main():
        a, b = await Backend("a", models=["llama"]).start(), await Backend("b", models=["qwen"]).start()
        client = Client()
        pools = []
        for name, backend in (("llama-pool", a), ("qwen-pool", b)):
            picker, flow, detector = make_policy(GatewayConfig(policy="default"))
            pool = PoolRuntime(name, picker, client, flow=flow, detector=detector)
            pool.set_endpoints([Endpoint(name=backend.address, address=backend.address)])
            await pool.fetch_models(pool.endpoints[0])
            pools.append(pool)
        gateway = Gateway(pools, client)
        server = await start_server(gateway.handle, "127.0.0.1", 0)
        async with Client() as c:
            for model, backend in (("qwen", b), ("llama", a), ("unknown", a)):
                resp = await c.request("POST", f"127.0.0.1:{server.port}", "/v1/completions", {},
                                       orjson.dumps({"model": model, "prompt": "p"}))
                assert orjson.loads(await resp.read())["backend"] == backend.name
        await server.close()
        await client.aclose()
        await a.close()
        await b.close()

    arun(main())


def test_gateway_process_serves_until_sigterm():
    """`mlplane gateway` as a real process: the startup line, a routed request, a clean exit on SIGTERM."""
    async def main():
        a = await Backend("a").start()
        code = ("import argparse, sys; from mlplane.cli.gateway import add_parser; p = argparse.ArgumentParser(); "
                "sub = p.add_subparsers(); add_parser(sub); args = p.parse_args(sys.argv[1:]); "
                "sys.exit(args.func(args))")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, "gateway", "--port", "0", "--backend", f"http://{a.address}",
            "--policy", "least-load", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
        try:
            line = (await proc.stdout.readline()).decode().strip()
            assert line.startswith("gateway listening on http://127.0.0.1:"), line
            assert line.endswith("(pool default: 1 endpoint, policy least-load)")
            address = line.split("http://")[1].split(" ")[0]
            async with Client() as c:
                resp = await c.request("POST", address, "/v1/completions", {}, COMPLETION)
                assert resp.status == 200 and resp.headers[SERVED_HEADER] == a.address
                await resp.read()
            proc.terminate()
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await a.close()

    arun(main(), timeout=30)


def test_endpoint_picker_config_sets_picker_flow_control_and_detector():
    text = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: max-score-picker}
saturationDetector:
  queueDepthThreshold: 8
flowControl:
  defaultRequestTTL: 30s
"""
    picker, flow, detector = make_policy(GatewayConfig(config_text=text))
    assert flow is not None and flow.config.default_ttl == 30
    assert detector.queue_threshold == 8 and detector.staleness == 0.2
    picker, flow, detector = make_policy(GatewayConfig(config_text=text.replace("featureGates: [flowControl]", ""),
                                                       scrape_interval=0.5))
    assert flow is None and detector.staleness == 2.0  # four scrape intervals when unset


def test_cli_rejects_bad_flags():
    import subprocess

    code = ("import argparse, sys; from mlplane.cli.gateway import add_parser; p = argparse.ArgumentParser(); "
            "sub = p.add_subparsers(); add_parser(sub); args = p.parse_args(sys.argv[1:]); sys.exit(args.func(args))")
    for argv, message in (
            (["gateway"], "give either --backend URL"),
            (["gateway", "--backend", "http://x"], "--backend 'http://x': expected http://HOST:PORT"),
            (["gateway", "--backend", "127.0.0.1:1", "--policy", "fastest"], "unknown policy 'fastest'"),
            (["gateway", "--pool", "just-a-name"], "--pool 'just-a-name': expected NAMESPACE/NAME"),
            (["gateway", "--pool", "a/sim", "--pool", "b/sim"], "have the same name"),
            (["gateway", "--backend", "127.0.0.1:1", "--config", "/nonexistent.yaml"], "--config /nonexistent.yaml"),
            (["gateway", "--backend", "127.0.0.1:1", "--policy", "default", "--config", "x.yaml"],
             "--policy and --config cannot be combined")):
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT,
                             timeout=30)
        assert out.returncode == 1, out
        assert message in out.stderr, out.stderr


def test_pool_endpoints_follow_the_inference_pool_in_the_store(store):
    """--pool NS/NAME: Ready pods selected by the InferencePool become endpoints (podIP:targetPort), and
    the pool's InferenceObjectives give priorities."""
    from mlplane.api import Pod
    from mlplane.api.inference import InferenceObjective, InferencePool
    from mlplane.api.meta import set_condition
    from mlplane.gateway.app import serve

    async def main():
        a = await Backend("a", waiting=50).start()
        port = int(a.address.split(":")[1])
        store.create(InferencePool.model_validate({
            "metadata": {"name": "sim", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "sim"}}, "targetPorts": [{"number": port}]}}))
        store.create(InferenceObjective.model_validate({
            "metadata": {"name": "batch", "namespace": "default"},
            "spec": {"priority": -1, "poolRef": {"name": "sim"}}}))
        p = store.create(Pod.model_validate({
            "metadata": {"name": "sim-0", "namespace": "default", "labels": {"app": "sim"}},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "command": ["x"]}]}}))
        p.status.phase, p.status.pod_ip = "Running", "127.0.0.1"
        p.status.conditions = set_condition(None, "Ready", "True")
        store.update_status(p)

        ready = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        cfg = GatewayConfig(port=0, pools=["default/sim"], policy="default")
        task = asyncio.ensure_future(serve(cfg, on_ready=ready.set_result, stop=stop, store=store))
        line = await ready
        assert line.endswith("(pool sim: 1 endpoint, policy default)"), line
        address = line.split("http://")[1].split(" ")[0]
        async with Client() as c:
            resp = await c.request("POST", address, "/v1/completions", {}, COMPLETION)
            assert resp.status == 200 and resp.headers[SERVED_HEADER] == a.address
            await resp.read()
            while True:  # the first scrape reports a long queue: the batch objective is shed
                resp = await c.request("POST", address, "/v1/completions",
                                       {"x-llm-d-inference-objective": "batch"}, COMPLETION)
                await resp.read()
                if resp.status == 429:
                    break
                await asyncio.sleep(0.01)
            p = store.get(Pod, "default", "sim-0")
            p.status.conditions = set_condition(p.status.conditions, "Ready", "False")
            await asyncio.to_thread(store.update_status, p)
            while True:  # the watcher drops the unready pod
                resp = await c.request("POST", address, "/v1/completions", {}, COMPLETION)
                body = await resp.read()
                if resp.status == 503:
                    break
                await asyncio.sleep(0.01)
            assert orjson.loads(body)["error"]["message"] == "no ready endpoints in pool sim"
        stop.set()
        await task
        await a.close()

    arun(main(), timeout=30)


def test_pool_runtime_subset_hint_and_a_client_leaving_the_queue():
    """The transport-agnostic pool API the ext_proc service uses: the proxy's subset hint limits the
    choice (GIE protocol: none eligible -> 503), and a request whose client leaves the flow control queue
    is taken out of it."""
    from mlplane.gateway.pool import ClientGone, NoEndpoints
    from mlplane.policy.traffic.request import parse_request

    async def main():
        a, b = await Backend("a", waiting=50).start(), await Backend("b", waiting=50).start()
        async with Client() as client:
            picker, flow, detector = make_policy(GatewayConfig(policy="least-load", flow_control=True))
            pool = PoolRuntime("p", picker, client, flow=flow, detector=detector)
            pool.set_endpoints([Endpoint(name=x.address, address=x.address) for x in (a, b)])

            def request():
                return parse_request("/v1/completions", COMPLETION, {}, request_id="r")

            # no scrape yet: metrics are stale, so flow control treats the pool as saturated and queues
            gone = asyncio.Event()
            waiting = asyncio.ensure_future(pool.acquire(request(), lambda: gone, subset={b.address}))
            while pool.queued() == 0:
                await asyncio.sleep(0.005)
            gone.set()
            try:
                await waiting
                raise AssertionError("the request should have left the queue")
            except ClientGone:
                pass
            assert pool.queued() == 0 and flow.queued() == 0
            for e in pool.endpoints:
                a.waiting = b.waiting = 0
                await pool.scrape(e)
            decision = await pool.acquire(request(), subset={b.address})
            assert [e.address for e in decision.endpoints] == [b.address]
            assert decision.endpoints[0].inflight == 1
            try:
                await pool.acquire(request(), subset={"10.0.0.1:8000"})
                raise AssertionError("expected NoEndpoints")
            except NoEndpoints as e:
                assert "subset hint" in str(e)
            await pool.close()
        await a.close()
        await b.close()

    arun(main())


def test_the_pools_failure_mode_decides_when_the_picker_cannot():
    """InferencePool endpointPickerRef.failureMode (GIE: FailClose is the default): with no metrics to
    judge saturation by (never scraped) or a failing picker, FailClose refuses a request and
    FailOpen still routes it to a ready endpoint."""
    async def main():
        a = await Backend("a").start()
        async with Harness([a.address], objectives={"batch": -1}) as h:  # never scraped: no fresh metrics
            batch = {"x-llm-d-inference-objective": "batch"}
            resp, _ = await h.post(COMPLETION, headers=batch)
            assert resp.status == 429  # FailClose: stale metrics count as saturated
            h.pool.fail_open = True
            resp, _ = await h.post(COMPLETION, headers=batch)
            assert resp.status == 200

            def broken(*args, **kwargs):
                raise RuntimeError("scorer bug")

            h.pool.picker.pick = broken
            resp, _ = await h.post(COMPLETION)
            assert resp.status == 200 and resp.headers[SERVED_HEADER] == a.address  # FailOpen
            h.pool.fail_open = False
            resp, body = await h.post(COMPLETION)
            assert resp.status == 503 and "FailClose" in orjson.loads(body)["error"]["message"]
        await a.close()

    arun(main())


def test_the_failure_mode_comes_from_the_inference_pool():
    from mlplane.api.inference import InferencePool
    from mlplane.gateway.app import apply_pool_update

    def pool_obj(mode):
        return InferencePool.model_validate({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "targetPorts": [{"number": 8000}],
                     "endpointPickerRef": {"name": "epp", "port": {"number": 9002}, "failureMode": mode}}})

    async def main():
        async with Harness([]) as h:
            apply_pool_update(h.pool, [], {}, pool_obj("FailOpen"))
            assert h.pool.fail_open
            apply_pool_update(h.pool, [], {}, pool_obj("FailClose"))
            assert not h.pool.fail_open

    arun(main())


STREAM = b'{"model":"m","prompt":"x","stream":true}'


def test_streaming_client_leaving_before_the_response_head_cancels_the_upstream_request():
    """Review finding 1: the gateway notices the client leaving while it waits for the backend's head."""
    async def main():
        a = await Backend("a").start()
        a.hang = asyncio.Event()
        async with Harness([a.address], request_timeout=30) as h:  # no 504 while the test looks
            call = asyncio.ensure_future(h.client.request("POST", h.address, "/v1/completions", {}, STREAM))
            await a.received.wait()
            call.cancel()  # the client hangs up while the backend holds its response head
            await until(lambda: a.server.connections == 0)  # the gateway closed its upstream connection
            await until(lambda: h.pool.endpoints[0].inflight == 0)
            assert h.metrics.failed.get(("default", "client_gone")) == 1
            assert h.metrics.requests.get(("default", a.address, "499")) == 1
            assert_idle(h.pool)
        a.hang.set()
        await a.close()

    arun(main())


def test_streaming_client_gone_when_the_response_head_arrives_releases_the_endpoint():
    """Review finding 1: the stream body was closed before it started, so its cleanup never ran."""
    async def main():
        a = await Backend("a").start()
        a.hang = asyncio.Event()
        a.gates = [asyncio.Event(), asyncio.Event()]
        async with Harness([a.address]) as h:
            h.gateway.watch_after = 60.0  # the gateway does not look until the head is in
            call = asyncio.ensure_future(h.client.request("POST", h.address, "/v1/completions", {}, STREAM))
            await a.received.wait()
            call.cancel()  # the client hangs up while the backend holds its response head
            await until(lambda: h.server.connections == 0)
            a.hang.set()  # the head comes back to a gateway whose client is gone
            await until(lambda: a.streams_closed == 1)  # the gateway dropped the upstream connection
            await until(lambda: h.pool.endpoints[0].inflight == 0)
            assert h.metrics.failed.get(("default", "client_gone")) == 1
            assert h.metrics.requests.get(("default", a.address, "499")) == 1
            assert_idle(h.pool)
        await a.close()

    arun(main())


def test_a_broken_response_head_is_a_502_and_releases_the_endpoint():
    """Review finding 2: the backend got the request, so no retry; the client gets a 502 that says why."""
    async def main():
        server, address = await broken_head_server(b"HTTP/1.1 200 OK\r\nContent-Le")
        live = await Backend("live").start()
        async with Harness([address, live.address]) as h:
            h.pool.picker.pick = lambda request, endpoints, now: Decision(
                [e for e in endpoints if e.address == address] + [e for e in endpoints if e.address != address])
            resp, body = await h.post(COMPLETION)
            assert resp.status == 502
            message = orjson.loads(body)["error"]["message"]
            assert message.startswith(f"endpoint {address} of pool default sent a broken response head"), message
            assert SERVED_HEADER not in resp.headers
            assert live.bodies == []  # not sent twice
            assert_idle(h.pool)
        server.close()
        await live.close()

    arun(main())


def test_an_unexpected_error_after_the_pick_releases_the_endpoint():
    """Review finding 2, safety net: whatever escapes the forwarding, nothing stays counted in flight."""
    async def main():
        a = await Backend("a").start()
        async with Harness([a.address]) as h:
            def broken(request, endpoint):
                raise RuntimeError("hook bug")

            h.pool.first_token = broken
            resp, body = await h.post(COMPLETION)
            assert resp.status == 500
            assert_idle(h.pool)
        await a.close()

    arun(main())


def test_a_non_sse_stream_breaking_mid_body_breaks_the_client_connection():
    """Review finding 3: without an in-band error format the client must see a broken body, not a
    complete one."""
    from mlplane.net.http import ResponseError

    async def main():
        a = await Backend("a").start()
        a.stream_type = "application/x-ndjson"
        a.die_after = 1
        async with Harness([a.address]) as h:
            resp = await h.client.request("POST", h.address, "/v1/completions", {}, STREAM)
            assert resp.status == 200
            got = []
            try:
                async for chunk in resp.iter_chunks():
                    got.append(chunk)
                raise AssertionError(f"the body ended normally: {got}")
            except ResponseError:
                pass
            assert got == [b'data: {"n": 0}\n\n']
            assert h.metrics.failed.get(("default", "stream_broken")) == 1
            assert_idle(h.pool)
        await a.close()

    arun(main())


def test_non_streaming_client_leaving_cancels_the_upstream_request():
    """Review finding 4: the backend must not keep working for a client that left."""
    async def main():
        a = await Backend("a").start()
        a.hang = asyncio.Event()
        async with Harness([a.address], request_timeout=30) as h:  # no 504 while the test looks
            call = asyncio.ensure_future(h.post(COMPLETION))
            await a.received.wait()
            call.cancel()  # the client hangs up while the backend works
            await until(lambda: a.server.connections == 0)  # the gateway closed its upstream connection
            await until(lambda: h.pool.endpoints[0].inflight == 0)
            assert h.metrics.failed.get(("default", "client_gone")) == 1
            assert h.metrics.requests.get(("default", a.address, "499")) == 1
            assert_idle(h.pool)
            a.hang.set()
            resp, _ = await h.post(COMPLETION)  # the gateway goes on serving
            assert resp.status == 200
            assert_idle(h.pool)
        await a.close()

    arun(main())


def test_a_queued_request_cancelled_right_after_its_release_is_not_left_counted():
    """Review finding 5: flow control released the request (counted as sent) and its task was cancelled
    before it resumed."""
    from mlplane.policy.traffic.request import parse_request

    async def main():
        a = await Backend("a", waiting=50).start()
        async with Harness([a.address], flow_control=True) as h:
            await h.pool.scrape(h.pool.endpoints[0])  # saturated: the request queues
            request = parse_request("/v1/completions", COMPLETION, {}, request_id="r")
            waiting = asyncio.ensure_future(h.pool.acquire(request))
            await until(lambda: h.pool.queued() == 1)
            a.waiting = 0
            await h.pool.scrape(h.pool.endpoints[0])  # releases it: on_sent counted it at the endpoint
            assert h.pool.endpoints[0].inflight == 1
            waiting.cancel()  # ... and the waiting task is cancelled before it resumes
            try:
                await waiting
                raise AssertionError("expected CancelledError")
            except asyncio.CancelledError:
                pass
            assert h.pool.queued() == 0
            assert_idle(h.pool)
        await a.close()

    arun(main())


def test_a_picker_failing_on_a_retry_ends_the_retries_cleanly():
    """Review finding 7: the second pick (after a refused connection) raising must not leak the request."""
    async def main():
        async with Harness([dead_address(), dead_address()]) as h:
            calls = []

            def pick(request, endpoints, now):
                calls.append(1)
                if len(calls) > 1:
                    raise RuntimeError("scorer bug")
                return Decision([endpoints[0]])  # no fallbacks: the retry asks the picker again

            h.pool.picker.pick = pick
            resp, body = await h.post(COMPLETION)
            assert resp.status == 502
            assert orjson.loads(body)["error"]["message"].startswith("no endpoint of pool default could be reached")
            assert len(calls) == 2
            assert_idle(h.pool)

    arun(main())


def test_an_endpoint_refusing_connections_loses_its_prefix_affinity():
    """Review finding 8: a refused connection usually means a restarted server with an empty cache."""
    async def main():
        dead = dead_address()
        async with Harness([dead], policy="default") as h:
            resp, _ = await h.post(COMPLETION)
            assert resp.status == 502
            assert dead not in set(h.pool.picker.index.endpoints())
            assert_idle(h.pool)

    arun(main())


def test_a_client_chosen_request_id_does_not_steer_ties():
    """Review finding 12: ties are broken by the gateway's own request id; x-request-id is forwarded."""
    async def main():
        backends = [await Backend(n).start() for n in "abcd"]
        async with Harness([b.address for b in backends], policy="default", scrape=True) as h:
            served = set()
            for i in range(8):
                resp, body = await h.post(orjson.dumps({"model": "m", "prompt": f"prompt number {i}"}),
                                          headers={"x-request-id": "same-id"})
                assert resp.status == 200
                served.add(orjson.loads(body)["backend"])
            assert len(served) > 1
            assert all(b.headers.get("x-request-id") == "same-id" for b in backends if b.bodies)
        for b in backends:
            await b.close()

    arun(main())


def test_only_listed_adapters_count_as_lora():
    """Review finding 13: an unknown model name is not a LoRA adapter."""
    async def main():
        a = await Backend("a", models=["m", {"id": "sql-lora", "object": "model", "parent": "m"}]).start()
        async with Harness([a.address], scrape=True) as h:
            assert h.pool.is_adapter("sql-lora")
            assert not h.pool.is_adapter("m") and not h.pool.is_adapter("no-such-model")
        await a.close()

    arun(main())


def test_objective_flag_gives_priorities_to_static_backends():
    """Review finding 15: --objective NAME=PRIORITY makes shedding reachable without a store."""
    import subprocess

    from mlplane.gateway.app import apply_pool_update, make_pool
    from mlplane.gateway.extproc import EppConfig, _gateway_config

    async def main():
        async with Client() as client:
            pool = make_pool("default", GatewayConfig(backends=["127.0.0.1:1"], objectives={"batch": -1}), client)
            assert pool.priority("batch") == -1 and pool.priority("other") == 0
            apply_pool_update(pool, [], {"chat": 5})  # objectives from the store add to the flag's
            assert pool.priority("batch") == -1 and pool.priority("chat") == 5

    arun(main())
    assert _gateway_config(EppConfig(backends=["127.0.0.1:1"], objectives={"batch": -1})).objectives == {"batch": -1}
    code = ("import argparse, sys; from mlplane.cli.gateway import add_parser; p = argparse.ArgumentParser(); "
            "sub = p.add_subparsers(); add_parser(sub); args = p.parse_args(sys.argv[1:]); sys.exit(args.func(args))")
    for value, message in (("batch", "--objective 'batch': expected NAME=PRIORITY"),
                           ("batch=low", "--objective 'batch=low': the priority must be an integer")):
        out = subprocess.run([sys.executable, "-c", code, "gateway", "--backend", "127.0.0.1:1", "--objective", value],
                             capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert out.returncode == 1 and message in out.stderr, out.stderr
