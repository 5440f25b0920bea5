"""A small, fast HTTP/1.1 server and pooled keep-alive client on asyncio protocols and httptools.

Used by every traffic-plane process (gateway, model-server simulator, benchmark load generator).

Server: ``await start_server(handler, host, port)``; the handler is ``async (Request) -> Response |
StreamResponse``. Keep-alive, pipelined requests answered in order, Content-Length and chunked request
bodies (413 beyond ``max_body``), 400 on malformed requests, a handler exception becomes a 500 with a
JSON error body. A ``StreamResponse`` is sent chunked, each chunk written as the iterator yields it; when
the client goes away the iterator is closed and ``Request.disconnected`` is set.

Client: ``Client().request(method, "host:port", path, ...)`` returns a ``ClientResponse`` once the status
line and headers are in; the body comes from ``read()`` or ``iter_chunks()``. Idle connections are kept
per address and reused. ``ConnectError`` means nothing reached a server (safe to retry elsewhere);
``ResponseError`` means the connection broke after the response had started.

``run(coro)`` runs a coroutine on uvloop. Everything also works on the plain asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from http import HTTPStatus
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Union

import httptools
import orjson

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 1024 * 1024
MAX_HEAD = 64 * 1024  # request line + headers
KEEP_ALIVE_TIMEOUT = 60.0  # idle keep-alive connections are closed after this many seconds
MAX_PIPELINE = 32  # complete requests queued on one connection before reading pauses
LINGER = 2.0  # after an error response, how long input is drained before the connection closes

# statuses whose responses never carry a body (RFC 9110 6.4.1)
_NO_BODY = frozenset((100, 101, 102, 103, 204, 304))
# request headers a proxy should not pass on: hop-by-hop ones (RFC 9110 7.6.1) plus the framing and Host,
# which Client.request sets itself
NOT_FORWARDED = frozenset(("connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                           "upgrade", "proxy-authenticate", "proxy-authorization", "content-length", "host"))

HeadersArg = Union[Mapping[str, str], Iterable[tuple[str, str]], None]


def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


_STATUS_LINES: dict[int, bytes] = {s.value: _status_line(s.value) for s in HTTPStatus}
_CT_CACHE: dict[str, bytes] = {}


def _content_type(ct: str) -> bytes:
    line = _CT_CACHE.get(ct)
    if line is None:
        line = b"Content-Type: " + ct.encode("latin-1") + b"\r\n"
        if len(_CT_CACHE) < 64:
            _CT_CACHE[ct] = line
    return line


def _header_line(name: str, value: Any) -> bytes:
    """``name: value`` CRLF; latin-1 (so headers read by our parsers pass through unchanged), else UTF-8."""
    line = f"{name}: {value}\r\n"
    try:
        return line.encode("latin-1")
    except UnicodeEncodeError:
        return line.encode("utf-8", "surrogateescape")


def _header_lines(headers: HeadersArg) -> tuple[list[bytes], bool]:
    """Encoded ``name: value`` lines and whether a content-type was among them.

    Content-Length and Transfer-Encoding are dropped: the server frames the body itself.
    """
    if not headers:
        return [], False
    items = headers.items() if isinstance(headers, Mapping) else headers
    lines = []
    has_ct = False
    for name, value in items:
        n = len(name)
        if n == 12 and not has_ct and name.lower() == "content-type":
            has_ct = True
        elif (n == 14 or n == 17) and name.lower() in ("content-length", "transfer-encoding"):
            continue
        lines.append(_header_line(name, value))
    return lines, has_ct


# ---------------------------------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------------------------------


_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}
_HEADER_NAMES: dict[bytes, str] = {}


def _header_name(raw: bytes) -> str:
    """The lower-case str of a raw header name, remembered for the next time (up to 512 names)."""
    name = raw.decode("latin-1").lower()
    if len(_HEADER_NAMES) < 512:
        _HEADER_NAMES[raw] = name
    return name


def _add_header(headers: dict[str, str], name: bytes, value: bytes) -> None:
    """One header line into ``headers``: lower-case name; a repeated name joins its values with ", "."""
    key = _HEADER_NAMES.get(name)
    if key is None:
        key = _header_name(name)
    val = value.decode("latin-1")
    if key in headers:
        headers[key] = headers[key] + ", " + val
    else:
        headers[key] = val


class Request:
    """One HTTP request as the handler sees it. ``headers`` has lower-case names; ``body`` is the whole body."""

    __slots__ = ("method", "path", "query", "headers", "body", "client", "version", "keep_alive", "_disconnected",
                 "_gone")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, client: str,
                 version: str, keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.client = client  # "host:port" of the peer
        self.version = version
        self.keep_alive = keep_alive
        self._disconnected: asyncio.Event | None = None
        self._gone = False

    @property
    def disconnected(self) -> asyncio.Event:
        """Set when the client's connection is gone."""
        if self._disconnected is None:
            self._disconnected = asyncio.Event()
            if self._gone:
                self._disconnected.set()
        return self._disconnected

    def _set_gone(self) -> None:
        self._gone = True
        if self._disconnected is not None:
            self._disconnected.set()

    def json(self) -> Any:
        """The body parsed as JSON (orjson); raises ``orjson.JSONDecodeError`` (a ValueError)."""
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path} from {self.client}>"


