"""The HTTP store as a client: graceful deletion through the server, and watch streams it cannot trust."""

from __future__ import annotations

import socket
import threading

import pytest

from mlplane.api import Gone, Pod
from mlplane.control.apiserver import ApiServer
from mlplane.control.store.embedded import _Watcher
from mlplane.control.store.http import HTTPStore


def _bound_pod(name: str) -> Pod:
    return Pod.model_validate({"metadata": {"name": name, "namespace": "default"},
                               "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 30,
                                        "containers": [{"name": "main", "command": ["true"]}]}})


@pytest.fixture
def client(store):
    with ApiServer(store) as server, HTTPStore(server.url) as c:
        yield c


def test_delete_sends_the_grace_period(client):
    client.create(_bound_pod("p"))
    terminating = client.delete(Pod, "default", "p", grace_period_seconds=4)
    assert terminating.metadata.deletion_timestamp and terminating.metadata.deletion_grace_period_seconds == 4
    assert client.get(Pod, "default", "p").metadata.deletion_timestamp  # still there: Terminating
    client.delete(Pod, "default", "p", grace_period_seconds=0)
    assert client.list(Pod, "default").items == []


def test_a_watch_that_falls_behind_yields_what_came_before_then_raises_gone(client, store, monkeypatch):
    monkeypatch.setattr(_Watcher, "MAX_BUFFERED", 2)
    since = client.list(Pod, "default").resource_version
    for name in ("a", "b", "c"):
        client.create(_bound_pod(name))
    watch = client.watch(Pod, "default", resource_version=since)
    seen = []
    with pytest.raises(Gone):
        for event in watch:
            seen.append((event.type, event.object.name))
    assert seen == [("ADDED", "a"), ("ADDED", "b")]
    assert watch.stopped


@pytest.fixture
def fake_server():
    """A server that answers one request with the given raw bytes, then closes the connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads = []

    def serve(answer: bytes) -> str:
        def run():
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                conn.sendall(answer)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield serve
    listener.close()
    for t in threads:
        t.join(timeout=5)


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("stream, why", [
    (b"zz\r\nwhatever\r\n", "bad chunk size line"),
    (b"9\r\nnot json\n\r\n", "Expecting value"),
    (b"6\r\n[1,2]\n\r\n0\r\n\r\n", "must be a JSON object"),
    (b"2\r\n{}XX\r\n", "longer than its size"),
    (b"1" * 5000, "no end to the chunk size line"),
], ids=["chunk-size", "not-json", "not-an-object", "chunk-overrun", "endless-size-line"])
def test_a_malformed_watch_stream_is_a_connection_error(fake_server, stream, why):
    store = HTTPStore(fake_server(HEAD + stream))
    try:
        with pytest.raises(ConnectionError, match=f"watch stream from the mlplane API server at .* is malformed: "
                                                  f".*{why}"):
            watch = store.watch(Pod, "default")
            watch.next(timeout=3)
    finally:
        store.close()
