"""The gateway's HTTP handler: OpenAI completions and chat completions routed through a pool's endpoint
picker, plus ``/v1/models``, ``/health`` and ``/metrics``.

A request body is parsed once (orjson, for the picker) and forwarded byte for byte. The chosen endpoint
and its fallbacks are tried in order while nothing has reached them (connection refused, or closed
before any response byte), then the pool is asked once more for endpoints not tried yet; an answer,
5xx included, goes to the client as it is. Streams are relayed chunk by chunk as they arrive; a backend
that breaks off mid-stream ends the client's SSE stream with an error event (other bodies: the
connection is broken off). A client that goes away cancels its upstream request. Answers from an
endpoint carry ``x-gateway-destination-endpoint-served: ip:port``; errors the gateway makes do not.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence

import orjson

from mlplane.gateway.metrics import CONTENT_TYPE, Gauge, GatewayMetrics, add_flow_gauges
from mlplane.gateway.pool import PickError, PoolRuntime
from mlplane.net.http import (
    Client,
    ClientResponse,
    ConnectError,
    Request,
    Response,
    ResponseError,
    StreamResponse,
    error_response,
    json_response,
)
from mlplane.policy.traffic.request import OBJECTIVE_HEADERS, PATHS, BadRequest, header, parse_request
from mlplane.policy.traffic.types import Endpoint, InferenceRequest

log = logging.getLogger("mlplane.gateway")

SERVED_HEADER = "x-gateway-destination-endpoint-served"
REQUEST_TIMEOUT = 300.0  # seconds to wait for a response head, and for each piece of a body (Envoy advice)
MAX_ATTEMPTS = 5  # endpoints tried per request
WATCH_AFTER = 0.02  # seconds a request waits for its response before the gateway watches for the client leaving

# Hop-by-hop headers (RFC 9110 7.6.1) and the framing headers the client and server set themselves.
_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                  "upgrade", "host", "content-length", "expect"))
_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
                429: "rate_limit_error", 499: "client_closed_request", 502: "bad_gateway",
                503: "service_unavailable", 504: "gateway_timeout"}


def _error(status: int, message: str) -> Response:
    return error_response(status, message, _ERROR_TYPES.get(status, "error"))


class _Body:
    """A stream body that runs ``abandon`` when it is closed before its first chunk was asked for (an
    async generator that never started skips its ``finally`` on ``aclose``)."""

    __slots__ = ("_gen", "_abandon", "_started")

    def __init__(self, gen: AsyncIterator[bytes], abandon) -> None:
        self._gen = gen
        self._abandon = abandon
        self._started = False

    def __aiter__(self) -> _Body:
        return self

    def __anext__(self):
        self._started = True
        return self._gen.__anext__()

    async def aclose(self) -> None:
        if not self._started:
            self._started = True
            self._abandon()
        await self._gen.aclose()


class _Watch:
    """Cancels the current task when the client of ``req`` goes away; watching starts only once the
    request has waited ``delay`` seconds (no task for the quick ones). ``stop()`` when done."""

    __slots__ = ("_req", "_task", "_timer", "_waiter", "fired")

    def __init__(self, req: Request, delay: float) -> None:
        self._req = req
        self._task = asyncio.current_task()
        self._waiter: asyncio.Future | None = None
        self.fired = False
        self._timer = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._task is not None:
            self._waiter = asyncio.ensure_future(self._req.disconnected.wait())
            self._waiter.add_done_callback(self._fire)

    def _fire(self, waiter: asyncio.Future) -> None:
        task = self._task
        if task is not None and not waiter.cancelled():
            self.fired = True
            task.cancel()

    def stop(self) -> None:
        self._task = None  # a callback already scheduled must not cancel what the task does next
        if self._timer is not None:
            self._timer.cancel()
        if self._waiter is not None:
            self._waiter.cancel()


class Gateway:
    """Routes inference requests over one or more pools; ``handle`` is the HTTP handler."""

    def __init__(self, pools: Sequence[PoolRuntime], client: Client, metrics: GatewayMetrics | None = None, *,
                 request_timeout: float = REQUEST_TIMEOUT):
        if not pools:
            raise ValueError("a gateway needs at least one pool")
        self.pools = list(pools)
        self.client = client
        self.metrics = metrics or GatewayMetrics()
        self.request_timeout = request_timeout
        self.watch_after = WATCH_AFTER
        self._ids = itertools.count(1)
        self._codes = {c: str(c) for c in range(100, 600)}
        self._add_pool_gauges()

    # --- dispatch ---------------------------------------------------------------------------

    async def handle(self, req: Request) -> Response | StreamResponse:
        path = req.path
        if path in PATHS:
            if req.method != "POST":
                return _error(405, f"{path} accepts POST, not {req.method}")
            return await self.infer(req)
        if req.method not in ("GET", "HEAD"):
            if path in ("/v1/models", "/health", "/metrics"):
                return _error(405, f"{path} accepts GET, not {req.method}")
            return _error(404, f"no route for {req.method} {path}")
        if path == "/metrics":
            return Response(200, self.metrics.render(), content_type=CONTENT_TYPE)
        if path == "/v1/models":
            return self.models()
        if path in ("/health", "/healthz", "/ready", "/readyz"):
            return self.health()
        return _error(404, f"no route for {req.method} {path}")

    def pool_for(self, model: str) -> PoolRuntime:
        """The first pool that serves ``model``, else the first pool."""
        pools = self.pools
        if len(pools) > 1:
            for p in pools:
                if p.serves(model):
                    return p
        return pools[0]

    # --- inference --------------------------------------------------------------------------

    async def infer(self, req: Request) -> Response | StreamResponse:
        t0 = time.perf_counter()
        metrics = self.metrics
        headers = req.headers
        try:
            request = parse_request(req.path, req.body, headers, request_id=f"gw-{next(self._ids)}")
        except BadRequest as e:
            label = self.pools[0].name if len(self.pools) == 1 else ""
            metrics.failed.inc((label, "bad_request"))
            metrics.requests.inc((label, "", "400"))
            return _error(400, str(e))
        pool = self.pool_for(request.model)
        objective = header(headers, OBJECTIVE_HEADERS)
        if objective:
            request.priority = pool.priority(objective)
        if pool.is_adapter(request.model):
            request.lora = request.model
        try:
            decision = await pool.acquire(request, lambda: req.disconnected)
        except PickError as e:
            metrics.failed.inc((pool.name, e.reason))
            metrics.requests.inc((pool.name, "", self._codes[e.status]))
            return _error(e.status, str(e))
        try:
            return await self._forward(req, pool, request, decision.endpoints, t0)
        except BaseException:  # a bug or a cancellation: nothing may stay counted in flight
            pool.release_all(request)
            raise

    async def _forward(self, req: Request, pool: PoolRuntime, request: InferenceRequest,
                       endpoints: list[Endpoint], t0: float) -> Response | StreamResponse:
        metrics = self.metrics
        fwd = {k: v for k, v in req.headers.items() if k not in _HOP}
        resp: ClientResponse | None = None
        last_error = ""
        tried: list[Endpoint] = []
        queue = list(endpoints)
        ep = queue.pop(0)
        repicked = False
        watch = _Watch(req, self.watch_after)  # nothing else notices a client leaving while the handler waits
        try:
            while True:
                tried.append(ep)
                try:
                    resp = await self.client.request("POST", ep.address, req.path, fwd, req.body,
                                                     timeout=self.request_timeout,
                                                     read_timeout=self.request_timeout)
                    break
                except ConnectError as e:  # nothing reached the endpoint: safe to send elsewhere
                    pool.mark_failed(ep, str(e))
                    last_error = str(e)
                except asyncio.TimeoutError:  # the endpoint may be working on it: do not send it twice
                    pool.done(request, ep, False)
                    return self._failed(pool, 504, "timeout",
                                        f"endpoint {ep.address} of pool {pool.name} sent no response in "
                                        f"{self.request_timeout:g}s")
                except ResponseError as e:  # it got the request: do not send it twice
                    pool.done(request, ep, False)
                    return self._failed(pool, 502, "backend_error",
                                        f"endpoint {ep.address} of pool {pool.name} sent a broken response head: "
                                        f"{e}")
                nxt = self._next(pool, request, queue, tried, repicked) if len(tried) < MAX_ATTEMPTS else None
                if nxt is None:
                    pool.done(request, ep, False)
                    return self._failed(pool, 502, "connect",
                                        f"no endpoint of pool {pool.name} could be reached: {last_error}")
                new, repicked = nxt
                metrics.retries.inc((pool.name,))
                pool.retarget(request, ep, new)
                ep = new

            if request.stream and resp.status < 300:
                watch.stop()  # from here the HTTP server cancels the stream when the client leaves
                out = self._response_headers(resp, ep)
                return StreamResponse(resp.status, _Body(self._relay(pool, request, ep, resp, t0),
                                                         lambda: self._abandon(pool, request, ep, resp)),
                                      out, content_type=None)
            try:
                pool.first_token(request, ep)
                body = await resp.read()
            except (ResponseError, asyncio.TimeoutError) as e:
                pool.done(request, ep, False)
                return self._failed(pool, 502, "backend_error",
                                    f"endpoint {ep.address} of pool {pool.name} broke off its response: {e}")
            return self._complete(pool, request, ep, resp, body, t0, ok=resp.status < 500)
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            asyncio.current_task().uncancel()  # the client left: our cancellation, answered below
            pool.release_all(request)
            if resp is not None:
                resp.close()
            metrics.failed.inc((pool.name, "client_gone"))
            metrics.requests.inc((pool.name, ep.name, "499"))
            return _error(499, "the client closed the connection")
        finally:
            watch.stop()

    def _next(self, pool: PoolRuntime, request: InferenceRequest, queue: list[Endpoint], tried: list[Endpoint],
              repicked: bool) -> tuple[Endpoint, bool] | None:
        """The next endpoint to try: the next healthy fallback, else (once) a fresh pick among the rest."""
        while queue:
            e = queue.pop(0)
            if e.healthy and e not in tried:
                return e, repicked
        if not repicked:
            again = [e for e in pool.pick_again(request, tried) if e not in tried]  # [] when the picker fails
            if again:
                queue.extend(again[1:])
                return again[0], True
        return None

    def _response_headers(self, resp: ClientResponse, ep: Endpoint) -> list[tuple[str, str]]:
        out = [(k, v) for k, v in resp.headers.items() if k not in _HOP]
        out.append((SERVED_HEADER, ep.address))
        return out

    def _complete(self, pool: PoolRuntime, request: InferenceRequest, ep: Endpoint, resp: ClientResponse,
                  body: bytes, t0: float, ok: bool) -> Response:
        pool.done(request, ep, ok)
        key = (pool.name, ep.name)
        m = self.metrics
        m.duration.observe(key, time.perf_counter() - t0)
        m.requests.inc((pool.name, ep.name, self._codes.get(resp.status) or str(resp.status)))
        if not ok:
            m.failed.inc((pool.name, "backend_error"))
        return Response(resp.status, body, self._response_headers(resp, ep), content_type=None)

    def _failed(self, pool: PoolRuntime, status: int, reason: str, message: str) -> Response:
        """An error the gateway makes (no served header: no endpoint served it)."""
        self.metrics.failed.inc((pool.name, reason))
        self.metrics.requests.inc((pool.name, "", self._codes[status]))
        log.warning("pool %s: %s", pool.name, message)
        return _error(status, message)

    def _abandon(self, pool: PoolRuntime, request: InferenceRequest, ep: Endpoint, resp: ClientResponse) -> None:
        """The client left before the stream's first chunk was asked for: drop the upstream response."""
        resp.close()
        pool.done(request, ep, False)
        self.metrics.failed.inc((pool.name, "client_gone"))
        self.metrics.requests.inc((pool.name, ep.name, "499"))

    async def _relay(self, pool: PoolRuntime, request: InferenceRequest, ep: Endpoint, resp: ClientResponse,
                     t0: float) -> AsyncIterator[bytes]:
        """The backend's body chunks as they arrive; records TTFT at the first one."""
        m = self.metrics
        key = (pool.name, ep.name)
        first = True
        ok = broken = False
        code = self._codes.get(resp.status) or str(resp.status)
        try:
            async for chunk in resp.iter_chunks():
                if first:
                    first = False
                    m.ttft.observe(key, time.perf_counter() - t0)
                    pool.first_token(request, ep)
                yield chunk
            ok = True
        except (ResponseError, asyncio.TimeoutError) as e:
            broken = True
            m.failed.inc((pool.name, "stream_broken"))
            log.warning("pool %s: endpoint %s broke off a stream: %s", pool.name, ep.address, e)
            message = f"endpoint {ep.address} of pool {pool.name} broke off the stream: {e or type(e).__name__}"
            if "event-stream" not in resp.headers.get("content-type", ""):
                raise  # no in-band way to say so: the server breaks the client's connection off
            yield b"data: " + orjson.dumps({"error": {"message": message, "type": "bad_gateway",
                                                      "code": 502}}) + b"\n\n"
        finally:
            if not ok:
                resp.close()  # the client went away (or the backend broke off): drop the upstream connection
                if not broken:
                    m.failed.inc((pool.name, "client_gone"))
            pool.done(request, ep, ok)
            m.duration.observe(key, time.perf_counter() - t0)
            m.requests.inc((pool.name, ep.name, code))

    # --- other routes -----------------------------------------------------------------------

    def models(self) -> Response:
        """The union of the pools' model lists, in the OpenAI list shape."""
        seen: dict[str, dict] = {}
        for p in self.pools:
            for card in p.served_models():
                seen.setdefault(card["id"], card)
        return json_response(200, {"object": "list", "data": list(seen.values())})

    def health(self) -> Response:
        pools = {p.name: len(p.ready()) for p in self.pools}
        ok = any(pools.values())
        return json_response(200 if ok else 503, {"status": "ok" if ok else "no ready endpoints",
                                                  "ready_endpoints": pools})

    def _add_pool_gauges(self) -> None:
        pools = self.pools
        r = self.metrics.registry

        def per_pool(field: str):
            return lambda: [((p.name,), p.gauges()[field]) for p in pools]

        r.add(Gauge("inference_pool_ready_pods", "The number of ready endpoints in the inference pool.",
                    ("name",), per_pool("ready")))
        r.add(Gauge("inference_pool_average_queue_size",
                    "The average number of requests waiting in the model servers' queues across the pool.",
                    ("name",), per_pool("queue")))
        r.add(Gauge("inference_pool_average_kv_cache_utilization",
                    "The average KV cache utilization of the model servers across the pool.",
                    ("name",), per_pool("kv")))
        r.add(Gauge("inference_pool_average_running_requests",
                    "The average number of requests running on the model servers across the pool.",
                    ("name",), per_pool("running")))
        r.add(Gauge("inference_pool_per_pod_queue_size",
                    "The number of requests waiting in each model server's queue.",
                    ("model_server_pod", "name"),
                    lambda: [((e.name, p.name), e.metrics.waiting) for p in pools for e in p.endpoints]))
        r.add(Gauge("mlplane_gateway_endpoint_inflight_requests",
                    "Requests the gateway has sent to each endpoint and not yet seen finish.",
                    ("pool", "endpoint"),
                    lambda: [((p.name, e.name), e.inflight) for p in pools for e in p.endpoints]))
        r.add(Gauge("mlplane_gateway_queued_requests",
                    "Requests waiting in the gateway's flow control queue.",
                    ("pool",), lambda: [((p.name,), p.queued()) for p in pools]))
        add_flow_gauges(r, pools)