class Response:
    """A complete response: sent with Content-Length in one write."""

    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(self, status: int = 200, body: bytes | str = b"", headers: HeadersArg = None,
                 content_type: str | None = "application/json") -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = headers
        self.content_type = content_type


class StreamResponse:
    """A response whose body is an async iterator of byte chunks, sent with chunked transfer encoding."""

    __slots__ = ("status", "chunks", "headers", "content_type")

    def __init__(self, status: int, chunks: AsyncIterator[bytes], headers: HeadersArg = None,
                 content_type: str | None = "text/event-stream") -> None:
        self.status = status
        self.chunks = chunks
        self.headers = headers
        self.content_type = content_type


def json_response(status: int, obj: Any, headers: HeadersArg = None) -> Response:
    """A Response whose body is ``obj`` serialised by orjson."""
    return Response(status, orjson.dumps(obj), headers)


def error_response(status: int, message: str, type_: str | None = None) -> Response:
    """A JSON error in the OpenAI shape: ``{"error": {"message", "type", "code"}}``."""
    if type_ is None:
        type_ = HTTPStatus(status).phrase.lower().replace(" ", "_") if status in _STATUS_LINES else "error"
    return json_response(status, {"error": {"message": message, "type": type_, "code": status}})


Handler = Callable[[Request], Awaitable[Union[Response, StreamResponse]]]


class _Reject:
    """A queued error answer for a request that could not be read; the connection closes after it."""

    __slots__ = ("response",)

    def __init__(self, response: Response) -> None:
        self.response = response


class _BodyTooLarge(Exception):
    pass


class _HeadTooLarge(Exception):
    pass


