"""Each pod gets its own loopback address as status.podIP, so replicas can share one port number."""

import ipaddress
import socket
import sys

import pytest

from conftest import get_pod, wait_for
from mlplane.api import Pod
from mlplane.control.node.agent import NodeAgent
from mlplane.control.node.podips import PodIPs, address, usable

NODE = "node-a"

# A tiny server: answers each connection with the pod's name, on the address and port it is given.
SERVER = ("import os, socket, sys\n"
          "s = socket.create_server((sys.argv[1], int(sys.argv[2])))\n"
          "while True:\n"
          "    c, _ = s.accept()\n"
          "    c.sendall(os.environ['HOSTNAME'].encode()); c.close()\n")


@pytest.fixture
def agents(store, tmp_path):
    made = []

    def start():
        agent = NodeAgent(store, tmp_path / "data", NODE, crash_backoff=0.05)
        made.append(agent)
        return agent.start()

    yield start
    for agent in reversed(made):
        agent.kill_all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_pod(store, name, command, *, restart="Never"):
    container = {"name": "main", "command": command,
                 "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}
    return store.create(Pod.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": NODE, "restartPolicy": restart, "containers": [container]}}))


def running(store, name) -> Pod:
    return wait_for(lambda: (p := get_pod(store, name)).status.phase == "Running" and p.status.pod_ip and p,
                    what=f"{name} to run", timeout=10)


def ask(address: str, port: int) -> bytes:
    def attempt():
        try:
            with socket.create_connection((address, port), timeout=2) as c:
                return c.recv(100)
        except OSError:
            return None
    return wait_for(attempt, what=f"a server on {address}:{port}")


def test_pods_get_their_own_loopback_address_and_can_serve_the_same_port(store, agents):
    agents()
    port = free_port()
    for name in ("replica-a", "replica-b"):
        create_pod(store, name, [sys.executable, "-c", SERVER, "$(POD_IP)", str(port)], restart="Always")
    a, b = running(store, "replica-a"), running(store, "replica-b")
    assert a.status.pod_ip != b.status.pod_ip
    for pod in (a, b):
        ip = ipaddress.IPv4Address(pod.status.pod_ip)
        assert ip in ipaddress.IPv4Network("127.0.0.0/8") and str(ip) != "127.0.0.1"
        assert pod.status.host_ip == "127.0.0.1"  # the node's address
        # $(POD_IP) in the args expanded to the pod's own address, where its process listens.
        assert ask(pod.status.pod_ip, port) == pod.name.encode()


def test_the_env_sees_the_same_address_as_the_status(store, agents, tmp_path):
    agents()
    out = tmp_path / "seen"
    program = "import os, sys; open(sys.argv[1], 'w').write(' '.join([os.environ['POD_IP'], *sys.argv[2:]]))"
    create_pod(store, "env", [sys.executable, "-c", program, str(out), "$(POD_IP)", "$$(POD_IP)"])
    pod = wait_for(lambda: (p := get_pod(store, "env")).status.phase == "Succeeded" and p, what="env to finish")
    # Kubernetes' expansion: $(VAR) from the container's env, $$ escapes it.
    assert out.read_text().split() == [pod.status.pod_ip, pod.status.pod_ip, "$(POD_IP)"]


def test_a_restarted_agent_keeps_each_adopted_pods_address(store, agents):
    first = agents()
    port = free_port()
    create_pod(store, "server", [sys.executable, "-c", SERVER, "$(POD_IP)", str(port)], restart="Always")
    before = running(store, "server")
    first.stop()
    agents()
    create_pod(store, "newcomer", ["sleep", "30"], restart="Always")
    newcomer = running(store, "newcomer")
    after = get_pod(store, "server")
    assert after.status.pod_ip == before.status.pod_ip
    assert newcomer.status.pod_ip != after.status.pod_ip
    assert ask(after.status.pod_ip, port) == b"server"  # the adopted process still listens there


def test_a_finished_pod_keeps_its_address_in_status_but_gives_it_back(store, agents):
    agent = agents()
    pod = create_pod(store, "done", ["true"])
    done = wait_for(lambda: (p := get_pod(store, "done")).status.phase == "Succeeded" and p, what="done to finish")
    assert usable(done.status.pod_ip)  # as in Kubernetes, a finished pod's status still names its IP
    wait_for(lambda: agent._ips.get(pod.uid) is None, what="the address to be released")


# --- the allocator -----------------------------------------------------------------------

def test_addresses_avoid_the_host_and_network_and_broadcast_style_octets():
    assert address(0) == "127.1.0.1"
    seen = {address(i) for i in range(0, 100_000, 7)}
    assert all(usable(ip) for ip in seen)
    for ip in ("127.0.0.1", "127.0.5.9", "127.3.4.0", "127.3.4.255", "127.255.1.1", "10.1.2.3", "bogus", None):
        assert not usable(ip)


def test_a_preferred_address_is_kept_when_free_and_replaced_when_taken():
    ips = PodIPs()
    a = ips.assign("uid-a", "127.9.9.9")
    assert a == "127.9.9.9" and ips.assign("uid-a") == a  # stable while held
    b = ips.assign("uid-b", "127.9.9.9")  # taken: b gets another
    assert b != a and usable(b)
    assert ips.assign("uid-c", "127.0.0.1") not in (a, b, "127.0.0.1")  # not one we hand out
    assert ips.release("uid-a") == a
    assert ips.assign("uid-d", a) == a  # free again
    assert len(ips) == 3
