"""Store semantics, checked against both implementations: EmbeddedStore and HTTPStore over ApiServer.

Also: a real ``kill -9`` of a server process in the middle of writes (every acknowledged write
survives the restart), and bad input over HTTP for every verb (a clear error, nothing stored).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest

from mlplane.api import AlreadyExists, BadRequest, Conflict, Gone, Job, Namespace, NotFound, ObjectMeta, Pod
from mlplane.api.core import Node
from mlplane.api.meta import owner_reference
from mlplane.control.apiserver import ApiServer
from mlplane.control.store.embedded import EmbeddedStore
from mlplane.control.store.http import HTTPStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY = 64  # the stores under test keep this many events for watches that resume


@pytest.fixture(params=["embedded", "http"])
def any_store(request, tmp_path):
    """An empty store with the "default" namespace: embedded, or a client of a server over one."""
    backing = EmbeddedStore(tmp_path / "store.db", history=HISTORY)
    backing.create(Namespace(metadata=ObjectMeta(name="default")))
    try:
        if request.param == "embedded":
            yield backing
        else:
            with ApiServer(backing) as server, HTTPStore(server.url) as client:
                yield client
    finally:
        backing.close()


def pod(name: str | None = None, namespace: str = "default", labels: dict | None = None, **spec) -> Pod:
    return Pod.model_validate({
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "python:3.11", "command": ["true"]}], **spec}})


def job(name: str, parallelism: int = 1, namespace: str = "default") -> Job:
    return Job.model_validate({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"parallelism": parallelism, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "main", "image": "python:3.11"}]}}}})


def names(items) -> list[str]:
    return sorted(o.name for o in items)


def drain(watch, count: int, timeout: float = 10.0) -> list:
    """The next ``count`` events of ``watch`` (fails if they do not arrive in time)."""
    events, deadline = [], time.monotonic() + timeout
    while len(events) < count:
        event = watch.next(timeout=max(0.0, deadline - time.monotonic()))
        assert event is not None, f"only {len(events)} of {count} watch events arrived"
        events.append(event)
    return events


# -- create / get / list --------------------------------------------------------------------------

def test_create_get_list_with_label_and_field_selectors(any_store):
    s = any_store
    s.create(Namespace(metadata=ObjectMeta(name="other")))
    a = s.create(pod("a", labels={"app": "web", "tier": "front"}))
    s.create(pod("b", labels={"app": "web"}, nodeName="node-1"))
    s.create(pod("c", labels={"app": "db"}))
    s.create(pod("d", namespace="other", labels={"app": "web"}))

    got = s.get(Pod, "default", "a")
    assert isinstance(got, Pod)
    assert (got.uid, got.metadata.resource_version, got.labels) == (a.uid, a.metadata.resource_version, a.labels)
    assert got.metadata.generation == 1 and got.metadata.creation_timestamp

    assert names(s.list(Pod, "default").items) == ["a", "b", "c"]
    assert names(s.list(Pod).items) == ["a", "b", "c", "d"]  # all namespaces
    assert names(s.list(Pod, "default", label_selector="app=web").items) == ["a", "b"]
    assert names(s.list(Pod, label_selector="app in (web),tier!=front").items) == ["b", "d"]
    assert names(s.list(Pod, "default", label_selector="!tier").items) == ["b", "c"]
    assert names(s.list(Pod, field_selector="spec.nodeName=node-1").items) == ["b"]
    assert names(s.list(Pod, field_selector="metadata.namespace=other").items) == ["d"]
    assert names(s.list(Pod, "default", label_selector="app=web", field_selector="metadata.name!=a").items) == ["b"]
    listed = s.list(Pod)
    assert int(listed.resource_version) >= max(int(p.metadata.resource_version) for p in listed.items)
    with pytest.raises(BadRequest, match="field label not supported: spec.image"):
        s.list(Pod, field_selector="spec.image=x")


def test_already_exists_not_found_and_missing_namespace(any_store):
    s = any_store
    s.create(pod("a"))
    with pytest.raises(AlreadyExists, match='pods "a" already exists'):
        s.create(pod("a"))
    with pytest.raises(NotFound, match='pods "zzz" not found'):
        s.get(Pod, "default", "zzz")
    with pytest.raises(NotFound):
        s.delete(Pod, "default", "zzz")
    with pytest.raises(NotFound, match='namespaces "nowhere" not found'):
        s.create(pod("a", namespace="nowhere"))
    assert names(s.list(Pod).items) == ["a"]


def test_generate_name(any_store):
    created = {any_store.create(Pod.model_validate({
        "metadata": {"generateName": "worker-", "namespace": "default"},
        "spec": {"containers": [{"name": "main"}]}})).name for _ in range(5)}
    assert len(created) == 5
    assert all(n.startswith("worker-") and len(n) > len("worker-") for n in created)
    assert set(names(any_store.list(Pod).items)) == created


# -- updates ----------------------------------------------------------------------------------------

def test_update_with_stale_resource_version_conflicts(any_store):
    s = any_store
    first = s.create(pod("a"))
    fresh = s.get(Pod, "default", "a")
    fresh.metadata.labels = {"v": "2"}
    updated = s.update(fresh)
    assert int(updated.metadata.resource_version) > int(first.metadata.resource_version)
    first.metadata.labels = {"v": "stale"}
    with pytest.raises(Conflict, match="the object has been modified"):
        s.update(first)
    assert s.get(Pod, "default", "a").labels == {"v": "2"}


def test_racing_read_modify_write_exactly_one_wins(any_store):
    s = any_store
    s.create(pod("a"))
    for round_ in range(5):
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def writer(tag: str) -> None:
            obj = s.get(Pod, "default", "a")
            barrier.wait(timeout=5)  # both have read the same version before either writes
            obj.metadata.labels = {"writer": tag}
            try:
                s.update(obj)
                outcomes.append(f"won:{tag}")
            except Conflict:
                outcomes.append("conflict")

        threads = [threading.Thread(target=writer, args=(f"{round_}-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        winners = [o for o in outcomes if o.startswith("won:")]
        assert len(winners) == 1 and outcomes.count("conflict") == 1, outcomes
        assert s.get(Pod, "default", "a").labels == {"writer": winners[0][4:]}


def test_generation_bumps_on_spec_change_only(any_store):
    s = any_store
    node = s.create(Node(metadata=ObjectMeta(name="n1")))
    assert node.metadata.generation == 1
    node.metadata.labels = {"zone": "a"}
    node = s.update(node)
    assert node.metadata.generation == 1
    node.spec.unschedulable = True
    node = s.update(node)
    assert node.metadata.generation == 2
    node = s.patch(Node, None, "n1", {"status": {"capacity": {"cpu": "4"}}}, subresource="status")
    assert node.metadata.generation == 2 and node.status.capacity == {"cpu": "4"}
    assert s.patch(Node, None, "n1", {"spec": {"unschedulable": False}}).metadata.generation == 3


def test_status_subresource_is_isolated_from_the_main_resource(any_store):
    s = any_store
    created = s.create(job("j", parallelism=1))
    assert created.status.active is None
    changed = created.model_copy(deep=True)
    changed.spec.parallelism = 2
    changed.status.active = 3
    after_update = s.update(changed)
    assert after_update.spec.parallelism == 2 and after_update.status.active is None  # status ignored

    changed = after_update.model_copy(deep=True)
    changed.spec.parallelism = 7
    changed.status.active = 1
    after_status = s.update_status(changed)
    assert after_status.spec.parallelism == 2 and after_status.status.active == 1  # spec ignored
    stored = s.get(Job, "default", "j")
    assert (stored.spec.parallelism, stored.status.active) == (2, 1)


def test_merge_patch_merges_maps_and_null_deletes(any_store):
    s = any_store
    s.create(pod("a", labels={"a": "1", "b": "2"}))
    patched = s.patch(Pod, "default", "a", {"metadata": {"labels": {"a": None, "c": "3"},
                                                         "annotations": {"note": "x"}}})
    assert patched.labels == {"b": "2", "c": "3"} and patched.metadata.annotations == {"note": "x"}
    # The main resource ignores status; the status subresource ignores everything else.
    assert s.patch(Pod, "default", "a", {"status": {"phase": "Running"}}).status.phase == "Pending"
    patched = s.patch(Pod, "default", "a", {"status": {"phase": "Running"}, "metadata": {"labels": None}},
                      subresource="status")
    assert patched.status.phase == "Running" and patched.labels == {"b": "2", "c": "3"}
    patched = s.patch(Pod, "default", "a", {"metadata": {"labels": None}})
    assert patched.metadata.labels is None
    assert s.get(Pod, "default", "a").model_dump() == patched.model_dump()


# -- deletion -------------------------------------------------------------------------------------------

def test_delete_waits_for_the_last_finalizer(any_store):
    s = any_store
    created = s.create(Pod.model_validate({
        "metadata": {"name": "held", "namespace": "default", "finalizers": ["example.com/a", "example.com/b"]},
        "spec": {"containers": [{"name": "main"}]}}))
    watch = s.watch(Pod, "default", resource_version=created.metadata.resource_version)
    try:
        deleting = s.delete(Pod, "default", "held")
        assert deleting.metadata.deletion_timestamp
        still = s.get(Pod, "default", "held")
        assert still.metadata.deletion_timestamp and still.metadata.finalizers == ["example.com/a", "example.com/b"]
        s.patch(Pod, "default", "held", {"metadata": {"finalizers": ["example.com/b"]}})
        assert s.get(Pod, "default", "held").metadata.finalizers == ["example.com/b"]
        s.patch(Pod, "default", "held", {"metadata": {"finalizers": None}})
        with pytest.raises(NotFound):
            s.get(Pod, "default", "held")
        events = drain(watch, 3)
        assert [e.type for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]
        assert events[-1].object.name == "held"
        assert watch.next(timeout=0.2) is None
    finally:
        watch.stop()


def test_owner_reference_cascade_and_orphan(any_store):
    s = any_store
    owner = s.create(job("owner"))
    s.create(_owned(pod("child"), owner))
    s.delete(Job, "default", "owner")
    with pytest.raises(NotFound):
        s.get(Pod, "default", "child")

    owner = s.create(job("owner2"))
    s.create(_owned(pod("kept"), owner))
    s.delete(Job, "default", "owner2", propagation="Orphan")
    kept = s.get(Pod, "default", "kept")
    assert kept.metadata.owner_references is None
    with pytest.raises(NotFound):
        s.get(Job, "default", "owner2")
    with pytest.raises(BadRequest, match="propagationPolicy"):
        s.delete(Pod, "default", "kept", propagation="Sometimes")


def _owned(obj, owner):
    obj.metadata.owner_references = [owner_reference(owner)]
    return obj


def test_namespace_deletion_cascades(any_store):
    s = any_store
    s.create(Namespace(metadata=ObjectMeta(name="team")))
    s.create(pod("a", namespace="team"))
    s.create(job("j", namespace="team"))
    s.create(pod("outside"))
    s.delete(Namespace, None, "team")
    assert s.list(Pod, "team").items == [] and s.list(Job, "team").items == []
    with pytest.raises(NotFound):
        s.get(Namespace, None, "team")
    with pytest.raises(NotFound):
        s.create(pod("b", namespace="team"))
    assert names(s.list(Pod).items) == ["outside"]


# -- watch --------------------------------------------------------------------------------------------

def test_watch_sees_concurrent_writes_in_order_without_gaps(any_store):
    s = any_store
    start = s.list(Pod, "default").resource_version
    watch = s.watch(Pod, "default", resource_version=start)
    written: list[int] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        for j in range(10):
            created = s.create(pod(f"w{i}-{j}"))
            created.metadata.labels = {"round": "2"}
            updated = s.update(created)
            with lock:
                written.extend([int(created.metadata.resource_version), int(updated.metadata.resource_version)])

    try:
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        events = drain(watch, len(written))
        seen = [int(e.object.metadata.resource_version) for e in events]
        assert seen == sorted(set(seen)), "resourceVersions must strictly increase"
        assert seen == sorted(written)
        assert watch.next(timeout=0.2) is None
        by_name: dict[str, list[str]] = {}
        for e in events:
            by_name.setdefault(e.object.name, []).append(e.type)
        assert all(types == ["ADDED", "MODIFIED"] for types in by_name.values()) and len(by_name) == 80
    finally:
        watch.stop()


def test_watch_from_resource_version_replays_later_events(any_store):
    s = any_store
    a = s.create(pod("a"))
    s.create(pod("b"))
    s.patch(Pod, "default", "a", {"metadata": {"labels": {"x": "1"}}})
    s.delete(Pod, "default", "b")
    watch = s.watch(Pod, "default", resource_version=a.metadata.resource_version)
    try:
        assert [(e.type, e.object.name) for e in drain(watch, 3)] == [
            ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        assert watch.next(timeout=0.2) is None
        s.create(pod("c"))
        assert [(e.type, e.object.name) for e in drain(watch, 1)] == [("ADDED", "c")]
    finally:
        watch.stop()
    assert watch.next(timeout=0.1) is None and watch.stopped

    fresh = s.watch(Pod, "default")  # no resourceVersion: what exists now comes as ADDED
    try:
        assert [(e.type, e.object.name) for e in drain(fresh, 2)] == [("ADDED", "a"), ("ADDED", "c")]
    finally:
        fresh.stop()


def test_label_selector_watch_reports_objects_leaving_the_selector(any_store):
    s = any_store
    watch = s.watch(Pod, "default", label_selector="app=web")
    try:
        s.create(pod("a", labels={"app": "web"}))
        s.create(pod("other", labels={"app": "db"}))
        s.patch(Pod, "default", "a", {"metadata": {"labels": {"app": "db"}}})
        s.patch(Pod, "default", "a", {"metadata": {"labels": {"app": "web"}}})
        events = drain(watch, 3)
        assert [(e.type, e.object.name) for e in events] == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "a")]
        assert events[1].object.labels == {"app": "db"}
        assert watch.next(timeout=0.2) is None
    finally:
        watch.stop()


def test_watch_from_a_too_old_resource_version_is_gone(any_store):
    s = any_store
    first = s.create(pod("a"))
    for i in range(HISTORY + 5):
        s.patch(Pod, "default", "a", {"metadata": {"labels": {"i": str(i)}}})
    with pytest.raises(Gone, match="too old resource version"):
        watch = s.watch(Pod, "default", resource_version=first.metadata.resource_version)
        try:
            watch.next(timeout=2)
        finally:
            watch.stop()


def test_stop_unblocks_a_waiting_reader(any_store):
    watch = any_store.watch(Pod, "default")
    result: list = []
    reader = threading.Thread(target=lambda: result.append(list(watch)))
    reader.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    watch.stop()
    reader.join(timeout=5)
    assert not reader.is_alive() and time.monotonic() - t0 < 1.0
    assert result == [[]] and watch.stopped


# -- durability: a real kill -9 ---------------------------------------------------------------------

_SERVER = """
import sys, threading
from mlplane.api import AlreadyExists, Namespace, ObjectMeta
from mlplane.control.apiserver import ApiServer
from mlplane.control.store.embedded import EmbeddedStore
store = EmbeddedStore(sys.argv[1])
try:
    store.create(Namespace(metadata=ObjectMeta(name="default")))