class _ServerProtocol(asyncio.Protocol):
    """One server-side connection: parses requests, runs the handler per request in order, writes answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.handler = server.handler
        self.max_body = server.max_body
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        # the request being parsed
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._in_message = False
        # requests parsed and not yet answered, in arrival order
        self.pending: deque[Request | _Reject] = deque()
        self.task: asyncio.Task | None = None  # answers this connection's requests, one at a time
        self.busy = False  # a request is being answered
        self._wakeup: asyncio.Future | None = None  # the task waits on it for the next request
        self.current: Request | None = None
        self.streaming = False  # the task is writing a StreamResponse (cancelled on disconnect)
        self.reading_paused = False
        self.stop_parsing = False  # after Connection: close, an error, or an upgrade request
        self.closed = False
        self.write_paused = False
        self._drain: asyncio.Future | None = None
        self.idle_since = self.loop.time()

    # -- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = f"{peer[0]}:{peer[1]}"
        elif peer:
            self.client = str(peer)
        self.server._connections.add(self)
        self.server.accepted += 1
        self.task = self.loop.create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._connections.discard(self)
        if self.current is not None:
            self.current._set_gone()
        for item in self.pending:
            if isinstance(item, Request):
                item._set_gone()
        self.pending.clear()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("client disconnected"))
            self._drain.exception()  # mark retrieved
        if self.streaming and self.task is not None:
            self.task.cancel()
        else:
            self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def data_received(self, data: bytes) -> None:
        if self.stop_parsing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request itself was complete; we speak no other protocol, so answer it and close.
            self.stop_parsing = True
            self._wake()
        except httptools.HttpParserError as e:
            if self.stop_parsing:
                return  # bytes after a `Connection: close` request are ignored
            # httptools wraps what a callback raised; the original is the context
            cause = e.__context__ if isinstance(e, httptools.HttpParserCallbackError) else None
            if isinstance(cause, _BodyTooLarge):
                self._reject(error_response(413, f"request body exceeds the limit of {self.max_body} bytes",
                                            "payload_too_large"))
            elif isinstance(cause, _HeadTooLarge):
                self._reject(error_response(431, f"request line and headers exceed {MAX_HEAD} bytes",
                                            "request_header_fields_too_large"))
            else:
                self._reject(error_response(400, f"malformed HTTP request: {e or type(e).__name__}", "bad_request"))

    # -- httptools callbacks ---------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = {}
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url = self._url + url if self._url else url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise _HeadTooLarge
        _add_header(self._headers, name, value)

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _BodyTooLarge
        if self._headers.get("expect", "").lower() == "100-continue" and not self.pending and not self.busy:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.max_body:
            raise _BodyTooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        parser = self.parser
        url = self._url
        if url[:1] == b"/" and b"?" not in url and b"#" not in url:
            path, query = url, b""
        elif url[:1] == b"/":
            path, sep, query = url.partition(b"?")
            if b"#" in query:
                query = query.partition(b"#")[0]
            elif not sep and b"#" in path:
                path = path.partition(b"#")[0]
        else:  # absolute-form or "*"
            try:
                parsed = httptools.parse_url(url)
                path, query = parsed.path or b"/", parsed.query or b""
            except httptools.HttpParserInvalidURLError:
                path, query = url, b""
        body = self._body
        if body:
            body = body[0] if len(body) == 1 else b"".join(body)
            self._body = []
            self._body_size = 0
        else:
            body = b""
        method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        req = Request(_METHODS.get(method) or method.decode("latin-1"), path.decode("latin-1"),
                      query.decode("latin-1") if query else "", self._headers, body, self.client,
                      parser.get_http_version(), keep_alive)
        if not keep_alive:
            self.stop_parsing = True
        self.pending.append(req)
        if self._wakeup is not None:
            self._wake()
        elif len(self.pending) >= MAX_PIPELINE and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    # -- answering -------------------------------------------------------------------------------------------
    def _reject(self, response: Response) -> None:
        self.stop_parsing = True
        self._in_message = False
        self.pending.append(_Reject(response))
        self._wake()

    def _wake(self) -> None:
        w = self._wakeup
        if w is not None:
            self._wakeup = None
            if not w.done():
                w.set_result(None)

    async def _serve(self) -> None:
        """For the life of the connection: answer queued requests one at a time, in arrival order."""
        pending = self.pending
        loop = self.loop
        try:
            while not self.closed:
                if not pending:
                    if self.stop_parsing:  # an upgrade request was answered: nothing more will be read
                        self.transport.close()
                        return
                    self.idle_since = loop.time()
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    continue
                item = pending.popleft()
                if self.reading_paused and len(pending) < MAX_PIPELINE // 2:
                    self.reading_paused = False
                    self.transport.resume_reading()
                if isinstance(item, _Reject):
                    self._write_response(item.response, keep_alive=False, head_only=False, version="1.1")
                    self._linger()
                    pending.clear()
                    return
                self.busy = True
                self.current = item
                try:
                    response = await self.handler(item)
                except Exception as e:  # noqa: BLE001 - a handler bug answers 500 and the server goes on
                    log.exception("handler failed for %s %s", item.method, item.path)
                    response = error_response(500, f"internal server error: {type(e).__name__}: {e}",
                                              "internal_server_error")
                if self.closed:
                    if isinstance(response, StreamResponse):
                        await _aclose(response.chunks)
                    return
                try:
                    if isinstance(response, Response):
                        self._write_response(response, item.keep_alive, item.method == "HEAD", item.version)
                    elif isinstance(response, StreamResponse):
                        if not await self._write_stream(item, response):
                            return
                    else:
                        raise TypeError(f"handler returned {type(response).__name__}, not a Response")
                except Exception as e:  # noqa: BLE001 - an unsendable response answers 500, nothing was sent
                    log.exception("cannot send the response to %s %s", item.method, item.path)
                    self._write_response(error_response(500, f"internal server error: {type(e).__name__}: {e}",
                                                        "internal_server_error"),
                                         item.keep_alive, False, item.version)
                self.current = None
                self.busy = False
                if not item.keep_alive:
                    self.transport.close()
                    return
                if self.write_paused:
                    await self._wait_drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # a bug here must not leave the client waiting forever
            log.exception("HTTP connection from %s failed", self.client)
            self.transport.abort()
        finally:
            self.current = None
            self.busy = False
            self._wakeup = None

    def _write_response(self, response: Response, keep_alive: bool, head_only: bool, version: str) -> None:
        body = response.body
        status_line = _STATUS_LINES.get(response.status) or _status_line(response.status)
        lines, has_ct = _header_lines(response.headers)
        parts = [status_line]
        if response.content_type and not has_ct:
            parts.append(_content_type(response.content_type))
        if response.status in _NO_BODY:
            body = b""
        else:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        parts.extend(lines)
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
        elif version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if head_only:
            self.transport.write(b"".join(parts))
        elif len(body) <= 65536:
            parts.append(body)
            self.transport.write(b"".join(parts))
        else:
            self.transport.write(b"".join(parts))
            self.transport.write(body)

    async def _write_stream(self, req: Request, response: StreamResponse) -> bool:
        """Send a StreamResponse; False when the connection is unusable afterwards.

        Raises only if the head could not be built (nothing was sent); the iterator is closed in every case.
        """
        chunks = response.chunks
        transport = self.transport
        head_sent = False
        self.streaming = True
        try:
            chunked = req.version != "1.0"
            status_line = _STATUS_LINES.get(response.status) or _status_line(response.status)
            lines, has_ct = _header_lines(response.headers)
            parts = [status_line]
            if response.content_type and not has_ct:
                parts.append(_content_type(response.content_type))
            if chunked:
                parts.append(b"Transfer-Encoding: chunked\r\n")
            parts.extend(lines)
            if not req.keep_alive or not chunked:
                parts.append(b"Connection: close\r\n")
            parts.append(b"\r\n")
            transport.write(b"".join(parts))
            head_sent = True
            if req.method == "HEAD":
                return req.keep_alive
            async for chunk in chunks:
                if not chunk:
                    continue
                if self.closed:
                    return False
                if chunked:
                    if len(chunk) <= 16384:
                        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    else:
                        transport.write(b"%x\r\n" % len(chunk))
                        transport.write(chunk)
                        transport.write(b"\r\n")
                else:
                    transport.write(chunk)
                if self.write_paused:
                    await self._wait_drain()
            if self.closed:
                return False
            if chunked:
                transport.write(b"0\r\n\r\n")
                return True
            transport.close()
            return False
        except (asyncio.CancelledError, ConnectionError):
            if not self.closed:  # the body iterator failed, not our client: don't leave it half-sent
                transport.abort()
            return False
        except Exception:
            if not head_sent:
                raise
            # the body is half sent: break the connection so the client sees a broken, not a short, body
            log.exception("stream body failed for %s %s", req.method, req.path)
            transport.abort()
            return False
        finally:
            self.streaming = False
            await _aclose(chunks)

    async def _wait_drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("client disconnected")
        if self._drain is None:
            self._drain = self.loop.create_future()
        await self._drain

    def _linger(self) -> None:
        """After an error answer: stop sending, drop further input, and close once the peer does (or soon)."""
        transport = self.transport
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except (OSError, RuntimeError):
                transport.close()
                return
        self.loop.call_later(LINGER, transport.close)


async def _aclose(it: Any) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001
            log.exception("closing a response body iterator failed")


class Server:
    """A listening HTTP server: ``port`` is the bound port; ``await close()`` stops it."""

    def __init__(self, handler: Handler, loop: asyncio.AbstractEventLoop, max_body: int,
                 keep_alive_timeout: float) -> None:
        self.handler = handler
        self.loop = loop
        self.max_body = max_body
        self.keep_alive_timeout = keep_alive_timeout
        self.host = ""
        self.port = 0
        self.accepted = 0  # connections accepted so far
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_ServerProtocol] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._connections)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self._connections):
            if (not conn.busy and not conn._in_message and not conn.pending
                    and now - conn.idle_since > self.keep_alive_timeout and conn.transport is not None):
                conn.transport.close()
        self._sweeper = self.loop.call_later(max(self.keep_alive_timeout / 2, 0.01), self._sweep)

    async def close(self) -> None:
        """Stop listening, close every connection and wait for the handlers to finish."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        tasks = []
        for conn in list(self._connections):
            if conn.task is not None:
                tasks.append(conn.task)
                conn.task.cancel()
            if conn.transport is not None:
                conn.transport.close()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
            self._server = None

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_server(handler: Handler, host: str = "127.0.0.1", port: int = 0, *,
                       max_body: int = DEFAULT_MAX_BODY, keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT,
                       backlog: int = 1024, reuse_port: bool = False) -> Server:
    """Listen on host:port (0 = a free port from the OS) and answer each request with ``handler``."""
    loop = asyncio.get_running_loop()
    server = Server(handler, loop, max_body, keep_alive_timeout)
    server._server = await loop.create_server(lambda: _ServerProtocol(server), host, port, backlog=backlog,
                                              reuse_port=reuse_port or None)
    sockname = server._server.sockets[0].getsockname()
    server.host, server.port = sockname[0], sockname[1]
    server._sweeper = loop.call_later(max(keep_alive_timeout / 2, 0.01), server._sweep)
    return server


