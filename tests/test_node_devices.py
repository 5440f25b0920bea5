"""Devices on the node: the agent publishes ResourceSlices from its node configuration (or NVML), keeps
them in step with the file, and shows a container its allocated devices in the environment."""

import os
import sys

import pytest

from conftest import events, get_pod, wait_for
from mlplane.api import Node, Pod
from mlplane.api.loader import load_paths
from mlplane.api.resource import ResourceClaim, ResourceSlice
from mlplane.control.node import devices, logs
from mlplane.control.node.agent import NodeAgent

NODE = "node-a"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples-dra")

EIGHT_GPUS = """
devices:
- driver: gpu.example.com
  count: 8
  attributes: {type: gpu, productName: Sim H100}
  capacity: {memory: 80Gi}
  counters: {memory: 80Gi, multiprocessors: "132"}
  partitions:
  - {profile: 3g.40gb, count: 2, capacity: {memory: 40Gi}, consumes: {memory: 40Gi, multiprocessors: "66"}}
"""


@pytest.fixture
def agents(store, tmp_path):
    made = []

    def start(**kwargs):
        agent = NodeAgent(store, tmp_path / "data", NODE, crash_backoff=0.05, **kwargs)
        made.append(agent)
        return agent.start()

    yield start
    for agent in reversed(made):
        agent.kill_all()


def write(path, text, stamp):
    path.write_text(text)
    os.utime(path, ns=(stamp, stamp))  # a distinct mtime, however fast the test runs
    return path


def slices(store, driver=None):
    return sorted((s for s in store.list(ResourceSlice).items if driver is None or s.spec.driver == driver),
                  key=lambda s: s.name)


def test_agent_publishes_config_devices_owned_by_its_node(store, agents, tmp_path):
    agent = agents(node_config=write(tmp_path / "node.yaml", EIGHT_GPUS, 10**18))
    node = store.get(Node, None, NODE)
    counters, devs = slices(store, "gpu.example.com")
    for s in (counters, devs):
        assert s.spec.node_name == NODE
        assert (s.spec.pool.name, s.spec.pool.generation, s.spec.pool.resource_slice_count) == (NODE, 1, 2)
        (owner,) = s.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("Node", NODE, node.uid)
    assert [c.name for c in counters.spec.shared_counters] == [f"gpu-{i}-counter-set" for i in range(8)]
    names = [d.name for d in devs.spec.devices]
    assert names[:3] == ["gpu-0", "gpu-0-mig-3g40gb-0", "gpu-0-mig-3g40gb-1"] and len(names) == 24
    gpu3 = next(d for d in devs.spec.devices if d.name == "gpu-3")
    assert gpu3.attributes["index"].int_value == 3 and gpu3.attributes["productName"].string_value == "Sim H100"
    part = next(d for d in devs.spec.devices if d.name == "gpu-3-mig-3g40gb-1")
    assert (part.attributes["type"].string_value, part.attributes["profile"].string_value) == ("mig", "3g.40gb")
    assert part.consumes_counters[0].counter_set == "gpu-3-counter-set"
    assert agent.publish_devices() is False  # nothing changed: no write, no new generation
    assert [s.spec.pool.generation for s in slices(store)] == [1, 1]


def test_changed_config_bumps_the_generation_and_removes_what_went(store, agents, tmp_path):
    path = write(tmp_path / "node.yaml", EIGHT_GPUS, 10**18)
    agent = agents(node_config=path)
    write(path, "devices:\n- {driver: gpu.example.com, count: 2, capacity: {memory: 80Gi}}\n"
                "- {driver: nic.example.com, name: nic}\n", 10**18 + 1)
    assert agent.publish_devices() is True
    (gpus,) = slices(store, "gpu.example.com")  # the counter slice is gone with the counters
    assert gpus.name == f"{NODE}-gpu.example.com-0"
    assert (gpus.spec.pool.generation, gpus.spec.pool.resource_slice_count) == (2, 1)
    assert [d.name for d in gpus.spec.devices] == ["gpu-0", "gpu-1"]
    assert [d.name for d in slices(store, "nic.example.com")[0].spec.devices] == ["nic-0"]
    # A broken edit keeps what was published, and the agent keeps running.
    write(path, "devices:\n- {driver: gpu.example.com, count: 0}\n", 10**18 + 2)
    assert agent.publish_devices() is False
    assert len(slices(store)) == 2


