"""`mlplane describe` of the DRA kinds, in process against a real API server over the embedded store:
an allocated claim, a pending claim and why, a pod's claims, a DeviceClass and a ResourceSlice."""

from __future__ import annotations

import pytest

from mlplane.api import Pod
from mlplane.api.core import PodResourceClaimStatus
from mlplane.api.meta import set_condition
from mlplane.api.resource import DeviceClass, ResourceClaim, ResourceSlice
from mlplane.cli.main import main
from mlplane.control.apiserver import ApiServer

DRIVER = "gpu.example.com"
MODEL_SELECTOR = "device.attributes['gpu.example.com'].model == 'H200'"
UNSCHEDULABLE = ("0/3 nodes are available: 2 no device matched selector of request gpu (8 devices checked), "
                 "1 node(s) had untolerated taint.")


@pytest.fixture
def server(store):
    srv = ApiServer(store).start()
    yield srv.url
    srv.stop()


def describe(capsys, server, *argv):
    code = main(["describe", *argv, "-s", server])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def section(out: str, title: str) -> list[str]:
    """The lines of a top-level section (``title:`` up to the next unindented line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{title}:"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def make_claim(store, name, requests, constraints=None):
    devices: dict = {"requests": requests}
    if constraints:
        devices["constraints"] = constraints
    return store.create(ResourceClaim.model_validate({
        "metadata": {"name": name, "namespace": "default"}, "spec": {"devices": devices}}))


def make_pod(store, name, claims):
    return store.create(Pod.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "command": ["true"],
                                 "resources": {"claims": [{"name": c["name"]} for c in claims]}}],
                 "resourceClaims": claims}}))


def allocate(store, claim, pod, devices):
    claim.status = ResourceClaim.model_validate({"metadata": {"name": claim.name}, "status": {
        "allocation": {
            "devices": {"results": [{"request": r, "driver": DRIVER, "pool": "node-1", "device": d, **extra}
                                    for r, d, extra in devices]},
            "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]}},
        "reservedFor": [{"resource": "pods", "name": pod.name, "uid": pod.uid}]}}).status
    return store.update_status(claim)


def test_allocated_claim_shows_requests_devices_node_and_consumer(server, store, capsys):
    claim = make_claim(store, "train-gpus", [
        {"name": "gpu", "exactly": {"deviceClassName": DRIVER, "count": 2,
                                    "selectors": [{"cel": {"expression": MODEL_SELECTOR}}],
                                    "capacity": {"requests": {"memory": "40Gi"}}}},
        {"name": "nic", "firstAvailable": [
            {"name": "fast", "deviceClassName": "nic.example.com", "allocationMode": "All"},
            {"name": "slow", "deviceClassName": "nic.example.com"}]}],
        constraints=[{"requests": ["gpu"], "matchAttribute": f"{DRIVER}/numa"}])
    pod = make_pod(store, "trainer", [{"name": "gpus", "resourceClaimName": "train-gpus"}])
    allocate(store, claim, pod, [("gpu", "gpu-0", {"shareID": "a1b2", "consumedCapacity": {"memory": "40Gi"}}),
                                 ("gpu", "gpu-1", {}), ("nic/slow", "nic-0", {"adminAccess": True})])

    out = describe(capsys, server, "resourceclaim", "train-gpus")
    assert "State:              allocated,reserved" in out
    requests = section(out, "Requests")
    assert "  gpu:" in requests
    assert "    Device Class:       gpu.example.com" in requests
    assert f"    Selectors:          {MODEL_SELECTOR}" in requests
    assert "    Allocation Mode:    ExactCount (count 2)" in requests
    assert "    Capacity Requests:  memory: 40Gi" in requests
    assert "    First Available (in order):" in requests
    assert "      nic/fast:" in requests and "        Allocation Mode:    All" in requests
    assert "Constraints:        matchAttribute gpu.example.com/numa (requests gpu)" in out

    allocation = section(out, "Allocation")
    assert "  Node Selector:      field:metadata.name=node-1" in allocation
    rows = [line.split() for line in allocation[allocation.index("  Devices:") + 1:]]
    assert rows == [["Request", "Driver", "Pool", "Device", "Share", "ID", "Consumed", "Capacity", "Admin", "Access"],
                    ["gpu", DRIVER, "node-1", "gpu-0", "a1b2", "memory=40Gi", "false"],
                    ["gpu", DRIVER, "node-1", "gpu-1", "<none>", "<none>", "false"],
                    ["nic/slow", DRIVER, "node-1", "nic-0", "<none>", "<none>", "true"]]
    assert f"Reserved For:       pods/trainer (uid {pod.uid})" in out
    assert "Waiting:" not in out


def test_pending_claim_says_which_pod_waits_and_why(server, store, capsys):
    make_claim(store, "lonely", [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}])
    out = describe(capsys, server, "resourceclaim", "lonely")
    assert "State:              pending" in out
    assert section(out, "Allocation") == ["Allocation:", "  <none>"]
    assert section(out, "Waiting")[1].startswith("  no pod uses this claim yet")

    # A claim made from a template: the pod names it in status.resourceClaimStatuses only.
    make_claim(store, "trainer-gpu-x7k2p", [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}])
    pod = make_pod(store, "trainer", [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}])
    pod.status.resource_claim_statuses = [PodResourceClaimStatus(name="gpu", resource_claim_name="trainer-gpu-x7k2p")]
    pod.status.conditions = set_condition(pod.status.conditions, "PodScheduled", "False", "Unschedulable",
                                          UNSCHEDULABLE)
    store.update_status(pod)
    make_pod(store, "bystander", [{"name": "gpu", "resourceClaimName": "lonely"}])  # not scheduled yet

    out = describe(capsys, server, "resourceclaim", "trainer-gpu-x7k2p")
    assert section(out, "Waiting") == ["Waiting:",
                                       f"  Pod trainer:        PodScheduled=False Unschedulable: {UNSCHEDULABLE}"]
    out = describe(capsys, server, "resourceclaim", "lonely")
    assert section(out, "Waiting") == ["Waiting:", "  Pod bystander:      not tried by the scheduler yet"]


def test_pod_lists_its_claims_and_their_devices(server, store, capsys):
    claim = make_claim(store, "shared-gpu", [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}])
    pod = make_pod(store, "worker", [{"name": "gpu", "resourceClaimName": "shared-gpu"},
                                     {"name": "scratch", "resourceClaimTemplateName": "one-gpu"},
                                     {"name": "gone", "resourceClaimName": "no-such-claim"}])
    allocate(store, claim, pod, [("gpu", "gpu-3", {})])

    out = describe(capsys, server, "pod", "worker")
    assert section(out, "Resource Claims") == [
        "Resource Claims:",
        "  gpu:                ResourceClaim shared-gpu (allocated,reserved)",
        "                      gpu: gpu.example.com/node-1/gpu-3",
        "  scratch:            <not created yet> (from template one-gpu)",
        "  gone:               ResourceClaim no-such-claim (not found)"]
    assert "Containers:" in out and "Conditions:" in out  # the rest of the pod's account is still there


def test_device_class_and_slice(server, store, capsys):
    store.create(DeviceClass.model_validate({"metadata": {"name": DRIVER}, "spec": {
        "selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}],
        "config": [{"opaque": {"driver": DRIVER, "parameters": {"sharing": "timeSlicing"}}}]}}))
    out = describe(capsys, server, "deviceclass", DRIVER)
    assert f"Selectors:          device.driver == '{DRIVER}'" in out
    assert f'Config:             {DRIVER}: {{"sharing": "timeSlicing"}}' in out

    store.create(ResourceSlice.model_validate({"metadata": {"name": "node-1-gpus"}, "spec": {
        "driver": DRIVER, "nodeName": "node-1", "pool": {"name": "node-1", "generation": 3, "resourceSliceCount": 1},
        "sharedCounters": [{"name": "gpu-0-mem", "counters": {"memory": {"value": "80Gi"}}}],
        "devices": [
            {"name": "gpu-0", "attributes": {"model": {"string": "H200"}, f"{DRIVER}/mig": {"bool": False}},
             "capacity": {"memory": {"value": "80Gi"}},
             "taints": [{"key": "maintenance", "value": "soon", "effect": "NoSchedule"}]},
            {"name": "gpu-0-half", "attributes": {"model": {"string": "H200"}},
             "consumesCounters": [{"counterSet": "gpu-0-mem", "counters": {"memory": {"value": "40Gi"}}}]}]}}))
    out = describe(capsys, server, "resourceslice", "node-1-gpus")
    assert f"Driver:             {DRIVER}" in out
    assert "Pool:               node-1 (generation 3, 1 slice)" in out
    assert "Node:               node-1" in out
    rows = [line.split() for line in section(out, "Devices")[1:]]
    assert rows == [["Name", "Attributes", "Capacity", "Taints"],
                    ["gpu-0", "mig=false,model=H200", "memory=80Gi", "maintenance=soon:NoSchedule"],
                    ["gpu-0-half", "model=H200", "<none>", "<none>"]]
    assert "Shared Counters:    gpu-0-mem: memory=80Gi" in out
    assert "Counter Consumption: gpu-0-half: gpu-0-mem memory=40Gi" in out
