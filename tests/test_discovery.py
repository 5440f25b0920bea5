"""An InferencePool's endpoints: its Ready pods' podIP:targetPort, kept current from the store."""

import queue
import socket
import sys

import pytest

from conftest import wait_for
from mlplane.api import Namespace, Pod
from mlplane.api.inference import InferenceObjective, InferencePool
from mlplane.api.meta import ObjectMeta, set_condition
from mlplane.control.apiserver import ApiServer
from mlplane.control.node.agent import NodeAgent
from mlplane.control.store.http import HTTPStore
from mlplane.gateway.discovery import PoolWatcher, pool_endpoints, pool_objectives


def pool(name="sim", ports=(8000,), labels=None, namespace="default", selector=None):
    return InferencePool.model_validate({
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"selector": {"matchLabels": selector or {"app": "sim"}},
                 "targetPorts": [{"number": p} for p in ports]}})


def objective(name, priority=None, pool_name="sim", namespace="default", **spec):
    spec = spec or {"poolRef": {"name": pool_name}}
    if priority is not None:
        spec["priority"] = priority
    return InferenceObjective.model_validate({"metadata": {"name": name, "namespace": namespace}, "spec": spec})


def pod(name, ip="127.1.0.1", ready=True, labels=None, namespace="default", deleting=False, phase="Running"):
    p = Pod.model_validate({"metadata": {"name": name, "namespace": namespace,
                                         "labels": {"app": "sim"} if labels is None else labels},
                            "spec": {"nodeName": "n", "containers": [{"name": "c", "command": ["x"]}]}})
    p.status.phase = phase
    p.status.pod_ip = ip
    p.status.conditions = set_condition(None, "Ready", "True" if ready else "False")
    if deleting:
        p.metadata.deletion_timestamp = "2026-01-01T00:00:00Z"
    return p


# --- the rule ----------------------------------------------------------------------------

def test_one_endpoint_per_ready_selected_pod_and_target_port():
    pods = [pod("b", "127.1.0.2", labels={"app": "sim", "llm-d.ai/context-length-range": "0-4096"}),
            pod("a", "127.1.0.1")]
    eps = pool_endpoints(pool(ports=(8000, 8001)), pods)
    assert [(e.name, e.address, e.pool) for e in eps] == [
        ("default/a:8000", "127.1.0.1:8000", "sim"), ("default/a:8001", "127.1.0.1:8001", "sim"),
        ("default/b:8000", "127.1.0.2:8000", "sim"), ("default/b:8001", "127.1.0.2:8001", "sim")]
    assert eps[2].labels == {"app": "sim", "llm-d.ai/context-length-range": "0-4096"}


@pytest.mark.parametrize("excluded", [
    pod("unready", ready=False), pod("deleting", deleting=True), pod("no-ip", ip=None),
    pod("other-app", labels={"app": "other"}), pod("unlabelled", labels={}),
    pod("elsewhere", namespace="team-b"), pod("finished", phase="Succeeded")],
    ids=lambda p: p.name)
def test_pods_that_cannot_serve_or_are_not_selected_are_left_out(excluded):
    assert [e.name for e in pool_endpoints(pool(), [excluded, pod("member")])] == ["default/member:8000"]


def test_every_selector_label_must_match_and_no_pool_means_no_endpoints():
    p = pool(selector={"app": "sim", "tier": "gold"})
    pods = [pod("gold", labels={"app": "sim", "tier": "gold"}), pod("plain")]
    assert [e.name for e in pool_endpoints(p, pods)] == ["default/gold:8000"]
    assert pool_endpoints(None, pods) == []


def test_a_pool_without_namespace_uses_the_one_given():
    p = pool()
    p.metadata.namespace = None
    assert [e.name for e in pool_endpoints(p, [pod("x", namespace="team-b")], "team-b")] == ["team-b/x:8000"]


def test_objectives_of_a_pool_by_ref_refs_or_selector():
    p = pool(labels={"tier": "gold"})
    objs = [objective("critical", 10), objective("batch", -5), objective("unset"),
            objective("other-pool", 3, pool_name="other"), objective("elsewhere", 1, namespace="team-b"),
            objective("listed", 2, poolRefs=[{"name": "x"}, {"name": "sim"}]),
            objective("by-label", 4, poolSelector={"matchLabels": {"tier": "gold"}}),
            objective("wrong-kind", 7, poolRef={"name": "sim", "kind": "Service"})]
    assert pool_objectives(p, objs) == {"batch": -5, "by-label": 4, "critical": 10, "listed": 2, "unset": 0}
    assert pool_objectives(None, objs) == {}


# --- the watcher -------------------------------------------------------------------------

def ready(store, name, ip, labels=None):
    """Create a pod and report it Ready at ``ip``, as its node agent would."""
    p = store.create(Pod.model_validate({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "sim"} if labels is None else labels},
        "spec": {"nodeName": "n", "containers": [{"name": "c", "command": ["x"]}]}}))
    p.status.phase, p.status.pod_ip = "Running", ip
    p.status.conditions = set_condition(None, "Ready", "True")
    return store.update_status(p)