def test_restart_with_another_config_replaces_the_slices(store, agents, tmp_path):
    first = agents(node_config=write(tmp_path / "a.yaml", EIGHT_GPUS, 10**18))
    first.kill_all()
    agents(node_config=write(tmp_path / "b.yaml", "devices:\n- {driver: tpu.example.com, name: tpu}\n", 10**18))
    assert [s.spec.driver for s in slices(store)] == ["tpu.example.com"]
    assert slices(store)[0].spec.pool.generation == 1


def test_slices_of_others_are_left_alone(store, agents, tmp_path):
    theirs = ResourceSlice.model_validate({
        "metadata": {"name": "manual"},
        "spec": {"driver": "gpu.example.com", "nodeName": "node-b",
                 "pool": {"name": "node-b", "generation": 1, "resourceSliceCount": 1}, "devices": [{"name": "x"}]}})
    store.create(theirs)
    agents(node_config=write(tmp_path / "node.yaml", "devices: []\n", 10**18))
    assert [s.name for s in slices(store)] == ["manual"]


@pytest.mark.parametrize("text, message", [
    ("devices:\n- {driver: gpu.example.com, count: -1}\n", "devices[0].count: Invalid value: -1"),
    ("devices:\n- {count: 2}\n", "devices[0].driver: Required value"),
    ("devices:\n- {driver: gpu.example.com, colour: red}\n", "devices[0].colour: unknown field"),
    ("devices:\n- {driver: gpu.example.com, partitions: [{profile: 1g, consumes: {memory: 1Gi}}]}\n",
     "devices[0].partitions: partitions need `counters`"),
    ("devices:\n- {driver: Bad_Driver}\n", "driver Bad_Driver: spec.driver"),
    ("devices: [\n", "invalid YAML"),
])
def test_bad_node_config_is_a_clear_error(store, tmp_path, text, message):
    path = write(tmp_path / "node.yaml", text, 10**18)
    with pytest.raises(devices.NodeConfigError) as e:
        NodeAgent(store, tmp_path / "data", NODE, node_config=path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_without_nvml_there_are_no_gpus_and_the_agent_runs(store, agents, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # what a machine without nvidia-ml-py has: ImportError
    assert devices.nvml_devices() == []
    agents()
    assert slices(store) == []


def claim_for(store, pod, results):
    claim = store.create(ResourceClaim.model_validate({
        "metadata": {"name": f"{pod.name}-gpu", "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}},
                                          {"name": "nic", "exactly": {"deviceClassName": "nic.example.com"}}]}}}))
    claim.status = ResourceClaim.model_validate({
        "metadata": {"name": claim.name}, "status": {
            "allocation": {"devices": {"results": [
                {"request": r, "driver": d, "pool": NODE, "device": dev} for r, d, dev in results]}},
            "reservedFor": [{"resource": "pods", "name": pod.name, "uid": pod.uid}]}}).status
    return store.update_status(claim)


def make_pod(store, name, claim_refs, *, template=False):
    claim = {"name": "gpu", "resourceClaimTemplateName": "t"} if template else \
        {"name": "gpu", "resourceClaimName": f"{name}-gpu"}
    container = {"name": "main", "command": ["sh", "-c", "echo cuda=${CUDA_VISIBLE_DEVICES-unset} "
                                                          "devices=${MLPLANE_DRA_DEVICES-unset}"]}
    if claim_refs is not None:
        container["resources"] = {"claims": claim_refs}
    return Pod.model_validate({"metadata": {"name": name, "namespace": "default"},
                               "spec": {"nodeName": NODE, "restartPolicy": "Never", "resourceClaims": [claim],
                                        "containers": [container]}})


