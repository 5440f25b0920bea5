"""The API server's own behaviour: binding and bearer tokens, pod logs, watch streams, discovery-free basics."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from mlplane import __version__
from mlplane.api import BadRequest, Gone, Namespace, ObjectMeta, Pod
from mlplane.api.errors import Unauthorized
from mlplane.control.apiserver import ApiServer
from mlplane.control.node.logs import container_log
from mlplane.control.store.embedded import EmbeddedStore, _Watcher
from mlplane.control.store.http import HTTPStore


def _get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _pod(name: str, *containers: str) -> Pod:
    return Pod.model_validate({"metadata": {"name": name, "namespace": "default"},
                               "spec": {"containers": [{"name": c} for c in containers or ("main",)]}})


# -- binding and tokens -----------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "example.com"])
def test_listening_beyond_loopback_requires_a_token(store, host):
    with pytest.raises(ValueError, match=f"listening on {host} requires a bearer token"):
        ApiServer(store, host=host)
    ApiServer(store, host=host, token="s3cret")  # constructing it with a token is allowed


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_needs_no_token(store, host):
    ApiServer(store, host=host)


def test_requests_need_the_bearer_token(store):
    with ApiServer(store, token="s3cret") as server:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            code, body = _get(server.url, "/api/v1/namespaces/default/pods", headers)
            status = json.loads(body)
            assert (code, status["kind"], status["reason"]) == (401, "Status", "Unauthorized"), headers
        code, body = _get(server.url, "/api/v1/namespaces/default/pods", {"Authorization": "Bearer s3cret"})
        assert code == 200 and json.loads(body)["kind"] == "PodList"
        assert _get(server.url, "/healthz") == (200, b"ok")  # health checks need no token

        with HTTPStore(server.url, token="wrong") as client:
            with pytest.raises(Unauthorized):
                client.list(Pod)
            with pytest.raises(Unauthorized):
                client.watch(Pod)
        with HTTPStore(server.url, token="s3cret") as client:
            client.create(_pod("p"))
            assert [p.name for p in client.list(Pod).items] == ["p"]
            assert client.healthz()


def test_version_and_unreachable_server(store):
    with ApiServer(store) as server:
        with HTTPStore(server.url) as client:
            info = client.version()
        assert info["gitVersion"] == f"mlplane {__version__}" and info["major"] == __version__.split(".")[0]
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = HTTPStore(f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=r"cannot reach the mlplane API server at .*is `mlplane up` running"):
        client.get(Pod, "default", "p")
    with pytest.raises(ConnectionError, match="cannot reach"):
        client.watch(Pod)
    assert client.healthz() is False


# -- logs -------------------------------------------------------------------------------------------

@pytest.fixture
def logs(store, tmp_path):
    """A server with a data dir, a client, and a helper that writes a container's log file."""
    data_dir = tmp_path / "data"
    with ApiServer(store, data_dir=data_dir) as server, HTTPStore(server.url) as client:
        def write(pod: Pod, container: str, text: str, restart: int = 0):
            path = container_log(data_dir, pod.namespace, pod.name, pod.uid, container, restart)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:
                f.write(text.encode())
        yield client, write


def test_log_fetch_and_tail(logs):
    client, write = logs
    pod = client.create(_pod("p"))
    with pytest.raises(BadRequest, match='container "main" in pod "p" is waiting to start'):
        client.logs("default", "p")
    write(pod, "main", "".join(f"line {i}\n" for i in range(1, 6)))
    assert b"".join(client.logs("default", "p")) == b"line 1\nline 2\nline 3\nline 4\nline 5\n"
    assert b"".join(client.logs("default", "p", tail_lines=2)) == b"line 4\nline 5\n"
    assert b"".join(client.logs("default", "p", tail_lines=0)) == b""
    assert b"".join(client.logs("default", "p", tail_lines=50)).count(b"\n") == 5
    write(pod, "main", "partial")
    assert b"".join(client.logs("default", "p", tail_lines=1)) == b"partial"
    assert b"".join(client.logs("default", "p", tail_lines=2)) == b"line 5\npartial"
    with pytest.raises(BadRequest, match="tailLines"):
        client.logs("default", "p", tail_lines=-1)


