"""The HTTP API server: a store served over Kubernetes-style REST paths, with watch and pod logs.

Paths follow the Kubernetes API (https://kubernetes.io/docs/reference/using-api/api-concepts/):
``/api/v1/...`` for the core group and ``/apis/{group}/{version}/...`` for the others, then
``namespaces/{ns}/{plural}[/{name}[/{subresource}]]`` or ``{plural}[/{name}[/{subresource}]]``.
Kinds are looked up in ``REGISTRY``, so a kind registered by any plane is served without change
here. Subresources: ``status`` (GET/PUT/PATCH), ``pods/{name}/binding`` (POST) and
``pods/{name}/log`` (GET, optionally following the file as it grows). ``GET /metrics`` serves the
workload plane's Prometheus metrics (``mlplane.control.metrics``).

Errors are metav1.Status objects with the matching HTTP code. Watches are chunked streams of
newline-delimited ``{"type": ..., "object": ...}`` events, written from the store's JSON without
decoding it. The server binds to 127.0.0.1 unless told otherwise, and any other address requires a
bearer token, on every path but ``/healthz``, and ``/metrics`` when asked from a loopback address.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import platform
import re
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from mlplane import __version__
from mlplane.api.core import Pod
from mlplane.api.errors import (ApiError, BadRequest, Invalid, MethodNotAllowed, NotFound, RequestEntityTooLarge,
                                RequestHeaderFieldsTooLarge, Unauthorized, UnsupportedMediaType)
from mlplane.api.meta import Object
from mlplane.api.registry import REGISTRY, Kind
from mlplane.control import metrics
from mlplane.control.node.logs import find_log
from mlplane.control.store.embedded import EmbeddedStore

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # the Kubernetes API server's default request size limit (3 MiB)
_IDLE_POLL = 0.5  # seconds between client-disconnect checks on an idle stream
_LOG_POLL = 0.1  # seconds between checks for new log bytes while following
_WATCH_BATCH = 256  # events written in one chunk when a watcher has a backlog
_TRUE = ("true", "1")
_MAX_HEADERS = 100


@dataclass(frozen=True)
class _Route:
    """What a request path names: a kind, an optional namespace, object name and subresource."""

    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


def _not_found(path: str) -> NotFound:
    return NotFound(f"the server could not find the requested resource (path {path})")


def resolve(path: str) -> _Route:
    """Map a REST path to a route, or raise NotFound as the Kubernetes API server does."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        api_version, rest = parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        raise _not_found(path)
    namespace = None
    # "namespaces/{ns}/{plural}" scopes a namespaced kind; "namespaces/{name}/status" is the
    # namespace's own subresource, so only a registered plural after the name means scoping.
    if len(rest) >= 3 and rest[0] == "namespaces":
        scoped = _lookup(api_version, rest[2])
        if scoped is not None and scoped.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3:
        raise _not_found(path)
    kind = _lookup(api_version, rest[0])
    if kind is None:
        raise NotFound(f"the server could not find the requested resource ({api_version} {rest[0]})")
    name = rest[1] if len(rest) > 1 else None
    if kind.namespaced and name is not None and namespace is None:
        raise _not_found(path)  # namespaced objects are only addressed inside their namespace
    subresource = rest[2] if len(rest) > 2 else None
    allowed = {"status"} | ({"binding", "log"} if kind.plural == "pods" and not kind.group else set())
    if subresource is not None and subresource not in allowed:
        raise _not_found(path)
    if subresource == "status" and not kind.has_status:
        raise _not_found(path)
    return _Route(kind, namespace, name, subresource)


def _lookup(api_version: str, plural: str) -> Kind | None:
    try:
        return REGISTRY.by_path(api_version, plural)
    except NotFound:
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it counts as exposed


def _status_json(error: ApiError) -> bytes:
    return json.dumps(error.to_status()).encode()


