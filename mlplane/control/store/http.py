"""The HTTP store: the Store interface as a client of mlplane's Kubernetes-style API server.

Each calling thread keeps one keep-alive connection; every watch and every log stream gets a
connection of its own. Results are decoded into the registry's typed objects, and error Status
bodies become the matching ``ApiError`` (NotFound, Conflict, Gone, ...), so code written against
the embedded store behaves the same against a server.
"""

from __future__ import annotations

import collections
import http.client
import json
import re
import socket
import threading
import time
import weakref
from typing import Iterator
from urllib.parse import urlencode, urlsplit

from mlplane.api.core import Pod
from mlplane.api.errors import ApiError, BadRequest, NotFound
from mlplane.api.meta import Object
from mlplane.api.registry import REGISTRY, Kind
from mlplane.control.store.base import ListResult, WatchEvent, WatchIterMixin

_MAX_CHUNK_LINE = 4096  # a chunk size line (with extensions) longer than this is not a watch stream
_STALE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, http.client.RemoteDisconnected)


class _Connection(http.client.HTTPConnection):
    """An HTTP connection with Nagle's algorithm off: requests are small and latency matters."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Slot:
    """One thread's connection; closed when the thread ends and its thread-local state goes away."""

    __slots__ = ("conn",)

    def __init__(self) -> None:
        self.conn: _Connection | None = None

    def __del__(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _error(status: int, reason: str, body: bytes) -> ApiError:
    """The ApiError a response carries: its Status body, or a generic error naming the code."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("kind") == "Status":
        return ApiError.from_status(data)
    err = ApiError(f"the server answered {status} {reason}: {body[:200].decode(errors='replace')}")
    err.code = status
    return err


class HTTPStore:
    """The Store interface over HTTP. ``server`` is the API server's URL, e.g. "http://127.0.0.1:8080"."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 30):
        parts = urlsplit(server)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"invalid API server URL {server!r}: expected http://HOST:PORT")
        self.url = server.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()  # to close them all on close()
        self._watches: set[HTTPWatch] = set()

    # -- transport ----------------------------------------------------------------------------
    def _new_connection(self, timeout: float | None) -> _Connection:
        return _Connection(self.host, self.port, timeout=timeout)

    def _unreachable(self, error: OSError) -> ConnectionError:
        return ConnectionError(f"cannot reach the mlplane API server at {self.url}: {error}; "
                               "is `mlplane up` running?")

    def _lost(self, error: Exception) -> ConnectionError:
        return ConnectionError(f"lost the connection to the mlplane API server at {self.url}: "
                               f"{type(error).__name__}: {error}")

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json") -> bytes:
        """Send a request on this thread's connection; the response body, or raise its ApiError."""
        headers = self._headers if body is None else {**self._headers, "Content-Type": content_type}
        slot = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = _Slot()
        may_retry = True
        while True:
            conn = slot.conn
            reused = conn is not None
            if conn is None:
                conn = slot.conn = self._new_connection(self.timeout)
                with self._lock:
                    self._connections.add(conn)
            sent = False
            try:
                conn.request(method, path, body, headers)
                sent = True
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self._drop(slot)
                # A kept-alive connection the server has since closed fails on first use; a request
                # that never reached the server (or one that is idempotent) is safe to send again.
                if may_retry and reused and isinstance(e, _STALE) and (not sent or method != "POST"):
                    may_retry = False
                    continue
                if isinstance(e, ConnectionRefusedError):
                    raise self._unreachable(e) from None
                if isinstance(e, TimeoutError):
                    raise TimeoutError(f"the mlplane API server at {self.url} did not answer {method} {path} "
                                       f"within {self.timeout}s") from None
                raise self._lost(e) from None
            if resp.will_close:
                self._drop(slot)
            if resp.status >= 400:
                raise _error(resp.status, resp.reason, data)
            return data

    def _drop(self, slot: _Slot) -> None:
        conn, slot.conn = slot.conn, None
        if conn is not None:
            conn.close()
            with self._lock:
                self._connections.discard(conn)

    @staticmethod
    def _path(kind: Kind, namespace: str | None, name: str | None = None, subresource: str | None = None,
              **query: str | None) -> str:
        path = kind.path(namespace if kind.namespaced else None, name)
        if subresource:
            path += f"/{subresource}"
        params = {k: v for k, v in query.items() if v is not None}
        return f"{path}?{urlencode(params)}" if params else path

    @staticmethod
    def _named(kind: Kind, namespace: str | None, name: str, subresource: str | None = None,
               **query: str | None) -> str:
        """The path of one object. Without a name (or a namespace for a namespaced kind) there is no
        such object, as the embedded store answers, rather than a request for a list."""
        if not name or (kind.namespaced and not namespace):
            raise NotFound(f'{kind.resource} "{name}" not found', kind=kind.plural, name=name)
        return HTTPStore._path(kind, namespace, name, subresource, **query)

    @staticmethod
    def _object_path(kind: Kind, obj: Object, subresource: str | None = None) -> str:
        return HTTPStore._named(kind, obj.metadata.namespace, obj.metadata.name or "", subresource)

    # -- the Store interface ------------------------------------------------------------------
    def create(self, obj):
        kind = REGISTRY.of(obj)
        if kind.namespaced and not obj.metadata.namespace:
            raise BadRequest(f"{kind.kind} {obj.metadata.name!r}: metadata.namespace is required", kind=kind.plural)
        data = self._request("POST", self._path(kind, obj.metadata.namespace), obj.to_json().encode())
        return kind.decode_json(data)

    def create_many(self, objs):
        """One POST per object, as the Kubernetes API has no batch create (not atomic over HTTP)."""
        return [self.create(obj) for obj in objs]

    def get(self, model, namespace, name):
        kind = REGISTRY.of(model)
        return kind.decode_json(self._request("GET", self._named(kind, namespace, name)))

    def list(self, model, namespace=None, label_selector=None, field_selector=None):
        kind = REGISTRY.of(model)
        data = json.loads(self._request("GET", self._path(kind, namespace, labelSelector=label_selector or None,
                                                          fieldSelector=field_selector or None)))
        items = [kind.model.model_validate(item) for item in data.get("items") or []]
        return ListResult(items, str((data.get("metadata") or {}).get("resourceVersion", "0")))

    def update(self, obj):
        kind = REGISTRY.of(obj)
        return kind.decode_json(self._request("PUT", self._object_path(kind, obj), obj.to_json().encode()))

    def update_status(self, obj):
        kind = REGISTRY.of(obj)
        return kind.decode_json(self._request("PUT", self._object_path(kind, obj, "status"),
                                              obj.to_json().encode()))

    def patch(self, model, namespace, name, patch, subresource=None):
        kind = REGISTRY.of(model)
        if not isinstance(patch, dict):
            raise BadRequest("a merge patch must be a JSON object")
        data = self._request("PATCH", self._named(kind, namespace, name, subresource),
                             json.dumps(patch).encode(), "application/merge-patch+json")
        return kind.decode_json(data)

    def delete(self, model, namespace, name, propagation="Background", grace_period_seconds=None):
        kind = REGISTRY.of(model)
        grace = None if grace_period_seconds is None else str(grace_period_seconds)
        path = self._named(kind, namespace, name, propagationPolicy=propagation, gracePeriodSeconds=grace)
        return kind.decode_json(self._request("DELETE", path))

    def bind(self, namespace, name, node_name):
        kind = REGISTRY.of(Pod)
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": namespace},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}
        return kind.decode_json(self._request("POST", self._named(kind, namespace, name, "binding"),
                                              json.dumps(binding).encode()))

    def watch(self, model, namespace=None, resource_version=None, label_selector=None, field_selector=None):
        kind = REGISTRY.of(model)
        path = self._path(kind, namespace, watch="1", resourceVersion=resource_version or None,
                          labelSelector=label_selector or None, fieldSelector=field_selector or None)
        watch = HTTPWatch(self, kind, path)
        with self._lock:
            self._watches.add(watch)
        return watch

    def logs(self, namespace: str, pod: str, container: str | None = None, follow: bool = False,
             previous: bool = False, tail_lines: int | None = None) -> Iterator[bytes]:
        """A container's log as chunks of bytes; with ``follow`` the chunks keep coming until the run ends."""
        path = self._named(REGISTRY.of(Pod), namespace, pod, "log", container=container or None,
                           follow="true" if follow else None, previous="true" if previous else None,
                           tailLines=None if tail_lines is None else str(tail_lines))
        conn = self._new_connection(None if follow else self.timeout)
        try:
            conn.request("GET", path, headers=self._headers)
            resp = conn.getresponse()
        except ConnectionRefusedError as e:
            conn.close()
            raise self._unreachable(e) from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise self._lost(e) from None
        if resp.status != 200:
            body = resp.read()
            conn.close()
            raise _error(resp.status, resp.reason, body)
        return self._read_stream(conn, resp)

    def _read_stream(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> Iterator[bytes]:
        try:
            while True:
                try:
                    data = resp.read1(65536)
                except (OSError, http.client.HTTPException) as e:
                    raise self._lost(e) from None
                if not data:
                    return
                yield data
        finally:
            conn.close()

    def version(self) -> dict:
        """The server's GET /version answer (major, minor, gitVersion, platform)."""
        return json.loads(self._request("GET", "/version"))

    def healthz(self) -> bool:
        """True when the server answers /healthz with "ok"."""
        try:
            return self._request("GET", "/healthz") == b"ok"
        except (ConnectionError, TimeoutError, ApiError):
            return False

    def close(self) -> None:
        """Close every connection and stop every watch this store opened."""
        with self._lock:
            connections, self._connections = list(self._connections), weakref.WeakSet()
            watches, self._watches = list(self._watches), set()
        for w in watches:
            w.stop()
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def _forget(self, watch: "HTTPWatch") -> None:
        with self._lock:
            self._watches.discard(watch)

    def __enter__(self) -> "HTTPStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HTTPWatch(WatchIterMixin):
    """A watch stream read from its own socket; ``next(timeout)`` never loses a partly read event.

    The chunked transfer coding is decoded incrementally, so a timeout in the middle of a chunk
    just leaves the bytes buffered for the next call. ``stop()`` from any thread shuts the socket
    down, which wakes a blocked reader at once.
    """

    def __init__(self, store: HTTPStore, kind: Kind, path: str):
        self._store, self._kind = store, kind
        self._lock = threading.Lock()
        self._stopped = False
        self._ended = False  # the server finished the stream (terminating chunk)
        self._reading = False
        self._raw = bytearray()  # received, not yet de-chunked
        self._data = bytearray()  # de-chunked, not yet a full line
        self._chunk_left = 0  # payload bytes left in the current chunk; -1: expecting its CRLF
        self._events: collections.deque = collections.deque()
        try:
            self._sock = socket.create_connection((store.host, store.port), timeout=store.timeout)
        except ConnectionRefusedError as e:
            raise store._unreachable(e) from None
        except OSError as e:
            raise store._lost(e) from None
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._open(path)
        except BaseException:
            self._sock.close()
            raise

    def _open(self, path: str) -> None:
        store = self._store
        headers = "".join(f"{k}: {v}\r\n" for k, v in store._headers.items())
        request = f"GET {path} HTTP/1.1\r\nHost: {store.host}:{store.port}\r\n{headers}\r\n"
        try:
            self._sock.sendall(request.encode())
            while b"\r\n\r\n" not in self._raw:
                data = self._sock.recv(65536)
                if not data:
                    raise ConnectionResetError("the server closed the connection before answering")
                self._raw += data
        except ConnectionRefusedError as e:
            raise store._unreachable(e) from None
        except OSError as e:
            raise store._lost(e) from None
        head, _, rest = bytes(self._raw).partition(b"\r\n\r\n")
        self._raw = bytearray(rest)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        _, code, reason = (status_line.split(" ", 2) + [""])[:3]
        headers_map = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        if code != "200":
            length = int(headers_map.get("content-length", "0") or 0)
            try:
                while len(self._raw) < length:
                    data = self._sock.recv(65536)
                    if not data:
                        break
                    self._raw += data
            except OSError as e:
                raise store._lost(e) from None
            raise _error(int(code), reason, bytes(self._raw[:length]))
        if headers_map.get("transfer-encoding", "").lower() != "chunked":
            raise store._lost(ValueError("the watch response is not a chunked stream"))
        self._sock.settimeout(None)
        self._decode()

    # -- incremental decoding -----------------------------------------------------------------
    def _decode(self) -> None:
        """Turn the bytes received so far into events; ConnectionError when they are not a watch stream."""
        try:
            self._decode_chunks()
        except ValueError as e:  # a bad chunk size, or a line that is not a JSON object
            self._ended = True
            self._close()
            raise ConnectionError(f"the watch stream from the mlplane API server at {self._store.url} is "
                                  f"malformed: {e}") from None

    def _decode_chunks(self) -> None:
        raw = self._raw
        while raw and not self._ended:
            if self._chunk_left > 0:
                take = min(self._chunk_left, len(raw))
                self._data += raw[:take]
                del raw[:take]
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._chunk_left = -1
            elif self._chunk_left == -1:
                if len(raw) < 2:
                    break
                if raw[:2] != b"\r\n":
                    raise ValueError(f"a chunk is longer than its size said (next bytes {bytes(raw[:20])!r})")
                del raw[:2]  # the CRLF after a chunk's payload
                self._chunk_left = 0
            else:
                end = raw.find(b"\r\n")
                if end < 0:
                    if len(raw) > _MAX_CHUNK_LINE:
                        raise ValueError(f"no end to the chunk size line {bytes(raw[:40])!r}...")
                    break
                line = bytes(raw[:end])
                size_text = line.split(b";")[0].strip()
                if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size_text):
                    raise ValueError(f"bad chunk size line {line[:40]!r}")
                size = int(size_text, 16)
                del raw[:end + 2]
                if size == 0:
                    self._ended = True
                else:
                    self._chunk_left = size
        data = self._data
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if end > start:
                event = json.loads(data[start:end])
                if not isinstance(event, dict):
                    raise ValueError(f"a watch event must be a JSON object, got {bytes(data[start:end][:80])!r}")
                self._events.append(event)
            start = end + 1
        del data[:start]

    def _event(self, raw: dict) -> WatchEvent | None:
        type_ = raw.get("type")
        if type_ == "ERROR":
            self._ended = True
            self._close()
            raise ApiError.from_status(raw.get("object") or {})
        if type_ not in ("ADDED", "MODIFIED", "DELETED"):
            return None  # BOOKMARK and future types carry no object change
        return WatchEvent(type_, self._kind.model.model_validate(raw["object"]))

    # -- the Watch protocol -------------------------------------------------------------------
    def next(self, timeout: float | None = None) -> WatchEvent | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._events:
                event = self._event(self._events.popleft())
                if event is not None:
                    return event
            if self._ended or self._stopped:
                self._close()
                return None
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            with self._lock:
                if self._stopped:
                    continue
                self._reading = True
            try:
                self._sock.settimeout(wait)
                data = self._sock.recv(65536)
            except TimeoutError:
                return None
            except OSError as e:
                if self._stopped:
                    continue
                self._close()
                raise self._store._lost(e) from None
            finally:
                with self._lock:
                    self._reading = False
            if not data:
                if self._stopped:
                    continue
                self._close()
                raise self._store._lost(ConnectionResetError("the watch stream ended without its final chunk"))
            self._raw += data
            self._decode()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            reading = self._reading
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
        except OSError:
            pass  # not connected any more
        if not reading:
            self._close()

    def _close(self) -> None:
        self._sock.close()
        self._store._forget(self)

    @property
    def stopped(self) -> bool:
        return self._stopped or (self._ended and not self._events)