def test_log_container_choice_and_previous_run(logs):
    client, write = logs
    pod = client.create(_pod("multi", "a", "b"))
    write(pod, "a", "from a\n")
    write(pod, "b", "first run of b\n", restart=0)
    write(pod, "b", "second run of b\n", restart=1)
    with pytest.raises(BadRequest, match=r"a container name must be specified for pod multi, choose one of: \[a b\]"):
        client.logs("default", "multi")
    with pytest.raises(BadRequest, match="container c is not valid for pod multi"):
        client.logs("default", "multi", container="c")
    assert b"".join(client.logs("default", "multi", container="a")) == b"from a\n"
    assert b"".join(client.logs("default", "multi", container="b")) == b"second run of b\n"
    assert b"".join(client.logs("default", "multi", container="b", previous=True)) == b"first run of b\n"
    with pytest.raises(BadRequest, match='previous terminated container "a" in pod "multi" not found'):
        client.logs("default", "multi", container="a", previous=True)


def test_log_follow_streams_appends_until_the_pod_is_terminal(logs):
    client, write = logs
    pod = client.create(_pod("runner"))
    write(pod, "main", "start\n")
    received: list[bytes] = []
    stream = client.logs("default", "runner", follow=True)
    reader = threading.Thread(target=lambda: received.extend(stream))
    reader.start()
    try:
        for i in range(3):
            write(pod, "main", f"step {i}\n")
            deadline = time.monotonic() + 5
            while f"step {i}\n".encode() not in b"".join(received) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert f"step {i}\n".encode() in b"".join(received)
        write(pod, "main", "done\n")
        client.patch(Pod, "default", "runner", {"status": {"phase": "Succeeded"}}, subresource="status")
        reader.join(timeout=5)
        assert not reader.is_alive(), "the follow stream should end once the pod is terminal"
        assert b"".join(received) == b"start\nstep 0\nstep 1\nstep 2\ndone\n"
    finally:
        client.delete(Pod, "default", "runner")
        reader.join(timeout=5)


def test_log_follow_ends_when_the_container_restarts(logs):
    client, write = logs
    pod = client.create(_pod("looper"))
    write(pod, "main", "run 0\n")
    stream = client.logs("default", "looper", follow=True, tail_lines=1)
    assert next(stream) == b"run 0\n"
    write(pod, "main", "run 1\n", restart=1)
    assert b"".join(stream) == b""  # ends: the run it followed is over
    assert b"".join(client.logs("default", "looper")) == b"run 1\n"


# -- watch streams -----------------------------------------------------------------------------------

def test_watch_stream_shape_timeout_and_gone(tmp_path):
    store = EmbeddedStore(tmp_path / "store.db", history=8)
    store.create(Namespace(metadata=ObjectMeta(name="default")))
    store.create(_pod("a"))
    with store, ApiServer(store) as server:
        started = time.monotonic()
        code, body = _get(server.url, "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=0.5")
        assert code == 200 and 0.4 < time.monotonic() - started < 3
        events = [json.loads(line) for line in body.decode().splitlines()]
        assert [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "Pod", "a")]

        for i in range(10):  # push resourceVersion 1 out of the watch history
            store.patch(Pod, "default", "a", {"metadata": {"labels": {"i": str(i % 3)}}})
        code, body = _get(server.url, "/api/v1/namespaces/default/pods?watch=1&resourceVersion=1")
        status = json.loads(body)
        assert (code, status["reason"], status["code"]) == (410, "Expired", 410)
        with HTTPStore(server.url) as client, pytest.raises(Gone):
            client.watch(Pod, "default", resource_version="1")


def test_server_stop_ends_open_watches_and_disconnects_free_watchers(store):
    server = ApiServer(store).start()
    client = HTTPStore(server.url)
    try:
        watch = client.watch(Pod, "default")
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.sendall(b"GET /api/v1/namespaces/default/pods?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 200 OK")
        assert len(store._watchers) == 2
        raw.close()  # the server notices the client left and drops its watcher
        deadline = time.monotonic() + 3
        while len(store._watchers) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(store._watchers) == 1
        server.stop()
        assert watch.next(timeout=3) is None and watch.stopped  # the stream ended cleanly
        assert store._watchers == []
    finally:
        client.close()
        server.stop()


