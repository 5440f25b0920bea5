"""The endpoint picker as an Envoy ``ext_proc`` gRPC service (Gateway API Inference Extension
endpoint-picker protocol, GIE docs/proposals/004-endpoint-picker-protocol).

One ``ExternalProcessor/Process`` stream is one HTTP request through the proxy:

- request headers, then the body in chunks up to ``end_of_stream``. The body is buffered, parsed
  (``parse_request``) and an endpoint is picked through the pool's runtime (flow control, picker).
- the pick goes back as the request header ``x-gateway-destination-endpoint: ip:port[,fallback…]``
  and, identical, as dynamic metadata ``envoy.lb`` / ``x-gateway-destination-endpoint``. In
  ``FULL_DUPLEX_STREAMED`` mode (the mode GIE requires) the header answer waits for the whole body
  and the body is streamed back as ``streamed_response`` chunks; in ``BUFFERED`` mode the headers are
  let through at once and the mutation rides on the body answer.
- a subset hint (filter metadata ``envoy.lb.subset_hint`` / ``x-gateway-destination-endpoint-subset``)
  restricts the pick; an empty or ineligible subset is answered 503.
- errors are immediate responses with a small JSON body: 400 bad request, 429 shed, 503 no endpoint.
- response headers report the endpoint that served (metadata ``envoy.lb`` /
  ``x-gateway-destination-endpoint-served``), the first response body chunk marks the first token,
  ``end_of_stream`` finishes the request; a stream that ends early finishes it as failed.

A gRPC health service (``grpc.health.v1.Health``) answers for ``""``, ``liveness``, ``readiness`` and
``envoy.service.ext_proc.v3.ExternalProcessor``.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Iterable

import grpc
import orjson
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

from mlplane.gateway.metrics import GatewayMetrics, add_flow_gauges
from mlplane.gateway.pool import NoEndpoints, PickError, PoolRuntime
from mlplane.policy.traffic.request import OBJECTIVE_HEADERS, PATHS, BadRequest, header, parse_request
from mlplane.policy.traffic.types import Decision, Endpoint, InferenceRequest

log = logging.getLogger("mlplane.epp")

DEFAULT_GRPC_PORT = 9002  # llm-d-router pkg/epp/server/options.go

DESTINATION_NAMESPACE = "envoy.lb"
DESTINATION_KEY = "x-gateway-destination-endpoint"
SERVED_KEY = "x-gateway-destination-endpoint-served"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"

# Envoy limits one streamed body message; the reference EPP cuts bodies into chunks below 64 KiB.
BODY_CHUNK = 62_000
MAX_MESSAGE = 64 * 1024 * 1024

_Mode = processing_mode_pb2.ProcessingMode.BodySendMode
FULL_DUPLEX = _Mode.Value("FULL_DUPLEX_STREAMED")
BUFFERED = _Mode.Value("BUFFERED")
BODY_MODES = {"full-duplex": FULL_DUPLEX, "buffered": BUFFERED}

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


# --- message helpers ---------------------------------------------------------------------------

def _header_value(h: base_pb2.HeaderValue) -> str:
    return h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value


def _headers(msg: pb.HttpHeaders) -> dict[str, str]:
    return {h.key.lower(): _header_value(h) for h in msg.headers.headers}


_OVERWRITE = base_pb2.HeaderValueOption.HeaderAppendAction.Value("OVERWRITE_IF_EXISTS_OR_ADD")


def _set_headers(pairs: Iterable[tuple[str, str]]) -> pb.HeaderMutation:
    """Set (replace, never append to) each header: a client cannot smuggle in its own destination."""
    return pb.HeaderMutation(set_headers=[
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, raw_value=v.encode()),
                                   append_action=_OVERWRITE)
        for k, v in pairs])


def _metadata_string_list(req: pb.ProcessingRequest, namespace: str, key: str) -> list[str] | None:
    """``metadata_context.filter_metadata[namespace][key]`` as a list of strings (None when absent).
    A comma-separated string is accepted as well as a list."""
    if not req.HasField("metadata_context"):
        return None
    ns = req.metadata_context.filter_metadata.get(namespace)
    if ns is None or key not in ns.fields:
        return None
    value = ns.fields[key]
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return [v.string_value for v in value.list_value.values if v.string_value]
    if kind == "string_value":
        return [s.strip() for s in value.string_value.split(",") if s.strip()]
    return []


def _destination_metadata(value: str) -> struct_pb2.Struct:
    meta = struct_pb2.Struct()
    meta.fields[DESTINATION_NAMESPACE].struct_value.fields[DESTINATION_KEY].string_value = value
    return meta


def immediate(status: int, message: str, kind: str) -> pb.ProcessingResponse:
    """An ImmediateResponse with an OpenAI-style JSON error body."""
    body = orjson.dumps({"error": {"message": message, "type": kind, "code": status}})
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status),
        headers=_set_headers([("content-type", "application/json")]),
        body=body, details=kind))


def _body_chunks(body: bytes, phase: str, end_of_stream: bool) -> list[pb.ProcessingResponse]:
    """``body`` as streamed body mutations of at most BODY_CHUNK bytes (FULL_DUPLEX_STREAMED)."""
    pieces = [body[i:i + BODY_CHUNK] for i in range(0, len(body), BODY_CHUNK)] or [b""]
    out = []
    for i, piece in enumerate(pieces):
        last = end_of_stream and i == len(pieces) - 1
        common = pb.CommonResponse(body_mutation=pb.BodyMutation(
            streamed_response=pb.StreamedBodyResponse(body=piece, end_of_stream=last)))
        out.append(pb.ProcessingResponse(**{phase: pb.BodyResponse(response=common)}))
    return out


# --- one HTTP request --------------------------------------------------------------------------

@dataclass
class _Exchange:
    """The state of one ext_proc stream (= one HTTP request)."""

    request_mode: int
    response_mode: int
    started: float  # perf_counter at the request headers
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    subset: frozenset[str] | None = None
    request: InferenceRequest | None = None
    endpoint: Endpoint | None = None  # the endpoint the pool counts the request against
    routed: bool = False  # the destination went to the proxy
    status: int = 0  # the upstream response status, 0 before response headers
    first_token: bool = False
    done: bool = False


_ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_error", 499: "client_closed_request",
                503: "service_unavailable"}


class ExtProcService(pb_grpc.ExternalProcessorServicer):
    """``envoy.service.ext_proc.v3.ExternalProcessor`` answering with ``pool``'s picks.

    ``body_mode`` ("full-duplex" or "buffered") is assumed when the proxy does not say which mode it
    runs in (Envoy sends ``protocol_config`` on the first message since 1.33)."""

    def __init__(self, pool: PoolRuntime, metrics: GatewayMetrics | None = None, *,
                 body_mode: str = "full-duplex"):
        if body_mode not in BODY_MODES:
            raise ValueError(f"body_mode must be one of {sorted(BODY_MODES)}, not {body_mode!r}")
        self.pool = pool
        self.metrics = metrics or pool.metrics or GatewayMetrics()
        self.default_mode = BODY_MODES[body_mode]
        self.streams = 0  # streams open now
        self._ids = itertools.count(1)

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ProcessingResponse]:
        ex: _Exchange | None = None
        self.streams += 1
        try:
            async for req in request_iterator:
                if ex is None:
                    ex = self._exchange(req)
                kind = req.WhichOneof("request")
                if kind == "request_headers":
                    answers = await self._request_headers(ex, req)
                elif kind == "request_body":
                    answers = await self._request_body(ex, req)
                elif kind == "request_trailers":
                    answers = await self._request_trailers(ex, req)
                elif kind == "response_headers":
                    answers = self._response_headers(ex, req)
                elif kind == "response_body":
                    answers = self._response_body(ex, req)
                elif kind == "response_trailers":
                    self._note_served(ex, req)
                    self._finish(ex, ok=ex.status < 500)
                    answers = [pb.ProcessingResponse(response_trailers=pb.TrailersResponse())]
                else:
                    answers = []
                if req.observability_mode:  # the proxy does not wait for answers
                    answers = [a for a in answers if a.WhichOneof("response") == "immediate_response"]
                for answer in answers:
                    yield answer
                    if answer.WhichOneof("response") == "immediate_response":
                        return
        finally:
            self.streams -= 1
            if ex is not None and not ex.done:
                # The proxy closed the stream: before a response the request failed; after response
                # headers without a body phase (response_body_mode NONE) its status says.
                self._finish(ex, ok=bool(ex.status) and ex.status < 500)

    def _exchange(self, req: pb.ProcessingRequest) -> _Exchange:
        now = time.perf_counter()
        if req.HasField("protocol_config"):
            cfg = req.protocol_config
            return _Exchange(request_mode=cfg.request_body_mode, response_mode=cfg.response_body_mode,
                             started=now)
        return _Exchange(request_mode=self.default_mode, response_mode=self.default_mode, started=now)

    # request phase

    async def _request_headers(self, ex: _Exchange, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        ex.headers = _headers(req.request_headers)
        self._note_subset(ex, req)
        if req.request_headers.end_of_stream or ex.request_mode not in (FULL_DUPLEX, BUFFERED):
            # No body will come (a GET), or the proxy will not hold the headers for it: pick now.
            return await self._route(ex, with_body=False, end_of_stream=req.request_headers.end_of_stream)
        if ex.request_mode == BUFFERED:
            return [pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=pb.CommonResponse()))]
        return []  # FULL_DUPLEX_STREAMED: the header answer carries the pick, after the body

    async def _request_body(self, ex: _Exchange, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        self._note_subset(ex, req)
        if ex.routed:  # picked at header time (STREAMED modes): let the chunks through unchanged
            body = req.request_body
            if ex.request_mode == FULL_DUPLEX:
                return _body_chunks(body.body, "request_body", body.end_of_stream)
            return [pb.ProcessingResponse(request_body=pb.BodyResponse(response=pb.CommonResponse()))]
        ex.body += req.request_body.body
        if not req.request_body.end_of_stream:
            return []
        return await self._route(ex, with_body=True, end_of_stream=True)

    async def _request_trailers(self, ex: _Exchange, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        answers: list[pb.ProcessingResponse] = []
        if not ex.routed:  # trailers end a body that had no end_of_stream
            answers = await self._route(ex, with_body=True, end_of_stream=False)
            if answers and answers[-1].WhichOneof("response") == "immediate_response":
                return answers
        return answers + [pb.ProcessingResponse(request_trailers=pb.TrailersResponse())]

    def _note_subset(self, ex: _Exchange, req: pb.ProcessingRequest) -> None:
        subset = _metadata_string_list(req, SUBSET_NAMESPACE, SUBSET_KEY)
        if subset is not None:
            ex.subset = frozenset(subset)

    def _error(self, status: int, reason: str, message: str) -> list[pb.ProcessingResponse]:
        pool = self.pool.name
        self.metrics.failed.inc((pool, reason))
        self.metrics.requests.inc((pool, "", str(status)))
        return [immediate(status, message, _ERROR_TYPES.get(status, "error"))]

    async def _route(self, ex: _Exchange, *, with_body: bool, end_of_stream: bool) -> list[pb.ProcessingResponse]:
        """Parse, pick and answer with the destination; or answer with an immediate error."""
        pool = self.pool
        request_id = f"epp-{next(self._ids)}"  # ours: a client-chosen x-request-id must not steer tie-breaks
        path = ex.headers.get(":path", "").partition("?")[0]
        body = bytes(ex.body)
        ex.body = bytearray()
        if with_body and path in PATHS:
            try:
                request = parse_request(path, body, ex.headers, request_id=request_id)
            except BadRequest as e:
                return self._error(400, "bad_request", str(e))
            if pool.is_adapter(request.model):
                request.lora = request.model
        else:  # no body, or not an inference API: routed on load alone
            request = InferenceRequest(id=request_id, model="", prompt="", prompt_tokens=0,
                                       headers=ex.headers, size=len(body))
        request.priority = pool.priority(header(ex.headers, OBJECTIVE_HEADERS))
        try:
            decision = await self._acquire(request, ex.subset)
        except PickError as e:
            return self._error(e.status, e.reason, str(e))
        ex.request = request
        ex.endpoint = decision.endpoints[0]
        ex.routed = True
        destination = ",".join(e.address for e in decision.endpoints)
        set_headers = [(DESTINATION_KEY, destination)]
        if with_body and ex.request_mode == FULL_DUPLEX:
            set_headers.append(("content-length", str(len(body))))
        common = pb.CommonResponse(header_mutation=_set_headers(set_headers), clear_route_cache=True)
        metadata = _destination_metadata(destination)
        if with_body and ex.request_mode == BUFFERED:
            # the headers went on already; the mutation rides on the body answer
            return [pb.ProcessingResponse(request_body=pb.BodyResponse(response=common),
                                          dynamic_metadata=metadata)]
        answers = [pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common),
                                         dynamic_metadata=metadata)]
        if with_body:
            answers += _body_chunks(body, "request_body", end_of_stream)
        return answers

    async def _acquire(self, request: InferenceRequest, subset: frozenset[str] | None) -> Decision:
        if subset is None:
            return await self.pool.acquire(request)
        if not subset:
            raise NoEndpoints(f"the subset hint {SUBSET_KEY} lists no endpoint")
        return await self.pool.acquire(request, subset=subset)

    # response phase

    def _response_headers(self, ex: _Exchange, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        headers = _headers(req.response_headers)
        try:
            ex.status = int(headers.get(":status", "200"))
        except ValueError:
            ex.status = 500
        self._note_served(ex, req)
        set_headers = [(SERVED_KEY, ex.endpoint.address)] if ex.endpoint is not None else []
        answer = pb.ProcessingResponse(response_headers=pb.HeadersResponse(
            response=pb.CommonResponse(header_mutation=_set_headers(set_headers))))
        if req.response_headers.end_of_stream:
            self._finish(ex, ok=ex.status < 500)
        return [answer]

    def _note_served(self, ex: _Exchange, req: pb.ProcessingRequest) -> None:
        """Follow the proxy's report of the endpoint that served (it retried down the list)."""
        served = _metadata_string_list(req, DESTINATION_NAMESPACE, SERVED_KEY)
        if not served or ex.done or ex.request is None or ex.endpoint is None or served[0] == ex.endpoint.address:
            return
        other = next((e for e in self.pool.endpoints if e.address == served[0]), None)
        if other is not None:  # move the in-flight count to the endpoint that has the request
            self.pool.retarget(ex.request, ex.endpoint, other)
            ex.endpoint = other

    def _response_body(self, ex: _Exchange, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        self._note_served(ex, req)
        body = req.response_body
        if not ex.first_token and (body.body or body.end_of_stream) and ex.endpoint is not None \
                and ex.request is not None:
            ex.first_token = True
            self.pool.first_token(ex.request, ex.endpoint)
            self.metrics.ttft.observe((self.pool.name, ex.endpoint.name), time.perf_counter() - ex.started)
        if body.end_of_stream:
            self._finish(ex, ok=ex.status < 500)
        if ex.response_mode == FULL_DUPLEX:
            return _body_chunks(body.body, "response_body", body.end_of_stream)
        return [pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse()))]

    def _finish(self, ex: _Exchange, *, ok: bool) -> None:
        if ex.done:
            return
        ex.done = True
        if ex.request is None or ex.endpoint is None:
            return
        self.pool.done(ex.request, ex.endpoint, ok)
        key = (self.pool.name, ex.endpoint.name)
        self.metrics.duration.observe(key, time.perf_counter() - ex.started)
        self.metrics.requests.inc((self.pool.name, ex.endpoint.name, str(ex.status) if ex.status else "000"))
        if not ok:
            self.metrics.failed.inc((self.pool.name, "backend_error" if ex.status else "stream_broken"))


