"""The endpoint picker as an Envoy ext_proc service, driven over real gRPC the way Envoy's ext_proc
filter drives it (GIE docs/proposals/004-endpoint-picker-protocol; Envoy ext_proc processing modes):
request headers, body chunks up to end_of_stream, then the response phase. The pool behind it is a
real PoolRuntime over tiny HTTP model servers that expose vLLM /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager

import grpc
import orjson
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

from mlplane.gateway import extproc
from mlplane.gateway.app import static_endpoints
from mlplane.gateway.pool import PoolRuntime
from mlplane.net.http import Client, Response, json_response, run, start_server
from mlplane.policy.traffic.config import named_policy
from mlplane.policy.traffic.flow import FlowController

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Mode = processing_mode_pb2.ProcessingMode.BodySendMode
LONG = "You are a careful assistant. " * 200  # ~5.8 KB: many prefix blocks


# --- a tiny model server with vLLM metrics --------------------------------------------------------

class Backend:
    """An HTTP server answering /metrics (vLLM names) and /v1/models; ``waiting`` is what it reports."""

    def __init__(self):
        self.waiting = 0
        self.server = None

    async def handle(self, req):
        if req.path == "/metrics":
            text = ("# TYPE vllm:num_requests_waiting gauge\n"
                    f'vllm:num_requests_waiting{{model_name="m"}} {self.waiting}\n'
                    "# TYPE vllm:num_requests_running gauge\n"
                    'vllm:num_requests_running{model_name="m"} 0\n'
                    "# TYPE vllm:kv_cache_usage_perc gauge\n"
                    'vllm:kv_cache_usage_perc{model_name="m"} 0.1\n')
            return Response(200, text, content_type="text/plain; version=0.0.4")
        if req.path == "/v1/completions":  # echo what arrived, and who answered
            return json_response(200, {"served_by": self.address, "body": req.body.decode()})
        if req.path == "/v1/models":
            return json_response(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})
        return json_response(404, {"error": "no route"})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


class Clock:
    """The pool's clock, standing still: metrics scraped by the test never go stale under it."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def harness(n=3, policy="round-robin", objectives=None, endpoints=True, body_mode="full-duplex",
                  flow=None):
    backends = [Backend() for _ in range(n)]
    for b in backends:
        b.server = await start_server(b.handle, "127.0.0.1", 0)
    client = Client()
    pool = PoolRuntime("pool-a", named_policy(policy), client, objectives=objectives, clock=Clock(), flow=flow)
    if endpoints:
        pool.set_endpoints(static_endpoints([f"http://{b.address}" for b in backends]))
    epp = await extproc.start_epp(pool, host="127.0.0.1", port=0, health_port=0, body_mode=body_mode)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{epp.port}")
    h = Harness(backends, pool, epp, channel)
    try:
        await h.scrape()
        yield h
    finally:
        await channel.close()
        await epp.close(None)
        await pool.close()
        await client.aclose()
        for b in backends:
            await b.server.close()


class Harness:
    def __init__(self, backends, pool, epp, channel):
        self.backends = backends
        self.pool = pool
        self.epp = epp
        self.channel = channel
        self.stub = pb_grpc.ExternalProcessorStub(channel)

    async def scrape(self):
        for e in self.pool.endpoints:
            assert await self.pool.scrape(e), f"scrape of {e.address} failed"

    def stream(self, **kw) -> "EnvoyStream":
        return EnvoyStream(self.stub.Process(), **kw)

    def endpoint(self, address):
        return next(e for e in self.pool.endpoints if e.address == address)


# --- Envoy's side of the protocol ----------------------------------------------------------------

def _headers(pairs: dict[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()])


def _metadata(namespace: str, key: str, value) -> base_pb2.Metadata:
    inner = struct_pb2.Struct()
    if isinstance(value, list):
        inner.fields[key].list_value.extend(value)
    else:
        inner.fields[key].string_value = value
    return base_pb2.Metadata(filter_metadata={namespace: inner})