# ---------------------------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------------------------


class ClientError(Exception):
    """Base of the client's errors."""


class ConnectError(ClientError):
    """Nothing reached a server: connecting failed, or the connection closed before any response byte."""


class ConnectTimeout(ConnectError, TimeoutError):
    """Connecting took longer than the request's timeout."""


class ResponseError(ClientError):
    """The connection broke or the server sent garbage after the response had started."""


HIGH_WATER = 256 * 1024  # buffered, unread response bytes above which the socket stops being read
LOW_WATER = 64 * 1024


class ClientResponse:
    """Status and headers of a response; the body is read with ``read()`` or ``iter_chunks()``."""

    __slots__ = ("status", "headers", "version", "_conn", "_chunks", "_buffered", "_done", "_error", "_waiter",
                 "_read_timeout", "_loop", "_paused", "_high_water")

    def __init__(self, status: int, headers: dict[str, str], version: str, conn: _ClientConnection,
                 read_timeout: float | None) -> None:
        self.status = status
        self.headers = headers
        self.version = version
        self._conn: _ClientConnection | None = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._read_timeout = read_timeout
        self._loop = conn.loop
        self._paused = False
        self._high_water = HIGH_WATER

    # called by the connection
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self._high_water and not self._paused and self._conn is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self._done:
            self._error = exc
            self._done = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _detach(self) -> None:
        """The message is complete: forget the connection (it may serve another request now)."""
        if self._paused and self._conn is not None:
            self._paused = False
            self._conn.transport.resume_reading()
        self._conn = None

    async def _wait(self) -> None:
        w = self._waiter = self._loop.create_future()
        if self._read_timeout is None:
            await w
            return
        timer = self._loop.call_at(self._loop.time() + self._read_timeout, _expire, w,
                                   f"no response data for {self._read_timeout:g}s")
        try:
            await w
        except TimeoutError:
            self.close()
            raise
        finally:
            timer.cancel()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (chunked encoding removed); raises ResponseError if the body breaks off.

        Leaving the iteration early (break, cancellation) closes the response and its connection.
        """
        chunks = self._chunks
        try:
            while True:
                if chunks:
                    chunk = chunks.popleft()
                    self._buffered -= len(chunk)
                    if self._paused and self._buffered < LOW_WATER and self._conn is not None:
                        self._paused = False
                        self._conn.transport.resume_reading()
                    yield chunk
                    continue
                if self._done:
                    if self._error is not None:
                        raise self._error
                    return
                await self._wait()
        finally:
            if not self._done:
                self.close()

    async def read(self) -> bytes:
        """The whole body."""
        self._high_water = 1 << 62  # everything is wanted: no backpressure
        if self._paused and self._conn is not None:
            self._paused = False
            self._conn.transport.resume_reading()
        try:
            while not self._done:
                await self._wait()
        except BaseException:  # cancelled or timed out: the rest of the body is not wanted
            self.close()
            raise
        if self._error is not None:
            raise self._error
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return data

    async def json(self) -> Any:
        """The whole body parsed as JSON."""
        return orjson.loads(await self.read())

    def close(self) -> None:
        """Drop the rest of the body; the connection is closed unless the body was already complete."""
        if not self._done:
            self._fail(ResponseError("response closed before its body was read"))
            conn = self._conn
            self._conn = None
            if conn is not None:
                conn.abandon()

    async def __aenter__(self) -> ClientResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ClientResponse {self.status}>"


def _expire(fut: asyncio.Future, message: str) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(message))


def _expire_head(fut: asyncio.Future, address: str, timeout: float | None) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(f"{address} sent no response head within {timeout:g}s"))


class _ClientConnection(asyncio.Protocol):
    """One client connection to one address; serves one request at a time."""

    def __init__(self, client: Client, key: str, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle = False
        self._got_bytes = False
        self._headers: dict[str, str] = {}
        self._head_future: asyncio.Future | None = None
        self._response: ClientResponse | None = None
        self._head_only = False
        self._skip_interim = False
        self._keep_alive = True
        self._read_timeout: float | None = None
        self._until_eof = False

    # -- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle:
            self.client._forget(self)
        fut = self._head_future
        if fut is not None and not fut.done():
            if self._got_bytes:
                fut.set_exception(ResponseError(f"connection to {self.key} closed in the middle of the response "
                                                "head"))
            else:
                fut.set_exception(_Stale(f"connection to {self.key} closed before any response byte"))
        resp = self._response
        if resp is not None:
            self._response = None
            if self._until_eof:
                resp._finish()
            else:
                resp._fail(ResponseError(f"connection to {self.key} closed in the middle of the response body"))
            resp._conn = None

    def data_received(self, data: bytes) -> None:
        if self._head_future is None and self._response is None:
            self.abandon()  # bytes nobody asked for: the connection cannot be trusted with a request
            return
        self._got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as e:
            err = ResponseError(f"malformed response from {self.key}: {e}")
            fut = self._head_future
            if fut is not None and not fut.done():
                fut.set_exception(err)
            if self._response is not None:
                self._response._fail(err)
                self._response = None
            self.abandon()

    # -- httptools callbacks ---------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        _add_header(self._headers, name, value)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._skip_interim = True
            return
        self._keep_alive = self.parser.should_keep_alive()
        headers = self._headers
        resp = ClientResponse(status, headers, self.parser.get_http_version(), self, self._read_timeout)
        self._until_eof = ("content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")
                           and status not in (204, 304) and not self._head_only)
        self._response = resp
        fut = self._head_future
        self._head_future = None
        if fut is not None and not fut.done():
            fut.set_result(resp)
        if self._head_only:
            self._complete(reusable=False)

    def on_body(self, body: bytes) -> None:
        resp = self._response
        if resp is not None:
            resp._feed(body)

    def on_message_complete(self) -> None:
        if self._skip_interim:
            self._skip_interim = False
            return
        self._complete(reusable=self._keep_alive)

    def _complete(self, reusable: bool) -> None:
        resp = self._response
        self._response = None
        if resp is not None:
            resp._detach()
            resp._finish()
        if reusable and not self.closed:
            self.client._release(self)
        else:
            self.abandon()

    # -- request ---------------------------------------------------------------------------------------------
    async def send(self, head: bytes, body: bytes, head_only: bool, deadline: float | None,
                   timeout: float | None, read_timeout: float | None) -> ClientResponse:
        self._got_bytes = False
        self._head_only = head_only
        self._read_timeout = read_timeout
        self._until_eof = False
        fut = self._head_future = self.loop.create_future()
        transport = self.transport
        if body and len(body) <= 65536:
            transport.write(head + body)
        else:
            transport.write(head)
            if body:
                transport.write(body)
        timer = None if deadline is None else self.loop.call_at(deadline, _expire_head, fut, self.key, timeout)
        try:
            return await fut
        except BaseException:  # timeout, cancellation, broken connection: this connection is done
            self._head_future = None
            self.abandon()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def abandon(self) -> None:
        """Close the connection; it will not be reused."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Stale(Exception):
    """Internal: a connection closed before any byte of the response came back."""