# --- gRPC health (grpc.health.v1) ---------------------------------------------------------------

def _health_messages():
    """HealthCheckRequest / HealthCheckResponse classes: grpcio-health-checking's when installed,
    otherwise built here from the protocol's two messages (in a private descriptor pool)."""
    try:
        from grpc_health.v1 import health_pb2  # type: ignore[import-not-found]

        return health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    except ImportError:
        pass
    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="grpc/health/v1/health.proto", package="grpc.health.v1",
                                            syntax="proto3")
    req = fd.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    resp = fd.message_type.add(name="HealthCheckResponse")
    status = resp.enum_type.add(name="ServingStatus")
    for number, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=name, number=number)
    resp.field.add(name="status", number=1, type=F.TYPE_ENUM, label=F.LABEL_OPTIONAL,
                   type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")))


HealthCheckRequest, HealthCheckResponse = _health_messages()
SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
HEALTH_SERVICE = "grpc.health.v1.Health"


class HealthService:
    """``grpc.health.v1.Health``: ``liveness`` is SERVING while the process answers; ``readiness``,
    the ext_proc service name and ``""`` follow ``ready()``."""

    def __init__(self, ready: Callable[[], bool], *, watch_interval: float = 1.0):
        self.ready = ready
        self.watch_interval = watch_interval

    def status(self, service: str) -> int | None:
        if service == "liveness":
            return SERVING
        if service in ("", "readiness", EXT_PROC_SERVICE):
            return SERVING if self.ready() else NOT_SERVING
        return None

    async def check(self, request, context: grpc.aio.ServicerContext):
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return HealthCheckResponse(status=status)

    async def watch(self, request, context: grpc.aio.ServicerContext):
        last = None
        while True:
            status = self.status(request.service)
            if status is None:
                status = SERVICE_UNKNOWN
            if status != last:
                yield HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(self.watch_interval)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(HEALTH_SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(
                self.check, request_deserializer=HealthCheckRequest.FromString,
                response_serializer=HealthCheckResponse.SerializeToString),
            "Watch": grpc.unary_stream_rpc_method_handler(
                self.watch, request_deserializer=HealthCheckRequest.FromString,
                response_serializer=HealthCheckResponse.SerializeToString),
        })