class Calls:
    """Records on_change calls; ``next(check)`` waits for a call that satisfies check."""

    def __init__(self):
        self.q = queue.Queue()

    def __call__(self, endpoints, pool_obj, objectives):
        self.q.put(([(e.name, e.address) for e in endpoints], pool_obj, objectives))

    def next(self, check=lambda call: True, timeout=10):
        while True:
            call = self.q.get(timeout=timeout)
            if check(call):
                return call


def exercise_watcher(store):
    calls = Calls()
    with PoolWatcher(store, "default", "sim", calls) as watcher:
        assert calls.next() == ([], None, {})  # first call even with nothing there
        assert watcher.wait_synced(5)
        ready(store, "a", "127.1.0.1")
        store.create(pool())
        eps, p, objs = calls.next(lambda c: c[1] is not None and c[0])
        assert eps == [("default/a:8000", "127.1.0.1:8000")] and p.name == "sim" and objs == {}
        store.create(objective("batch", -1))
        assert calls.next(lambda c: c[2])[2] == {"batch": -1}
        ready(store, "b", "127.1.0.2")
        assert calls.next(lambda c: len(c[0]) == 2)[0][1] == ("default/b:8000", "127.1.0.2:8000")
        ready(store, "stranger", "127.1.0.3", labels={"app": "other"})
        store.delete(Pod, "default", "a")
        assert calls.next(lambda c: len(c[0]) == 1)[0] == [("default/b:8000", "127.1.0.2:8000")]
        p = store.get(InferencePool, "default", "sim")
        p.spec.target_ports.append(p.spec.target_ports[0].model_copy(update={"number": 9000}))
        store.update(p)
        assert calls.next(lambda c: len(c[0]) == 2)[0] == [("default/b:8000", "127.1.0.2:8000"),
                                                           ("default/b:9000", "127.1.0.2:9000")]
        store.delete(InferencePool, "default", "sim")
        assert calls.next(lambda c: c[1] is None) == ([], None, {})


def test_the_watcher_follows_pods_pool_and_objectives(store):
    exercise_watcher(store)


def test_the_watcher_works_over_the_http_api(store):
    with ApiServer(store) as server, HTTPStore(server.url) as client:
        exercise_watcher(client)


def test_the_watcher_finds_real_pods_at_their_own_addresses(store, tmp_path):
    """End to end with the node agent: two pods listen on one port, each at its own pod IP."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ("import os, socket, sys\n"
              "s = socket.create_server((os.environ['POD_IP'], int(sys.argv[1])))\n"
              "while True:\n"
              "    c, _ = s.accept(); c.sendall(os.environ['HOSTNAME'].encode()); c.close()\n")
    agent = NodeAgent(store, tmp_path / "data", "node-a", crash_backoff=0.05).start()
    try:
        store.create(pool(ports=(port,)))
        for name in ("r0", "r1"):
            store.create(Pod.model_validate({
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "sim"}},
                "spec": {"nodeName": "node-a", "restartPolicy": "Always", "containers": [{
                    "name": "server", "command": [sys.executable, "-c", server, str(port)],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}}))
        calls = Calls()
        with PoolWatcher(store, "default", "sim", calls):
            eps, _, _ = calls.next(lambda c: len(c[0]) == 2)
        assert [name for name, _ in eps] == [f"default/r0:{port}", f"default/r1:{port}"]
        assert len({address for _, address in eps}) == 2

        def answer(address):
            host, _, p = address.rpartition(":")
            try:
                with socket.create_connection((host, int(p)), timeout=2) as c:
                    return c.recv(100).decode()
            except OSError:
                return None
        assert [wait_for(lambda: answer(a), what=a) for _, a in eps] == ["r0", "r1"]
    finally:
        agent.kill_all()


def test_objectives_in_other_namespaces_do_not_leak_in(store):
    store.create(Namespace(metadata=ObjectMeta(name="team-b")))
    store.create(pool())
    store.create(objective("mine", 1))
    store.create(objective("theirs", 9, namespace="team-b"))
    calls = Calls()
    with PoolWatcher(store, "default", "sim", calls):
        assert calls.next(lambda c: c[2])[2] == {"mine": 1}


def test_the_inference_example_serves_requests_through_the_gateway():
    """`mlplane demo examples/inference`: three serve-sim pods at their own pod IPs, found by the
    gateway through the pool, answer a completion and a stream; the answers name the pod that served."""
    import os
    import re
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "mlplane.cli.main", "demo", os.path.join(root, "examples", "inference"),
                        "--timeout", "60s"], capture_output=True, text=True, timeout=120, cwd=root,
                       env=dict(os.environ, PYTHONPATH=root))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    ready = next(line for line in out.splitlines() if "3/3 selected pods ready" in line)
    addresses = re.findall(r"127\.\d+\.\d+\.\d+:8000", ready)
    assert len(set(addresses)) == 3
    served = re.findall(r"served by (sim-llama-\d) \((127\.\d+\.\d+\.\d+:8000)\)", out)
    assert len(served) == 2 and all(address in addresses for _, address in served)
    assert re.search(r"200, \d+ SSE chunks", out) and "objectives: batch (priority -1, sheddable), chat" in out
    assert len(re.findall(r"request \d: sim-llama-\d, \d+/\d+ prompt tokens cached", out)) == 6
    assert "==> deleting 3 pod(s)" in out and "warning" not in r.stderr