except AlreadyExists:
    pass
server = ApiServer(store).start()
print(server.url, flush=True)
threading.Event().wait()
"""


def _start_server(db) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=env)
    url = proc.stdout.readline().decode().strip()
    if not url:
        proc.kill()
        raise AssertionError(f"server did not start: {proc.communicate()[1].decode()}")
    return proc, url


def test_kill_9_loses_no_acknowledged_write(tmp_path):
    db = tmp_path / "store.db"
    proc, url = _start_server(db)
    acked: dict[str, int] = {}
    failures: list[Exception] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with HTTPStore(url, timeout=10) as c:
            for j in range(100_000):
                try:
                    created = c.create(pod(f"c{i}-{j}"))
                except Exception as e:  # the server died under us
                    with lock:
                        failures.append(e)
                    return
                with lock:
                    acked[created.name] = int(created.metadata.resource_version)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no shutdown code runs
        proc.wait(timeout=10)
        for t in threads:
            t.join(timeout=15)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert len(acked) >= 300
    assert len(failures) == 8, "every writer was still writing when the server was killed"
    assert all(isinstance(e, ConnectionError) for e in failures), failures

    proc, url = _start_server(db)
    try:
        with HTTPStore(url) as c:
            stored = {p.name: int(p.metadata.resource_version) for p in c.list(Pod, "default").items}
            missing = sorted(set(acked) - set(stored))
            assert not missing, f"{len(missing)} acknowledged creates lost, e.g. {missing[:5]}"
            assert all(stored[name] == rv for name, rv in acked.items())
            after = c.create(pod("after-restart"))
            assert int(after.metadata.resource_version) > max(stored.values())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# -- bad input over HTTP -------------------------------------------------------------------------------

@pytest.fixture
def server(store):
    with ApiServer(store) as srv:
        yield srv


def _call(url: str, method: str, path: str, body: bytes | None = None,
          content_type: str = "application/json") -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body, {"Content-Type": content_type} if body is not None else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


PODS = "/api/v1/namespaces/default/pods"


def _pod_json(name: str = "p", **extra_container) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"containers": [{"name": "main", **extra_container}]}}).encode()


def test_bad_input_on_create_stores_nothing(server, store):
    code, status = _call(server.url, "POST", PODS, b'{"metadata": {')
    assert (code, status["kind"], status["reason"]) == (400, "Status", "BadRequest")
    assert "not valid JSON" in status["message"]

    code, status = _call(server.url, "POST", PODS, _pod_json(bogus=1))
    assert (code, status["reason"]) == (422, "Invalid")
    assert 'unknown field "spec.containers[0].bogus"' in status["message"]
    assert {"field": "spec.containers[0].bogus", "message": 'unknown field "spec.containers[0].bogus"'} \
        in status["details"]["causes"]

    code, status = _call(server.url, "POST", PODS, b'["a pod"]')
    assert code == 400 and "must be a JSON object" in status["message"]
    code, status = _call(server.url, "POST", "/api/v1/namespaces/other/pods", _pod_json())
    assert code == 404 and status["message"] == 'namespaces "other" not found'
    code, status = _call(server.url, "POST", PODS, json.dumps(
        {"metadata": {"name": "p", "namespace": "kube-system"}, "spec": {"containers": [{"name": "m"}]}}).encode())
    assert code == 400 and "does not match the namespace sent on the request" in status["message"]
    code, status = _call(server.url, "POST", "/apis/batch/v1/namespaces/default/pods", _pod_json())
    assert code == 404 and status["reason"] == "NotFound"
    code, status = _call(server.url, "POST", "/api/v1/namespaces/default/widgets", _pod_json())
    assert code == 404 and "widgets" in status["message"]
    assert store.list(Pod).items == []


def test_bad_input_on_update_patch_and_delete_changes_nothing(server, store):
    code, created = _call(server.url, "POST", PODS, _pod_json())
    assert code == 201
    path = f"{PODS}/p"
    for method, body, ctype, want_code, want in [
        ("PUT", b"{nope", "application/json", 400, "not valid JSON"),
        ("PUT", _pod_json(bogus=1), "application/json", 422, 'unknown field "spec.containers[0].bogus"'),
        ("PUT", _pod_json("q"), "application/json", 400, "does not match the name on the URL"),
        ("PATCH", b"{nope", "application/merge-patch+json", 400, "not valid JSON"),
        ("PATCH", b'{"spec": {"bogus": 1}}', "application/merge-patch+json", 422, 'unknown field "spec.bogus"'),
        ("PATCH", b'"x"', "application/merge-patch+json", 400, "must be a JSON object"),
        ("PATCH", b'{"metadata": {"labels": {"a": "b"}}}', "application/json-patch+json", 415,
         "is not supported"),
        ("DELETE", b"{nope", "application/json", 400, "not valid JSON"),
        ("DELETE", b'{"propagationPolicy": "Sometimes"}', "application/json", 400, "propagationPolicy"),
    ]:
        code, status = _call(server.url, method, path, body, ctype)
        assert (code, status["kind"]) == (want_code, "Status"), (method, body, status)
        assert want in status["message"], (method, body, status["message"])
    stored = store.get(Pod, "default", "p")
    assert stored.metadata.resource_version == created["metadata"]["resourceVersion"]
    assert stored.labels == {}

    assert _call(server.url, "DELETE", f"{PODS}/missing")[0] == 404
    assert _call(server.url, "GET", "/api/v1/widgets")[0] == 404
    assert _call(server.url, "GET", "/nothing/here")[0] == 404
    assert _call(server.url, "GET", "/api/v1/pods/p")[0] == 404  # a namespaced object needs its namespace
    assert _call(server.url, "PUT", PODS, _pod_json())[0] == 405
    assert _call(server.url, "POST", "/api/v1/pods", _pod_json("other"))[0] == 405
    assert names(store.list(Pod).items) == ["p"]