# --- serving -------------------------------------------------------------------------------------

@dataclass
class EppServer:
    """A running endpoint picker: the ext_proc server (health too) and an optional health-only one."""

    grpc_server: grpc.aio.Server
    port: int
    service: ExtProcService
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None

    async def close(self, grace: float | None = 0.5) -> None:
        await self.grpc_server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(grace)


_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]


def _listen(server: grpc.aio.Server, host: str, port: int) -> int:
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:  # grpc reports a busy or invalid address this way
        raise OSError(errno.EADDRINUSE, f"cannot listen on {host}:{port}: {e}") from None
    if not bound:
        raise OSError(errno.EADDRINUSE, f"cannot listen on {host}:{port}")
    return bound


async def start_epp(pool: PoolRuntime, *, metrics: GatewayMetrics | None = None,
                    ready: Callable[[], bool] | None = None, host: str = "0.0.0.0",
                    port: int = DEFAULT_GRPC_PORT, health_port: int | None = None,
                    body_mode: str = "full-duplex") -> EppServer:
    """Serve ext_proc and gRPC health for ``pool`` on ``host:port`` (0 = any free port), and health alone
    on ``health_port`` when given. ``ready()`` says whether the pool's membership is known (default:
    always). The pool's scrapers are the caller's to start."""
    service = ExtProcService(pool, metrics, body_mode=body_mode)
    health = HealthService(ready or (lambda: True))
    server = grpc.aio.server(options=_OPTIONS)
    pb_grpc.add_ExternalProcessorServicer_to_server(service, server)
    server.add_generic_rpc_handlers([health.handler()])
    bound = _listen(server, host, port)
    epp = EppServer(grpc_server=server, port=bound, service=service)
    if health_port is not None:
        hserver = grpc.aio.server()
        hserver.add_generic_rpc_handlers([health.handler()])
        epp.health_port = _listen(hserver, host, health_port)
        epp.health_server = hserver
        await hserver.start()
    await server.start()
    return epp