def output(store, tmp_path, name):
    pod = wait_for(lambda: (p := get_pod(store, name)).status.phase == "Succeeded" and p, what=f"{name} Succeeded")
    return logs.container_log(tmp_path / "data", "default", name, pod.uid, "main", 0).read_text().strip()


GPU_AND_NIC = ("devices:\n- {driver: gpu.example.com, count: 4}\n"
               "slices:\n- {driver: nic.example.com, devices: [{name: nic-0}]}\n")  # no index: not a GPU


def test_container_sees_its_allocated_devices(store, agents, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "from-the-agent")
    agents(node_config=write(tmp_path / "node.yaml", GPU_AND_NIC, 10**18))
    # The claim is allocated before the pod is bound, as the scheduler does.
    pending = make_pod(store, "train", [{"name": "gpu"}])
    pending.spec.node_name = None
    pod = store.create(pending)
    claim_for(store, pod, [("gpu", "gpu.example.com", "gpu-2"), ("gpu", "gpu.example.com", "gpu-0"),
                           ("nic", "nic.example.com", "nic-0")])
    store.bind("default", pod.name, NODE)
    assert output(store, tmp_path, "train") == (
        "cuda=2,0 devices=gpu.example.com/node-a/gpu-2,gpu.example.com/node-a/gpu-0,nic.example.com/node-a/nic-0")


def test_container_sees_only_the_request_it_names(store, agents, tmp_path):
    agents(node_config=write(tmp_path / "node.yaml", GPU_AND_NIC, 10**18))
    pod = make_pod(store, "nic-only", [{"name": "gpu", "request": "nic"}])
    pod.spec.node_name = None
    pod = store.create(pod)
    claim_for(store, pod, [("gpu", "gpu.example.com", "gpu-1"), ("nic", "nic.example.com", "nic-0")])
    store.bind("default", pod.name, NODE)
    assert output(store, tmp_path, "nic-only") == "cuda=unset devices=nic.example.com/node-a/nic-0"


def test_container_naming_no_claim_gets_no_devices(store, agents, tmp_path):
    agents(node_config=write(tmp_path / "node.yaml", GPU_AND_NIC, 10**18))
    pod = make_pod(store, "plain", None)
    pod.spec.node_name = None
    pod = store.create(pod)
    claim_for(store, pod, [("gpu", "gpu.example.com", "gpu-1")])
    store.bind("default", pod.name, NODE)
    assert output(store, tmp_path, "plain") == "cuda=unset devices=unset"


def test_container_waits_for_its_claim(store, agents, tmp_path):
    agents(node_config=write(tmp_path / "node.yaml", GPU_AND_NIC, 10**18))
    pod = store.create(make_pod(store, "early", [{"name": "gpu"}], template=True))
    wait_for(lambda: any(r == "FailedPrepareDynamicResources" for _, r, _ in events(store, "early")),
             what="FailedPrepareDynamicResources event")
    waiting = get_pod(store, "early")
    assert waiting.status.phase == "Pending"
    assert waiting.status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    claim = claim_for(store, pod, [("gpu", "gpu.example.com", "gpu-3")])
    wire = get_pod(store, "early").to_dict()
    wire["status"]["resourceClaimStatuses"] = [{"name": "gpu", "resourceClaimName": claim.name}]
    store.update_status(Pod.model_validate(wire))
    assert output(store, tmp_path, "early") == "cuda=3 devices=gpu.example.com/node-a/gpu-3"


def test_dra_example_loads_and_its_node_config_is_valid():
    docs = load_paths([os.path.join(EXAMPLE, "manifests")])
    kinds = sorted({d.obj.kind for d in docs})
    assert kinds == ["DeviceClass", "Job", "ResourceClaimTemplate"]
    inventory = devices.load_node_config(os.path.join(EXAMPLE, "node.yaml"))
    built = [s for entry in inventory for s in devices.build_slices("node-a", entry, 1)]
    assert built and all(not s.semantic_errors() for s in built)
    shared = [d for s in built for d in s.spec.devices or [] if d.allow_multiple_allocations]
    assert [d.attributes["index"].int_value for d in shared] == [8, 9]