class EnvoyStream:
    """One HTTP request through Envoy's ext_proc filter: what Envoy sends and waits for, per body mode."""

    def __init__(self, call, mode: int = Mode.Value("FULL_DUPLEX_STREAMED"), announce: bool = True):
        self.call = call
        self.mode = mode
        self.announce = announce  # send protocol_config on the first message (Envoy >= 1.33)

    async def read(self) -> pb.ProcessingResponse:
        msg = await asyncio.wait_for(self.call.read(), 10)
        assert msg is not grpc.aio.EOF, "the picker closed the stream"
        return msg

    async def request(self, body: bytes | None, *, path="/v1/completions", headers=None, chunks=1,
                      subset=None) -> list[pb.ProcessingResponse]:
        """Send the request phase; return the picker's answers (header answer, body answers) or
        [immediate_response]."""
        pairs = {":method": "POST" if body is not None else "GET", ":path": path, ":authority": "gw",
                 "content-type": "application/json", **(headers or {})}
        first = pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=_headers(pairs),
                                                                    end_of_stream=body is None))
        if self.announce:
            first.protocol_config.request_body_mode = self.mode
            first.protocol_config.response_body_mode = self.mode
        if subset is not None:
            first.metadata_context.CopyFrom(_metadata(extproc.SUBSET_NAMESPACE, extproc.SUBSET_KEY, subset))
        await self.call.write(first)
        answers = []
        if body is None:
            answers.append(await self.read())
            return answers
        if self.mode == Mode.Value("BUFFERED"):  # Envoy waits for the header answer, then sends the whole body
            answers.append(await self.read())
            await self.call.write(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)))
            answers.append(await self.read())
            return answers
        # FULL_DUPLEX_STREAMED: the body goes out in chunks without waiting for any answer
        size = -(-len(body) // chunks) if body else 0
        pieces = [body[i:i + size] for i in range(0, len(body), size)] if body else [b""]
        for i, piece in enumerate(pieces):
            await self.call.write(pb.ProcessingRequest(
                request_body=pb.HttpBody(body=piece, end_of_stream=i == len(pieces) - 1)))
        while True:
            msg = await self.read()
            answers.append(msg)
            kind = msg.WhichOneof("response")
            if kind == "immediate_response":
                return answers
            if kind == "request_body" and msg.request_body.response.body_mutation.streamed_response.end_of_stream:
                return answers

    async def respond(self, status=200, chunks=(b"data: {}\n\n", b"data: [DONE]\n\n"), served=None):
        """Send the response phase; return the answers to response headers and each body chunk."""
        msg = pb.ProcessingRequest(response_headers=pb.HttpHeaders(
            headers=_headers({":status": str(status), "content-type": "text/event-stream"})))
        if served is not None:
            msg.metadata_context.CopyFrom(_metadata(extproc.DESTINATION_NAMESPACE, extproc.SERVED_KEY, served))
        await self.call.write(msg)
        answers = [await self.read()]
        for i, chunk in enumerate(chunks):
            await self.call.write(pb.ProcessingRequest(
                response_body=pb.HttpBody(body=chunk, end_of_stream=i == len(chunks) - 1)))
            answers.append(await self.read())
        return answers

    async def close(self):
        await self.call.done_writing()
        assert await asyncio.wait_for(self.call.read(), 10) is grpc.aio.EOF


def body(prompt="hello", **extra) -> bytes:
    return orjson.dumps({"model": "m", "prompt": prompt, "max_tokens": 4, **extra})


def destination(answers) -> tuple[str, str]:
    """(header value, dynamic metadata value) of x-gateway-destination-endpoint in the answers."""
    for a in answers:
        common = getattr(a, a.WhichOneof("response")).response
        for h in common.header_mutation.set_headers:
            if h.header.key == extproc.DESTINATION_KEY:
                meta = a.dynamic_metadata.fields[extproc.DESTINATION_NAMESPACE].struct_value
                return h.header.raw_value.decode(), meta.fields[extproc.DESTINATION_KEY].string_value
    raise AssertionError(f"no {extproc.DESTINATION_KEY} in {answers}")


def immediate(answers) -> tuple[int, dict]:
    assert answers[-1].WhichOneof("response") == "immediate_response", answers
    ir = answers[-1].immediate_response
    return ir.status.code, orjson.loads(ir.body)


# --- tests ---------------------------------------------------------------------------------------

def test_full_duplex_chunks_get_destination_with_fallbacks_and_body_back():
    async def main():
        async with harness(n=3) as h:
            s = h.stream()
            payload = body(LONG * 5)  # ~29 KB sent in 3 chunks
            answers = await s.request(payload, chunks=3)
            kinds = [a.WhichOneof("response") for a in answers]
            assert kinds[0] == "request_headers" and set(kinds[1:]) == {"request_body"}
            header, meta = destination(answers)
            assert header == meta
            addresses = header.split(",")
            assert len(addresses) == 3 and len(set(addresses)) == 3
            assert set(addresses) == {b.address for b in h.backends}
            mutation = answers[0].request_headers.response
            assert mutation.clear_route_cache
            sets = {x.header.key: x.header.raw_value.decode() for x in mutation.header_mutation.set_headers}
            assert sets["content-length"] == str(len(payload))
            echoed = b"".join(a.request_body.response.body_mutation.streamed_response.body for a in answers[1:])
            assert echoed == payload
            await s.close()
    run(main())


def test_a_proxy_following_the_answer_reaches_the_named_backend_with_the_body_intact():
    """What Envoy does with the answer: send the (streamed back) body to the first address of the
    destination list, then run the response phase with what that server answered."""
    async def main():
        async with harness(n=3) as h, Client() as proxy:
            for i in range(3):
                s = h.stream()
                payload = body(f"question {i}: " + LONG)
                answers = await s.request(payload, chunks=2)
                header, _ = destination(answers)
                sent = b"".join(a.request_body.response.body_mutation.streamed_response.body for a in answers[1:])
                address = header.split(",")[0]
                resp = await proxy.request("POST", address, "/v1/completions",
                                           {"content-type": "application/json"}, sent)
                reply = await resp.read()
                assert orjson.loads(reply) == {"served_by": address, "body": payload.decode()}
                answers = await s.respond(status=resp.status, chunks=(reply,))
                assert answers[-1].response_body.response.body_mutation.streamed_response.body == reply
                await s.close()
            assert all(e.inflight == 0 for e in h.pool.endpoints)
    run(main())


def test_large_body_is_streamed_back_in_chunks_under_envoy_limit():
    async def main():
        async with harness(n=2) as h:
            payload = body(LONG * 30)  # ~174 KB
            s = h.stream()
            answers = await s.request(payload, chunks=7)
            pieces = [a.request_body.response.body_mutation.streamed_response for a in answers[1:]]
            assert len(pieces) > 1 and all(len(p.body) <= extproc.BODY_CHUNK for p in pieces)
            assert [p.end_of_stream for p in pieces] == [False] * (len(pieces) - 1) + [True]
            assert b"".join(p.body for p in pieces) == payload
            await s.close()
    run(main())


def test_buffered_mode_lets_headers_through_and_routes_on_the_body_answer():
    async def main():
        async with harness(n=2) as h:
            s = h.stream(mode=Mode.Value("BUFFERED"))
            answers = await s.request(body())
            assert answers[0].WhichOneof("response") == "request_headers"
            assert not answers[0].request_headers.response.header_mutation.set_headers
            assert answers[1].WhichOneof("response") == "request_body"
            assert not answers[1].request_body.response.HasField("body_mutation")
            header, meta = destination(answers[1:])
            assert header == meta and header.split(",")[0] in {b.address for b in h.backends}
            await s.close()
    run(main())


def test_proxy_without_protocol_config_gets_the_configured_mode():
    async def main():
        async with harness(n=2, body_mode="buffered") as h:
            s = h.stream(mode=Mode.Value("BUFFERED"), announce=False)
            answers = await s.request(body())
            assert [a.WhichOneof("response") for a in answers] == ["request_headers", "request_body"]
            destination(answers[1:])
            await s.close()
    run(main())


def test_request_without_body_is_routed_at_headers():
    async def main():
        async with harness(n=2) as h:
            s = h.stream()
            answers = await s.request(None, path="/v1/models")
            assert answers[0].WhichOneof("response") == "request_headers"
            header, _ = destination(answers)
            assert header.split(",")[0] in {b.address for b in h.backends}
            await s.respond(chunks=(b'{"data": []}',))
            await s.close()
            assert all(e.inflight == 0 for e in h.pool.endpoints)
    run(main())


def test_prefix_policy_sends_the_same_long_prompt_to_the_same_endpoint():
    async def main():
        async with harness(n=3, policy="prefix-only") as h:
            for topic in ("apples", "rivers", "engines"):
                prompt = f"{topic}: " + LONG
                picked = []
                for _ in range(2):
                    s = h.stream()
                    header, _ = destination(await s.request(body(prompt)))
                    picked.append(header.split(",")[0])
                    await s.respond()
                    await s.close()
                assert picked[0] == picked[1], f"{topic}: {picked}"
    run(main())


def test_response_phase_tracks_in_flight_and_served_endpoint():
    async def main():
        async with harness(n=3) as h:
            s = h.stream()
            header, _ = destination(await s.request(body()))
            primary = h.endpoint(header.split(",")[0])
            assert primary.inflight == 1
            answers = await s.respond(chunks=(b"data: a\n\n", b"data: b\n\n", b"data: [DONE]\n\n"))
            served = {x.header.key: x.header.raw_value.decode()
                      for x in answers[0].response_headers.response.header_mutation.set_headers}
            assert served[extproc.SERVED_KEY] == primary.address
            streamed = [a.response_body.response.body_mutation.streamed_response for a in answers[1:]]
            assert [x.body for x in streamed] == [b"data: a\n\n", b"data: b\n\n", b"data: [DONE]\n\n"]
            assert [x.end_of_stream for x in streamed] == [False, False, True]
            assert primary.inflight == 0
            await s.close()
            assert all(e.inflight == 0 for e in h.pool.endpoints)
            m = h.epp.service.metrics
            assert m.requests.get(("pool-a", primary.name, "200")) == 1
            assert m.ttft.count(("pool-a", primary.name)) == 1
            assert m.duration.count(("pool-a", primary.name)) == 1
    run(main())


def test_fallback_reported_served_moves_the_in_flight_count():
    async def main():
        async with harness(n=3) as h:
            s = h.stream()
            header, _ = destination(await s.request(body()))
            primary, fallback = (h.endpoint(a) for a in header.split(",")[:2])
            assert (primary.inflight, fallback.inflight) == (1, 0)
            answers = await s.respond(served=fallback.address, chunks=())
            sets = {x.header.key: x.header.raw_value.decode()
                    for x in answers[0].response_headers.response.header_mutation.set_headers}
            assert sets[extproc.SERVED_KEY] == fallback.address
            assert (primary.inflight, fallback.inflight) == (0, 1)
            await s.call.write(pb.ProcessingRequest(response_body=pb.HttpBody(body=b"{}", end_of_stream=True)))
            await s.read()
            assert fallback.inflight == 0
            await s.close()
    run(main())


def test_stream_cancelled_before_the_response_releases_the_endpoint():
    async def main():
        async with harness(n=2) as h:
            s = h.stream()
            header, _ = destination(await s.request(body()))
            ep = h.endpoint(header.split(",")[0])
            assert ep.inflight == 1
            s.call.cancel()
            for _ in range(200):  # the server notices the cancellation asynchronously
                if ep.inflight == 0:
                    break
                await asyncio.sleep(0.01)
            assert ep.inflight == 0
            assert h.epp.service.streams == 0
    run(main())


def test_subset_hint_restricts_the_pick():
    async def main():
        async with harness(n=3) as h:
            only = h.backends[2].address
            for _ in range(3):
                s = h.stream()
                header, meta = destination(await s.request(body(), subset=[only]))
                assert header == meta == only
                await s.respond()
                await s.close()
            s = h.stream()
            status, err = immediate(await s.request(body(), subset=["10.9.9.9:8000"]))
            assert status == 503 and "subset" in err["error"]["message"]
            s = h.stream()
            status, _ = immediate(await s.request(body(), subset=[]))
            assert status == 503
    run(main())


def test_bad_json_is_answered_400_with_the_reason():
    async def main():
        async with harness(n=1) as h:
            s = h.stream()
            status, err = immediate(await s.request(b'{"model": "m", "prompt": '))
            assert status == 400
            assert "not valid JSON" in err["error"]["message"]
            s = h.stream()
            status, err = immediate(await s.request(b'{"model": "m"}', path="/v1/chat/completions"))
            assert status == 400 and "'messages' is required" in err["error"]["message"]
            assert all(e.inflight == 0 for e in h.pool.endpoints)
    run(main())


def test_no_endpoints_is_answered_503():
    async def main():
        async with harness(n=1, endpoints=False) as h:
            s = h.stream()
            status, err = immediate(await s.request(body()))
            assert status == 503
            assert err["error"]["type"] == "service_unavailable"
            assert "pool-a" in err["error"]["message"]
    run(main())


def test_sheddable_request_is_answered_429_when_the_pool_is_saturated():
    # GIE: a Sheddable request while the servers are under heavy load gets 429; others pass.
    async def main():
        async with harness(n=2, objectives={"batch": -1, "chat": 10}) as h:
            sheddable = {"x-llm-d-inference-objective": "batch"}
            s = h.stream()
            destination(await s.request(body(), headers=sheddable))  # not saturated: routed
            await s.respond()
            await s.close()

            for b in h.backends:
                b.waiting = 50  # far above the queue threshold
            await h.scrape()
            s = h.stream()
            status, err = immediate(await s.request(body(), headers=sheddable))
            assert status == 429 and "saturated" in err["error"]["message"]
            s = h.stream()
            status, _ = immediate(await s.request(body(), headers={"x-gateway-inference-objective": "batch"}))
            assert status == 429
            s = h.stream()
            destination(await s.request(body(), headers={"x-llm-d-inference-objective": "chat"}))
            await s.close()
    run(main())


def test_flow_control_holds_the_stream_until_the_pool_has_room():
    async def main():
        async with harness(n=2, objectives={"batch": -1}, flow=FlowController()) as h:
            for b in h.backends:
                b.waiting = 50
            await h.scrape()
            s = h.stream()
            pending = asyncio.ensure_future(s.request(body()))
            for _ in range(500):  # the request reaches the flow-control queue
                if h.pool.queued():
                    break
                await asyncio.sleep(0.01)
            assert h.pool.queued() == 1 and not pending.done()
            gone = h.stream()  # a client that gives up while queued leaves the queue
            waiting = asyncio.ensure_future(gone.request(body()))
            for _ in range(500):
                if h.pool.queued() == 2:
                    break
                await asyncio.sleep(0.01)
            assert h.pool.queued() == 2
            gone.call.cancel()
            for _ in range(500):
                if h.pool.queued() == 1:
                    break
                await asyncio.sleep(0.01)
            assert h.pool.queued() == 1
            waiting.cancel()
            shed = h.stream()
            status, _ = immediate(await shed.request(body(), headers={"x-llm-d-inference-objective": "batch"}))
            assert status == 429

            for b in h.backends:
                b.waiting = 0
            await h.scrape()  # a good scrape releases the queue
            header, _ = destination(await asyncio.wait_for(pending, 10))
            assert header.split(",")[0] in {b.address for b in h.backends}
            await s.respond()
            await s.close()
            assert h.pool.queued() == 0 and all(e.inflight == 0 for e in h.pool.endpoints)
    run(main())


def test_health_check_serving():
    async def main():
        async with harness(n=1) as h:
            for port in (h.epp.port, h.epp.health_port):
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                    check = ch.unary_unary("/grpc.health.v1.Health/Check",
                                           request_serializer=extproc.HealthCheckRequest.SerializeToString,
                                           response_deserializer=extproc.HealthCheckResponse.FromString)
                    for service in ("", "liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"):
                        reply = await check(extproc.HealthCheckRequest(service=service), timeout=5)
                        assert reply.status == extproc.SERVING, service
                    try:
                        await check(extproc.HealthCheckRequest(service="nope"), timeout=5)
                        raise AssertionError("unknown service answered")
                    except grpc.aio.AioRpcError as e:
                        assert e.code() == grpc.StatusCode.NOT_FOUND
    run(main())


def test_readiness_follows_the_pool_sync_and_watch_reports_changes():
    async def main():
        synced = False
        async with Client() as client:
            pool = PoolRuntime("p", named_policy("round-robin"), client)
            epp = await extproc.start_epp(pool, ready=lambda: synced, host="127.0.0.1", port=0)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{epp.port}") as ch:
                    ser, de = extproc.HealthCheckRequest.SerializeToString, extproc.HealthCheckResponse.FromString
                    check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=ser,
                                           response_deserializer=de)
                    watch = ch.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=ser,
                                            response_deserializer=de)
                    live = await check(extproc.HealthCheckRequest(service="liveness"), timeout=5)
                    assert live.status == extproc.SERVING
                    for service in ("readiness", "envoy.service.ext_proc.v3.ExternalProcessor"):
                        reply = await check(extproc.HealthCheckRequest(service=service), timeout=5)
                        assert reply.status == extproc.NOT_SERVING, service
                    stream = watch(extproc.HealthCheckRequest(service="readiness"))
                    first = await asyncio.wait_for(stream.read(), 5)
                    assert first.status == extproc.NOT_SERVING
                    synced = True
                    second = await asyncio.wait_for(stream.read(), 10)
                    assert second.status == extproc.SERVING
                    stream.cancel()
            finally:
                await epp.close(None)
    run(main())