# --- the `mlplane epp` process ------------------------------------------------------------------

@dataclass
class EppConfig:
    """What ``mlplane epp`` was asked to run: one pool (static backends or an InferencePool)."""

    host: str = "0.0.0.0"
    grpc_port: int = DEFAULT_GRPC_PORT
    health_port: int | None = None  # a separate gRPC health listener (upstream: 9003)
    metrics_port: int | None = None  # Prometheus /metrics over HTTP (upstream: 9090)
    backends: list[str] = field(default_factory=list)
    pool: str | None = None  # NAMESPACE/NAME of an InferencePool in the API server
    server: str | None = None
    token: str | None = None
    policy: str = "default"
    config_text: str | None = None
    flow_control: bool = False
    scrape_interval: float = 0.05
    body_mode: str = "full-duplex"
    objectives: dict[str, int] = field(default_factory=dict)  # --objective NAME=PRIORITY


def _gateway_config(cfg: EppConfig):
    from mlplane.gateway.app import GatewayConfig

    return GatewayConfig(backends=cfg.backends, pools=[cfg.pool] if cfg.pool else [], server=cfg.server,
                         token=cfg.token, policy=cfg.policy, config_text=cfg.config_text,
                         flow_control=cfg.flow_control, scrape_interval=cfg.scrape_interval,
                         objectives=cfg.objectives)