def test_a_watcher_that_falls_behind_gets_what_came_before_then_a_410_error(store, monkeypatch):
    monkeypatch.setattr(_Watcher, "MAX_BUFFERED", 3)
    since = store.list(Pod, "default").resource_version
    for i in range(5):
        store.create(_pod(f"p{i}"))
    with ApiServer(store) as server:
        code, body = _get(server.url, f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={since}")
    assert code == 200  # and http.client read the stream to its final chunk: it ended properly
    events = [json.loads(line) for line in body.decode().splitlines()]
    assert [(e["type"], e["object"].get("metadata", {}).get("name")) for e in events[:3]] == [
        ("ADDED", "p0"), ("ADDED", "p1"), ("ADDED", "p2")]
    assert len(events) == 4 and events[3]["type"] == "ERROR"
    status = events[3]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")


# -- request framing ------------------------------------------------------------------------------------

def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes; everything the server answers until it closes the connection (or 3 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(request)
        got = b""
        try:
            while data := s.recv(65536):
                got += data
        except TimeoutError:
            pass
        return got


@pytest.mark.parametrize("length", ["-1", "+0", "1_0", "ten", " 5x"])
def test_a_bad_content_length_is_a_400_and_closes_the_connection(store, length):
    with ApiServer(store) as server:
        answer = _raw(server.port, f"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n"
                                   f"Content-Length: {length}\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head
    status = json.loads(body)
    assert status["reason"] == "BadRequest" and "invalid Content-Length" in status["message"]


def test_100_continue_comes_only_after_the_size_and_token_checks(store):
    with ApiServer(store, token="s3cret") as server:
        post = "POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        answer = _raw(server.port, f"{post}Content-Length: 10\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 401 ")  # no "100 Continue": the body is not wanted
        answer = _raw(server.port, f"{post}Authorization: Bearer s3cret\r\nContent-Length: {4 * 1024 * 1024}"
                                   "\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 413 ") and b'"reason": "RequestEntityTooLarge"' in answer

        pod = _pod("p").to_json().encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
            s.sendall(f"{post}Authorization: Bearer s3cret\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(pod)}\r\nConnection: close\r\n\r\n".encode())
            assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
            s.sendall(pod)
            answer = b""
            while data := s.recv(65536):
                answer += data
        assert answer.startswith(b"HTTP/1.1 201 ")
    assert [p.name for p in store.list(Pod).items] == ["p"]


# -- graceful deletion ------------------------------------------------------------------------------------

def _bound_pod(store, name: str, grace: int = 30) -> Pod:
    pod = _pod(name)
    pod.spec.node_name = "node-a"
    pod.spec.termination_grace_period_seconds = grace
    return store.create(pod)


def test_delete_passes_the_grace_period_from_the_query_or_the_delete_options(store):
    for name in ("q", "b", "d"):
        _bound_pod(store, name)
    with ApiServer(store) as server:
        url = f"{server.url}/api/v1/namespaces/default/pods"
        parts = urlsplit(url)

        def delete(path: str, body: bytes | None = None) -> tuple[int, dict]:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            try:
                conn.request("DELETE", f"{parts.path}/{path}", body,
                             {"Content-Type": "application/json"} if body else {})
                resp = conn.getresponse()
                return resp.status, json.loads(resp.read())
            finally:
                conn.close()

        code, pod = delete("q?gracePeriodSeconds=7")
        assert code == 200 and pod["metadata"]["deletionGracePeriodSeconds"] == 7
        code, pod = delete("b", b'{"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 9}')
        assert code == 200 and pod["metadata"]["deletionGracePeriodSeconds"] == 9
        code, pod = delete("d")
        assert code == 200 and pod["metadata"]["deletionGracePeriodSeconds"] == 30  # the pod's own
        assert sorted(p.name for p in store.list(Pod).items) == ["b", "d", "q"]  # all Terminating

        for path, body in (("q?gracePeriodSeconds=soon", None), ("q?gracePeriodSeconds=1.5", None),
                           ("q", b'{"gracePeriodSeconds": "0"}'), ("q", b'{"gracePeriodSeconds": true}')):
            code, status = delete(path, body)
            assert (code, status["reason"]) == (400, "BadRequest"), (path, body)
            assert "gracePeriodSeconds" in status["message"]
        code, _ = delete("q?gracePeriodSeconds=0")
        assert code == 200
        code, _ = delete("b", b'{"gracePeriodSeconds": 0}')
        assert code == 200
    assert [p.name for p in store.list(Pod).items] == ["d"]