def _split_address(address: str) -> tuple[str, int]:
    addr = address
    if "://" in addr:
        addr = addr.split("://", 1)[1]
    addr = addr.rstrip("/")
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    return host, int(port)


_BODYLESS = frozenset(("GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"))


class Client:
    """HTTP/1.1 client with a pool of idle keep-alive connections per address ("host:port")."""

    def __init__(self, max_idle_per_host: int = 64) -> None:
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[str, deque[_ClientConnection]] = {}
        self._addresses: dict[str, tuple[str, int]] = {}
        self._host_lines: dict[str, bytes] = {}
        self._closed = False
        self.connects = 0  # TCP connections opened so far

    async def request(self, method: str, address: str, path: str, headers: HeadersArg = None, body: bytes = b"",
                      timeout: float | None = 30.0, read_timeout: float | None = None) -> ClientResponse:
        """Send a request and return once the status line and headers are in.

        ``timeout`` bounds connecting plus waiting for the response head (``asyncio.TimeoutError``;
        ``ConnectTimeout`` when it ran out while connecting); ``read_timeout`` bounds each wait for body data.
        """
        if self._closed:
            raise RuntimeError("client is closed")
        if isinstance(body, str):
            body = body.encode()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        head = self._head(method, address, path, headers, body)
        head_only = method == "HEAD"
        conn = self._pop_idle(address)
        if conn is not None:
            try:
                return await conn.send(head, body, head_only, deadline, timeout, read_timeout)
            except _Stale:
                pass  # the server closed this idle connection as we used it: try once on a fresh one
        conn = await self._connect(address, loop, deadline)
        try:
            return await conn.send(head, body, head_only, deadline, timeout, read_timeout)
        except _Stale as e:
            raise ConnectError(str(e)) from None

    def _head(self, method: str, address: str, path: str, headers: HeadersArg, body: bytes) -> bytes:
        host_line = self._host_lines.get(address)
        if host_line is None:
            host, port = self._parse(address)
            host_line = self._host_lines[address] = f"Host: {host}:{port}\r\n".encode("latin-1")
        parts = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1")]
        custom_host = False
        if headers:
            items = headers.items() if isinstance(headers, Mapping) else headers
            for name, value in items:
                n = len(name)
                if n == 4 and name.lower() == "host":
                    custom_host = True
                elif (n == 14 and name.lower() == "content-length") or (
                        n == 17 and name.lower() == "transfer-encoding"):
                    continue
                parts.append(_header_line(name, value))
        if not custom_host:
            parts.append(host_line)
        if body or method not in _BODYLESS:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        parts.append(b"\r\n")
        return b"".join(parts)

    def _parse(self, address: str) -> tuple[str, int]:
        hp = self._addresses.get(address)
        if hp is None:
            hp = self._addresses[address] = _split_address(address)
        return hp

    def _pop_idle(self, address: str) -> _ClientConnection | None:
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            conn.idle = False
            if not conn.closed and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, address: str, loop: asyncio.AbstractEventLoop,
                       deadline: float | None) -> _ClientConnection:
        host, port = self._parse(address)
        try:
            coro = loop.create_connection(lambda: _ClientConnection(self, address, loop), host, port)
            if deadline is None:
                _, conn = await coro
            else:
                _, conn = await asyncio.wait_for(coro, max(deadline - loop.time(), 0))
        except asyncio.TimeoutError:
            raise ConnectTimeout(f"connecting to {address} timed out") from None
        except OSError as e:
            raise ConnectError(f"cannot connect to {address}: {e.strerror or e}") from None
        self.connects += 1
        return conn

    def _release(self, conn: _ClientConnection) -> None:
        if self._closed:
            conn.abandon()
            return
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = deque()
        if len(idle) >= self.max_idle_per_host:
            conn.abandon()
            return
        conn.idle = True
        idle.append(conn)

    def _forget(self, conn: _ClientConnection) -> None:
        conn.idle = False
        idle = self._idle.get(conn.key)
        if idle:
            try:
                idle.remove(conn)
            except ValueError:
                pass

    def idle_connections(self, address: str | None = None) -> int:
        """Idle pooled connections (to ``address``, or in total)."""
        if address is not None:
            return len(self._idle.get(address, ()))
        return sum(len(d) for d in self._idle.values())

    async def aclose(self) -> None:
        """Close every pooled connection; requests made afterwards raise RuntimeError."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                conn = idle.pop()
                conn.idle = False
                conn.abandon()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def run(coro: Awaitable[Any]) -> Any:
    """Run a coroutine to completion on a fresh uvloop event loop (plain asyncio if uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]