def validate(cfg: EppConfig) -> None:
    """Raise ValueError naming the flag when the configuration cannot run."""
    from mlplane.gateway import app

    if bool(cfg.backends) == bool(cfg.pool):
        raise ValueError("give either --backend URL (repeatable) or --pool NAMESPACE/NAME")
    if cfg.body_mode not in BODY_MODES:
        raise ValueError(f"--body-mode must be one of {', '.join(BODY_MODES)}, not {cfg.body_mode!r}")
    for flag, port in (("--grpc-port", cfg.grpc_port), ("--grpc-health-port", cfg.health_port),
                       ("--metrics-port", cfg.metrics_port)):
        if port is not None and not 0 <= port < 65536:
            raise ValueError(f"{flag} must be between 0 and 65535, got {port}")
    app.validate(_gateway_config(cfg))


async def serve_epp(cfg: EppConfig, *, on_ready: Callable[[str], None] | None = None,
                    stop: asyncio.Event | None = None, store=None) -> None:
    """Run the endpoint picker until ``stop`` is set (or SIGTERM/SIGINT when no event is given);
    ``on_ready`` gets the "endpoint picker (ext_proc) listening on ..." line. A ``--pool`` pool is read
    from ``store``, by default the API server at ``cfg.server``."""
    from mlplane.gateway import app
    from mlplane.gateway.metrics import CONTENT_TYPE
    from mlplane.net.http import Client, Response, start_server

    gcfg = _gateway_config(cfg)
    client = Client(max_idle_per_host=16)
    metrics = GatewayMetrics()
    loop = asyncio.get_running_loop()
    watcher = None
    if cfg.backends:
        pool = app.make_pool(app.STATIC_POOL, gcfg, client, metrics)
        pool.set_endpoints(app.static_endpoints(cfg.backends))
    else:
        from mlplane.control.store.http import HTTPStore
        from mlplane.gateway.discovery import PoolWatcher

        ns, _, name = (cfg.pool or "").partition("/")
        pool = app.make_pool(name, gcfg, client, metrics)
        if store is None:
            store = HTTPStore(cfg.server, token=cfg.token)

        def on_change(endpoints, pool_obj, objectives):
            loop.call_soon_threadsafe(app.apply_pool_update, pool, endpoints, objectives, pool_obj)

        watcher = PoolWatcher(store, ns, name, on_change).start()
        await asyncio.to_thread(watcher.wait_synced, 10.0)
    add_flow_gauges(metrics.registry, [pool])
    synced = watcher.wait_synced if watcher is not None else None
    await pool.start()
    http = None
    try:
        epp = await start_epp(pool, metrics=metrics, ready=(lambda: synced(0)) if synced else None,
                              host=cfg.host, port=cfg.grpc_port, health_port=cfg.health_port,
                              body_mode=cfg.body_mode)
    except BaseException:
        await _close_pool(pool, watcher, client)
        raise
    try:
        host = "" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        extra = ""
        if cfg.health_port is not None:
            extra += f", health {host}:{epp.health_port}"
        if cfg.metrics_port is not None:
            async def handle(req):
                if req.path == "/metrics":
                    return Response(200, metrics.render(), content_type=CONTENT_TYPE)
                return Response(404, b"not found\n", content_type="text/plain")

            http = await start_server(handle, cfg.host, cfg.metrics_port)
            extra += f", metrics {host}:{http.port}/metrics"
        await app.ready_until_stopped(f"endpoint picker (ext_proc) listening on {host}:{epp.port} "
                                      f"({app.pools_summary([pool], cfg)}{extra})", on_ready, stop)
    finally:
        if http is not None:
            await http.close()
        await epp.close()
        await _close_pool(pool, watcher, client)


async def _close_pool(pool: PoolRuntime, watcher, client) -> None:
    if watcher is not None:
        await asyncio.to_thread(watcher.stop)
    await pool.close()
    await client.aclose()


def run_epp(cfg: EppConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Validate, then serve until SIGTERM/SIGINT (uvloop)."""
    from mlplane.net.http import run

    validate(cfg)
    run(serve_epp(cfg, on_ready=on_ready))