def test_epp_command_serves_until_sigterm():
    async def main():
        b = Backend()
        b.server = await start_server(b.handle, "127.0.0.1", 0)
        driver = ("import argparse, sys\n"
                  "from mlplane.cli.epp import add_parser\n"
                  "p = argparse.ArgumentParser(prog='mlplane'); add_parser(p.add_subparsers())\n"
                  "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", driver, "epp", "--host", "127.0.0.1", "--grpc-port", "0",
            "--metrics-port", "0", "--backend", f"http://{b.address}", "--policy", "least-load",
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line.startswith("endpoint picker (ext_proc) listening on 127.0.0.1:"), line
            assert "pool default: 1 endpoint" in line and "policy least-load" in line
            port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                s = EnvoyStream(pb_grpc.ExternalProcessorStub(ch).Process())
                for _ in range(100):  # until the first scrape marked the backend ready
                    answers = await s.request(body())
                    if answers[-1].WhichOneof("response") != "immediate_response":
                        break
                    await asyncio.sleep(0.05)
                    s = EnvoyStream(pb_grpc.ExternalProcessorStub(ch).Process())
                header, _ = destination(answers)
                assert header == b.address
                await s.respond()
                await s.close()
            metrics_at = line.split("metrics ")[1].split("/metrics")[0]
            async with Client() as c:
                resp = await c.request("GET", metrics_at, "/metrics")
                text = (await resp.read()).decode()
            assert f'mlplane_gateway_requests_total{{pool="default",endpoint="{b.address}",code="200"}} 1' in text
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await b.server.close()
    run(main())


def test_epp_command_rejects_bad_flags():
    driver = ("import argparse, sys\n"
              "from mlplane.cli.epp import add_parser\n"
              "p = argparse.ArgumentParser(prog='mlplane'); add_parser(p.add_subparsers())\n"
              "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
    out = subprocess.run([sys.executable, "-c", driver, "epp", "--grpc-port", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "give either --backend URL (repeatable) or --pool NAMESPACE/NAME" in out.stderr
    out = subprocess.run([sys.executable, "-c", driver, "epp", "--backend", "http://127.0.0.1:1",
                          "--policy", "fastest"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "fastest" in out.stderr


def test_epp_follows_an_inference_pool_in_the_store(store):
    """--pool NS/NAME: the Ready pods the InferencePool selects are the endpoints (podIP:targetPort), its
    InferenceObjectives give priorities, and readiness reports the pool synced."""
    from mlplane.api import Pod
    from mlplane.api.inference import InferenceObjective, InferencePool
    from mlplane.api.meta import set_condition

    async def main():
        b = Backend()
        b.server = await start_server(b.handle, "127.0.0.1", 0)
        store.create(InferencePool.model_validate({
            "metadata": {"name": "sim", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "sim"}}, "targetPorts": [{"number": b.server.port}],
                     "endpointPickerRef": {"name": "sim-epp", "port": {"number": 9002}}}}))
        store.create(InferenceObjective.model_validate({
            "metadata": {"name": "batch", "namespace": "default"},
            "spec": {"priority": -1, "poolRef": {"name": "sim"}}}))
        pod = store.create(Pod.model_validate({
            "metadata": {"name": "sim-0", "namespace": "default", "labels": {"app": "sim"}},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "command": ["x"]}]}}))
        pod.status.phase, pod.status.pod_ip = "Running", "127.0.0.1"
        pod.status.conditions = set_condition(None, "Ready", "True")
        store.update_status(pod)

        ready = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        cfg = extproc.EppConfig(host="127.0.0.1", grpc_port=0, pool="default/sim", policy="default")
        task = asyncio.ensure_future(extproc.serve_epp(cfg, on_ready=ready.set_result, stop=stop, store=store))
        try:
            line = await asyncio.wait_for(ready, 30)
            assert line.endswith("(pool sim: 1 endpoint, policy default)"), line
            port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                check = ch.unary_unary("/grpc.health.v1.Health/Check",
                                       request_serializer=extproc.HealthCheckRequest.SerializeToString,
                                       response_deserializer=extproc.HealthCheckResponse.FromString)
                reply = await check(extproc.HealthCheckRequest(service="readiness"), timeout=5)
                assert reply.status == extproc.SERVING
                stub = pb_grpc.ExternalProcessorStub(ch)
                for _ in range(500):  # until the first scrape has marked the pod's server ready
                    s = EnvoyStream(stub.Process())
                    answers = await s.request(body())
                    if answers[-1].WhichOneof("response") != "immediate_response":
                        break
                    await asyncio.sleep(0.02)
                assert destination(answers)[0] == b.address
                await s.respond()
                await s.close()
                b.waiting = 50  # saturated: the batch objective (priority -1) is shed
                for _ in range(500):  # until a scrape has seen the long queue
                    s = EnvoyStream(stub.Process())
                    answers = await s.request(body(), headers={"x-llm-d-inference-objective": "batch"})
                    if answers[-1].WhichOneof("response") == "immediate_response":
                        break
                    await s.respond()
                    await s.close()
                    await asyncio.sleep(0.02)
                assert immediate(answers)[0] == 429
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await b.server.close()

    run(main())


def test_a_client_chosen_request_id_does_not_steer_ties():
    """Review finding 12: the picker breaks ties with the EPP's own request id, not x-request-id."""
    async def main():
        async with harness(n=4, policy="default") as h:
            picked = set()
            for i in range(8):
                s = h.stream()
                header, _ = destination(await s.request(body(f"prompt number {i}"),
                                                        headers={"x-request-id": "same-id"}))
                picked.add(header.split(",")[0])
                await s.respond()
                await s.close()
            assert len(picked) > 1
            assert all(e.inflight == 0 and e.inflight_tokens == 0 for e in h.pool.endpoints)
    run(main())


def test_epp_objective_flag_is_validated():
    """Review finding 15: --objective NAME=PRIORITY, errors name the flag."""
    driver = ("import argparse, sys\n"
              "from mlplane.cli.epp import add_parser\n"
              "p = argparse.ArgumentParser(prog='mlplane'); add_parser(p.add_subparsers())\n"
              "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
    out = subprocess.run([sys.executable, "-c", driver, "epp", "--backend", "http://127.0.0.1:1",
                          "--objective", "batch=x"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "--objective 'batch=x': the priority must be an integer" in out.stderr