def _tail_offset(f, lines: int) -> int:
    """The offset in ``f`` where its last ``lines`` lines start (a final newline ends a line)."""
    end = f.seek(0, 2)
    if lines <= 0:
        return end
    pos, count = end, 0
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        i = len(block)
        while (i := block.rfind(b"\n", 0, i)) >= 0:
            if pos + i == end - 1:
                continue  # the newline that ends the last line
            count += 1
            if count == lines:
                return pos + i + 1
    return 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, api: "ApiServer"):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        super().__init__(address, _Handler)


class _Headers(dict):
    """Request headers by lower-case name."""

    def get(self, name: str, default=None):
        return dict.get(self, name.lower(), default)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server
    headers: _Headers  # type: ignore[assignment]  (parse_request below fills a plain mapping)

    def parse_request(self) -> bool:
        """Parse the request line and headers (RFC 9112); False after answering a malformed request.

        The base class parses headers with the email package, which costs more CPU than the rest
        of a small request; this reads exactly what this server uses.
        """
        self.command, self.close_connection = None, True
        self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self._reject(BadRequest(f"bad request line {self.requestline[:80]!r}: expected METHOD PATH HTTP/1.1"))
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(65537)
            if len(line) > 65536:
                self._reject(RequestHeaderFieldsTooLarge("a request header line is longer than 64 KiB"))
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name.strip():
                self._reject(BadRequest(f"malformed request header {line[:80]!r}"))
                return False
            headers[name.strip().lower()] = value.strip()
        else:
            self._reject(RequestHeaderFieldsTooLarge(f"more than {_MAX_HEADERS} request headers"))
            return False
        self.headers = headers
        connection = headers.get("connection", "").lower()
        self.close_connection = "close" in connection or (
            self.request_version == "HTTP/1.0" and "keep-alive" not in connection)
        return True

    def _reject(self, error: ApiError) -> None:
        self.close_connection = True
        self._send_json(error.code, _status_json(error))

    # -- connection bookkeeping (so stop() can end keep-alive and streaming connections) --------
    def setup(self) -> None:
        super().setup()
        self.api = self.server.api
        self.api._track(self, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.api._track(self, add=False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- request handling ---------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        self._streaming = False
        try:
            length = self._content_length()
            url = urlsplit(self.path)
            try:
                self._authorize(url.path)
            except Unauthorized:
                self.close_connection = self.close_connection or length > 0  # its body stays unread
                raise
            body = self._read_body(length)
            if url.path in ("/healthz", "/version", "/metrics"):
                if method != "GET":
                    raise MethodNotAllowed(f"{method} is not supported on {url.path}")
                if url.path == "/healthz":
                    self._send(200, b"ok", "text/plain; charset=utf-8")
                elif url.path == "/metrics":
                    self._send(200, metrics.scrape(self.api.store).encode(), metrics.CONTENT_TYPE)
                else:
                    self._send_json(200, json.dumps(self.api.version_info()).encode())
                return
            route = resolve(url.path)
            query = dict(parse_qsl(url.query))
            getattr(self, f"_{method.lower()}")(route, query, body)
        except ApiError as e:
            if self._streaming:
                self.close_connection = True
            else:
                self._send_json(e.code, _status_json(e))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client went away; nothing to answer
        except Exception as e:
            log.exception("apiserver: %s %s failed", method, self.path)
            if self._streaming:
                self.close_connection = True
            else:
                error = ApiError(f"internal error: {type(e).__name__}: {e}")
                self._send_json(500, _status_json(error))

    def _content_length(self) -> int:
        """The declared body size, checked before any of the body is read (or asked for)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise BadRequest("chunked request bodies are not supported: send Content-Length")
        value = self.headers.get("Content-Length")
        if value is None:
            return 0
        if not (value.isascii() and value.isdigit()):  # RFC 9110: 1*DIGIT, so no sign, space or "_"
            self.close_connection = True  # where this body ends, and so the next request starts, is unknown
            raise BadRequest(f"invalid Content-Length {value!r}: expected a whole number of bytes")
        length = int(value)
        if length > MAX_BODY:
            self.close_connection = True  # the unread body would be taken for the next request
            raise RequestEntityTooLarge(f"the request body is {length} bytes; the limit is {MAX_BODY}")
        return length

    def _read_body(self, length: int) -> bytes:
        """Read the body, first telling a client that waits for it (Expect: 100-continue) to send it."""
        if length == 0:
            return b""
        if self.headers.get("Expect", "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise BadRequest(f"the request body ended after {len(body)} of its {length} bytes")
        return body

    def _authorize(self, path: str) -> None:
        token = self.api.token
        if token is None or path == "/healthz":
            return
        if path == "/metrics" and _is_loopback(self.client_address[0]):
            return  # a scraper on the same machine needs no token
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise Unauthorized("Unauthorized: a valid bearer token is required (Authorization: Bearer TOKEN)")

    # -- responses ----------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, content_type: str) -> None:
        reason = self.responses.get(code, ("",))[0]
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d", self.command, self.path, code)
        head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                + ("Connection: close\r\n" if self.close_connection else "") + "\r\n")
        # One write for head and body: two small writes would meet the peer's delayed ACK.
        self.wfile.write(head.encode() + body)

    def _send_json(self, code: int, body: bytes) -> None:
        self._send(code, body, "application/json")

    def _send_object(self, code: int, obj: Object) -> None:
        self._send_json(code, obj.to_json().encode())

    def _start_stream(self, content_type: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> 200 (stream)", self.command, self.path)
        self.close_connection = True
        self.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"
                         "Cache-Control: no-cache\r\n\r\n".encode())
        self._streaming = True

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client already left

    def _client_gone(self) -> bool:
        """True once the peer has closed its end (checked while a stream has nothing to send)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True

    # -- body decoding ------------------------------------------------------------------------
    @staticmethod
    def _json(body: bytes) -> object:
        if not body:
            raise BadRequest("the request body is empty: expected a JSON object")
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None

    def _decode(self, route: _Route, body: bytes) -> Object:
        """The request body as an object of the route's kind, in the route's namespace."""
        kind = route.kind
        data = self._json(body)
        if not isinstance(data, dict):
            raise BadRequest(f"the request body must be a JSON object (a {kind.kind}), got {type(data).__name__}")
        api_version, kind_name = data.get("apiVersion"), data.get("kind")
        if api_version and api_version != kind.api_version:
            raise BadRequest(f"the API version in the data ({api_version}) does not match the expected API "
                             f"version ({kind.api_version})")
        if kind_name and kind_name != kind.kind:
            raise BadRequest(f"the kind in the data ({kind_name}) does not match the expected kind ({kind.kind})")
        data["apiVersion"], data["kind"] = kind.api_version, kind.kind
        meta = data.get("metadata")
        if meta is None:
            meta = data["metadata"] = {}
        if isinstance(meta, dict) and kind.namespaced:
            if meta.get("namespace") and meta["namespace"] != route.namespace:
                raise BadRequest(f"the namespace of the provided object ({meta['namespace']}) does not match "
                                 f"the namespace sent on the request ({route.namespace})")
            meta["namespace"] = route.namespace
        if isinstance(meta, dict) and route.name is not None and meta.get("name") != route.name:
            raise BadRequest(f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                             f"({route.name})")
        return kind.decode(data)

    # -- verbs --------------------------------------------------------------------------------
    def _get(self, route: _Route, query: dict, body: bytes) -> None:
        store = self.api.store
        kind = route.kind
        if route.name is None:
            if query.get("watch", "").lower() in _TRUE:
                self._watch(route, query)
                return
            items, rv = store.list_raw(kind.model, route.namespace, query.get("labelSelector"),
                                       query.get("fieldSelector"))
            head = json.dumps({"apiVersion": kind.api_version, "kind": f"{kind.kind}List",
                               "metadata": {"resourceVersion": rv}})
            self._send_json(200, f'{head[:-1]},"items":[{",".join(items)}]}}'.encode())
            return
        if route.subresource == "log":
            self._log(route, query)
            return
        if route.subresource == "binding":
            raise MethodNotAllowed("GET is not supported on pods/binding: POST a Binding")
        self._send_object(200, store.get(kind.model, route.namespace, route.name))

    def _post(self, route: _Route, query: dict, body: bytes) -> None:
        store = self.api.store
        if route.subresource == "binding":
            self._bind(route, body)
            return
        if route.name is not None:
            raise MethodNotAllowed(f"POST is not supported on {route.kind.plural}/{route.name}"
                                   + (f"/{route.subresource}" if route.subresource else ""))
        if route.kind.namespaced and route.namespace is None:
            raise MethodNotAllowed(f"POST is not supported on {route.kind.plural} across namespaces: "
                                   f"create in /namespaces/NAMESPACE/{route.kind.plural}")
        self._send_object(201, store.create(self._decode(route, body)))

    def _put(self, route: _Route, query: dict, body: bytes) -> None:
        if route.name is None or route.subresource not in (None, "status"):
            raise MethodNotAllowed(f"PUT is not supported on {self._what(route)}")
        obj = self._decode(route, body)
        store = self.api.store
        self._send_object(200, store.update_status(obj) if route.subresource == "status" else store.update(obj))

    def _patch(self, route: _Route, query: dict, body: bytes) -> None:
        if route.name is None or route.subresource not in (None, "status"):
            raise MethodNotAllowed(f"PATCH is not supported on {self._what(route)}")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in ("application/merge-patch+json", "application/json"):
            raise UnsupportedMediaType(f"the patch type {content_type or '(none)'!r} is not supported: use "
                                       "application/merge-patch+json")
        patch = self._json(body)
        if not isinstance(patch, dict):
            raise BadRequest(f"a merge patch must be a JSON object, got {type(patch).__name__}")
        self._send_object(200, self.api.store.patch(route.kind.model, route.namespace, route.name, patch,
                                                    route.subresource))

    def _delete(self, route: _Route, query: dict, body: bytes) -> None:
        if route.name is None or route.subresource is not None:
            raise MethodNotAllowed(f"DELETE is not supported on {self._what(route)}")
        # DeleteOptions come from the body when there is one, else from the query parameters
        # (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/delete.go).
        if body:
            options = self._json(body)
            if not isinstance(options, dict):
                raise BadRequest("the request body must be a DeleteOptions object")
            propagation, grace = options.get("propagationPolicy"), options.get("gracePeriodSeconds")
            if propagation is not None and not isinstance(propagation, str):
                raise BadRequest(f"DeleteOptions.propagationPolicy: expected a string, got {propagation!r}")
            if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
                raise BadRequest(f"DeleteOptions.gracePeriodSeconds: expected a whole number of seconds, "
                                 f"got {grace!r}")
        else:
            propagation, text = query.get("propagationPolicy"), query.get("gracePeriodSeconds")
            if text is not None and not re.fullmatch(r"[+-]?[0-9]+", text):
                raise BadRequest(f"invalid gracePeriodSeconds {text!r}: expected a whole number of seconds")
            grace = None if text is None else int(text)
        self._send_object(200, self.api.store.delete(route.kind.model, route.namespace, route.name,
                                                     propagation or "Background", grace_period_seconds=grace))

    @staticmethod
    def _what(route: _Route) -> str:
        return "/".join(p for p in (route.kind.plural, route.name, route.subresource) if p)

    def _bind(self, route: _Route, body: bytes) -> None:
        data = self._json(body)
        target = data.get("target") if isinstance(data, dict) else None
        node = target.get("name") if isinstance(target, dict) else None
        if not isinstance(node, str) or not node:
            raise Invalid(f'Binding "{route.name}" is invalid: target.name: Required value',
                          kind="Binding", name=route.name or "", causes=[("target.name", "Required value")])
        # Kubernetes answers a binding with a Success Status; the Store interface returns the bound
        # pod, so this server answers with the pod.
        assert route.namespace is not None and route.name is not None
        self._send_object(201, self.api.store.bind(route.namespace, route.name, node))

    # -- watch --------------------------------------------------------------------------------
    def _watch(self, route: _Route, query: dict) -> None:
        timeout = query.get("timeoutSeconds")
        try:
            limit = float(timeout) if timeout else None
        except ValueError:
            raise BadRequest(f"invalid timeoutSeconds {timeout!r}: expected a number of seconds") from None
        watcher = self.api.store.watch(route.kind.model, route.namespace, query.get("resourceVersion"),
                                       query.get("labelSelector"), query.get("fieldSelector"))
        self.api._watching(watcher, add=True)
        try:
            self._start_stream("application/json")
            self._stream_events(watcher, limit)
            self._end_stream()
        finally:
            watcher.stop()
            self.api._watching(watcher, add=False)

    def _stream_events(self, watcher, limit: float | None) -> None:
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            wait = _IDLE_POLL if deadline is None else min(_IDLE_POLL, deadline - time.monotonic())
            if wait <= 0:
                return
            lines: list[str] = []
            try:
                item = watcher.next_raw(wait)
                while item is not None and item[0]:
                    lines.append(f'{{"type":"{item[0]}","object":{item[1]}}}\n')
                    if len(lines) == _WATCH_BATCH:
                        break
                    item = watcher.next_raw(0)
            except ApiError as e:
                # The watch cannot go on (Gone: this reader fell too far behind): send what came
                # before, then say why, as the Kubernetes API server does; the client lists again.
                lines.append(f'{{"type":"ERROR","object":{json.dumps(e.to_status())}}}\n')
                self._write_chunk("".join(lines).encode())
                return
            if lines:
                self._write_chunk("".join(lines).encode())
            if item is None:
                return  # the watcher ended (store closed or server stopping)
            if not lines and self._client_gone():
                return

    # -- logs ---------------------------------------------------------------------------------
    def _log(self, route: _Route, query: dict) -> None:
        api = self.api
        assert route.namespace is not None and route.name is not None
        pod = api.store.get(Pod, route.namespace, route.name)
        container = self._log_container(pod, query.get("container"))
        previous = query.get("previous", "").lower() in _TRUE
        follow = query.get("follow", "").lower() in _TRUE and not previous
        tail = query.get("tailLines")
        try:
            tail_lines = int(tail) if tail else None
        except ValueError:
            raise BadRequest(f"invalid tailLines {tail!r}: expected a whole number") from None
        if tail_lines is not None and tail_lines < 0:
            raise BadRequest(f"tailLines: Invalid value: {tail_lines}: must be greater than or equal to 0")
        if api.data_dir is None:
            raise NotFound("this API server was started without a data dir, so it has no container logs")
        path = find_log(api.data_dir, pod.namespace, pod.name, pod.uid, container, previous)
        # Messages as the kubelet gives them (pkg/kubelet/kubelet_pods.go, validateContainerLogStatus).
        if path is None and previous:
            raise BadRequest(f'previous terminated container "{container}" in pod "{pod.name}" not found')
        if path is None:
            raise BadRequest(f'container "{container}" in pod "{pod.name}" is waiting to start: no log yet')
        with open(path, "rb") as f:
            start = _tail_offset(f, tail_lines) if tail_lines is not None else 0
            f.seek(start)
            if not follow:
                self._send(200, f.read(), "text/plain; charset=utf-8")
                return
            self._start_stream("text/plain; charset=utf-8")
            self._follow(f, pod, container, path)
            self._end_stream()

    @staticmethod
    def _log_container(pod: Pod, container: str | None) -> str:
        names = [c.name for c in pod.spec.containers]
        # Messages as the API server gives them (pkg/registry/core/pod/strategy.go, LogLocation).
        if not container:
            if len(names) == 1:
                return names[0]
            raise BadRequest(f"a container name must be specified for pod {pod.name}, choose one of: "
                             f"[{' '.join(names)}]")
        if container not in names:
            raise BadRequest(f"container {container} is not valid for pod {pod.name}")
        return container

    def _follow(self, f, pod: Pod, container: str, path: Path) -> None:
        """Stream new bytes until the container's run is over (pod terminal, deleted or restarted)."""
        api = self.api
        idle = 0.0
        while True:
            data = f.read(65536)
            if data:
                self._write_chunk(data)
                idle = 0.0
                continue
            if api._stopping.is_set() or self._run_over(pod, container, path):
                self._write_chunk(f.read())  # what was written before the run ended
                return
            api._stopping.wait(_LOG_POLL)
            idle += _LOG_POLL
            if idle >= _IDLE_POLL:
                idle = 0.0
                if self._client_gone():
                    return

    def _run_over(self, pod: Pod, container: str, path: Path) -> bool:
        try:
            current = self.api.store.get(Pod, pod.namespace, pod.name)
        except NotFound:
            return True
        if current.uid != pod.uid or current.terminal:
            return True
        return find_log(self.api.data_dir, pod.namespace, pod.name, pod.uid, container) != path


class ApiServer:
    """Serves ``store`` over HTTP on a background thread. ``port=0`` picks a free port."""

    def __init__(self, store: EmbeddedStore, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 data_dir: str | Path | None = None):
        if token is not None and not token.strip():
            raise ValueError("the bearer token must not be empty")
        if not _is_loopback(host) and token is None:
            raise ValueError(f"listening on {host} requires a bearer token (pass a token): without one anybody "
                             "who can reach that address could change the cluster")
        self.store, self.host, self.port, self.token = store, host, port, token
        self.data_dir = Path(data_dir) if data_dir else None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._handlers: dict[_Handler, threading.Thread] = {}
        self._watchers: set = set()
        self._stopping = threading.Event()

    def start(self) -> "ApiServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="apiserver", daemon=True)
        self._thread.start()
        log.info("apiserver: serving on %s", self.url)
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def version_info(self) -> dict:
        """What GET /version answers: the fields of Kubernetes' version.Info that apply here."""
        major, minor, *_ = __version__.split(".")
        return {"major": major, "minor": minor, "gitVersion": f"mlplane {__version__}",
                "platform": f"{sys.platform}/{platform.machine()}",
                "pythonVersion": platform.python_version()}

    def stop(self) -> None:
        """Stop serving: end open streams and keep-alive connections, and wait for their threads."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            watchers = list(self._watchers)
            handlers = dict(self._handlers)
        for w in watchers:
            w.stop()
        # Closing the read side ends idle keep-alive connections, while streams still write their
        # final chunk; whatever is still stuck after that (a client that stopped reading) is cut.
        for how, wait in ((socket.SHUT_RD, 2.0), (socket.SHUT_RDWR, 2.0)):
            for handler in handlers:
                try:
                    handler.connection.shutdown(how)
                except OSError:
                    pass  # already closed
            deadline = time.monotonic() + wait
            for thread in handlers.values():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> "ApiServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- called by handler threads ------------------------------------------------------------
    def _track(self, handler: _Handler, add: bool) -> None:
        with self._lock:
            if add:
                self._handlers[handler] = threading.current_thread()
            else:
                self._handlers.pop(handler, None)

    def _watching(self, watcher, add: bool) -> None:
        with self._lock:
            if add:
                self._watchers.add(watcher)
            else:
                self._watchers.discard(watcher)
