"""DynamicResources PostFilter: a claim allocated where the pod cannot run, used by no one and
allocated by our scheduler, is deallocated so the next attempt can allocate it where the pod fits
(upstream dynamicresources.go PostFilter; dynamicresources_test.go "wrong-topology").

The policy decides (``claims_to_deallocate`` in the cycle state); the live scheduler writes it."""

from __future__ import annotations

import pytest

from conftest import events_about, get_pod, wait_for
from mlplane.api import Node, Pod
from mlplane.api.resource import DeviceClass, ResourceClaim, ResourceSlice
from mlplane.control.controllers.resourceclaim import ResourceClaimController
from mlplane.control.controllers.scheduler import Scheduler
from mlplane.policy.pod.dynamicresources import DEALLOCATED, STATE_KEY, STILL_NOT_SCHEDULABLE
from mlplane.policy.pod.interface import Code
from mlplane.policy.pod.plugins import default_framework
from mlplane.policy.pod.snapshot import PodInfo, Snapshot
from test_dra_scheduling import pending_message, wait_pending

DRIVER = "gpu.example.com"
PROTECTION = "resource.kubernetes.io/delete-protection"
# n1 has the claim's device but too little CPU; n2 has room and a free device.
STUCK = "0/2 nodes are available: 1 Insufficient cpu, 1 resourceclaim not available on the node."


def node(name, cpu):
    return Node.model_validate({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"}}})


def device_class():
    return DeviceClass.model_validate({"metadata": {"name": DRIVER}, "spec": {"selectors": [
        {"cel": {"expression": f"device.driver == '{DRIVER}'"}}]}})


def gpu_slice(node_name):
    return ResourceSlice.model_validate({
        "metadata": {"name": f"{node_name}-{DRIVER}"},
        "spec": {"driver": DRIVER, "nodeName": node_name,
                 "pool": {"name": node_name, "generation": 1, "resourceSliceCount": 1},
                 "devices": [{"name": "gpu-0", "attributes": {"model": {"string": "a100"}}}]}})


def claim_on_n1(name="held", *, finalizer=True, reserved_for=None, uid=None):
    """A claim allocated (by hand) to gpu-0 of n1, usable from n1 only."""
    meta = {"name": name, "namespace": "default"}
    if uid:
        meta["uid"], meta["resourceVersion"] = uid, "7"
    if finalizer:
        meta["finalizers"] = [PROTECTION]
    status = {"allocation": {
        "devices": {"results": [{"request": "gpu", "driver": DRIVER, "pool": "n1", "device": "gpu-0"}]},
        "nodeSelector": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}
    if reserved_for:
        status["reservedFor"] = reserved_for
    return ResourceClaim.model_validate({
        "metadata": meta, "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}},
        "status": status})


def pod(name="user", claim="held", *, cpu="4", uid=None, node_name=None):
    spec = {"containers": [{"name": "main", "command": ["true"],
                            "resources": {"requests": {"cpu": cpu}, "claims": [{"name": "gpu"}]}}],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}]}
    if node_name:
        spec["nodeName"] = node_name
    meta = {"name": name, "namespace": "default"}
    if uid:
        meta["uid"] = uid
    return Pod.model_validate({"metadata": meta, "spec": spec})


# -- the pure decision --------------------------------------------------------------------------------

def schedule(claim, the_pod=None):
    snapshot = Snapshot.build([node("n1", "2"), node("n2", "8")])
    devices = snapshot.devices
    devices.set_class(device_class())
    devices.set_slice(gpu_slice("n1"))
    devices.set_slice(gpu_slice("n2"))
    if claim is not None:
        devices.set_claim(claim)
    the_pod = the_pod or pod(uid="u-user")
    return default_framework().schedule(PodInfo(the_pod), snapshot)


def test_post_filter_picks_an_unused_claim_it_allocated_and_says_so():
    result = schedule(claim_on_n1(uid="c-1"))
    assert result.status.code is Code.UNSCHEDULABLE and result.node is None
    assert result.message == f"{STUCK} {DEALLOCATED}"
    assert DEALLOCATED == "deallocation of ResourceClaim completed"  # upstream's words
    [released] = result.state.read(STATE_KEY).claims_to_deallocate
    # Written as the cycle saw it (resourceVersion, UID), everything the allocation said cleared.
    assert (released.key, released.uid, released.metadata.resource_version) == ("default/held", "c-1", "7")
    assert (released.status.allocation, released.status.reserved_for, released.status.devices) == (None, None, None)
    assert released.metadata.finalizers == [PROTECTION]  # upstream PostFilter leaves the finalizer


def test_post_filter_also_releases_a_claim_reserved_for_this_pod_alone():
    mine = [{"resource": "pods", "name": "user", "uid": "u-user"}]
    result = schedule(claim_on_n1(uid="c-1", reserved_for=mine))
    assert result.message == f"{STUCK} {DEALLOCATED}"
    [released] = result.state.read(STATE_KEY).claims_to_deallocate
    assert released.status.reserved_for is None


@pytest.mark.parametrize("claim", [
    claim_on_n1(uid="c-1", finalizer=False),  # someone else's allocation
    claim_on_n1(uid="c-1", reserved_for=[{"resource": "pods", "name": "other", "uid": "u-other"}]),
    claim_on_n1(uid="c-1", reserved_for=[{"resource": "pods", "name": "user", "uid": "u-user"},
                                         {"resource": "pods", "name": "other", "uid": "u-other"}]),
], ids=["not-ours", "reserved-for-another-pod", "shared-with-another-pod"])
def test_post_filter_leaves_claims_it_may_not_release(claim):
    result = schedule(claim)
    assert result.status.code is Code.UNSCHEDULABLE
    assert result.message == f"{STUCK} {STILL_NOT_SCHEDULABLE}"
    assert result.state.read(STATE_KEY).claims_to_deallocate == []


def test_post_filter_says_nothing_when_no_claim_was_in_the_way():
    # Every node fails for CPU before DynamicResources looks at it: no claim to blame.
    result = schedule(claim_on_n1(uid="c-1"), pod(uid="u-user", cpu="16"))
    assert result.message == "0/2 nodes are available: 2 Insufficient cpu."
    assert result.state.read(STATE_KEY).claims_to_deallocate == []
    # A pod without claims: the message is the diagnosis alone, as before.
    plain = Pod.model_validate({"metadata": {"name": "plain", "namespace": "default", "uid": "u-plain"},
                                "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "16"}}}]}})
    result = schedule(None, plain)
    assert result.message == "0/2 nodes are available: 2 Insufficient cpu."


# -- live: the scheduler writes the decision -----------------------------------------------------------

@pytest.fixture
def cluster(store):
    """Nodes, class, slices; the test adds claims and pods, then starts the plane with ``start()``
    so the first attempt already sees the claim as it was made."""
    store.create(node("n1", "2"))
    store.create(node("n2", "8"))
    store.create(device_class())
    store.create(gpu_slice("n1"))
    store.create(gpu_slice("n2"))
    started = []

    def start():
        started.extend([ResourceClaimController(store).start(), Scheduler(store, unschedulable_timeout=60).start()])

    yield store, start
    for part in reversed(started):
        part.stop()


def make_claim(store, claim):
    """Create the claim and write its status (the create path keeps no status)."""
    status = claim.status
    created = store.create(claim.model_copy(update={"status": type(status)()}))
    return store.update_status(created.model_copy(update={"status": status}))


def test_a_claim_allocated_where_the_pod_cannot_fit_is_deallocated_and_allocated_again_where_it_can(cluster):
    store, start = cluster
    made = make_claim(store, claim_on_n1())
    assert made.status.allocation.devices.results[0].pool == "n1"
    user = store.create(pod())
    start()
    assert wait_for(lambda: get_pod(store, "user").spec.node_name, what="pod bound") == "n2"
    claim = store.get(ResourceClaim, "default", "held")
    [result] = claim.status.allocation.devices.results
    assert (result.pool, result.device) == ("n2", "gpu-0")
    assert claim.status.allocation.node_selector.node_selector_terms[0].match_fields[0].values == ["n2"]
    assert [(r.name, r.uid) for r in claim.status.reserved_for] == [("user", user.uid)]
    assert claim.metadata.finalizers == [PROTECTION]
    # The attempt that deallocated said so, the way kube-scheduler composes PostFilter's message.
    failed = wait_for(lambda: [e for e in events_about(store, "user") if e.reason == "FailedScheduling"],
                      what="FailedScheduling event")
    assert [e.message for e in failed] == [f"{STUCK} {DEALLOCATED}"]
    assert failed[0].type == "Warning"


def test_an_allocation_the_scheduler_did_not_make_is_not_undone(cluster):
    store, start = cluster
    make_claim(store, claim_on_n1(finalizer=False))
    store.create(pod())
    start()
    # The message proves PostFilter looked at the claim and let it be.
    wait_pending(store, "user", f"{STUCK} {STILL_NOT_SCHEDULABLE}")
    claim = store.get(ResourceClaim, "default", "held")
    assert claim.status.allocation.devices.results[0].pool == "n1"
    assert get_pod(store, "user").spec.node_name is None


def test_a_claim_reserved_for_another_pod_is_not_deallocated(cluster):
    store, start = cluster
    other = store.create(pod("other", cpu="1", node_name="n1"))
    make_claim(store, claim_on_n1(reserved_for=[{"resource": "pods", "name": "other", "uid": other.uid}]))
    store.create(pod())
    start()
    wait_pending(store, "user", f"{STUCK} {STILL_NOT_SCHEDULABLE}")
    claim = store.get(ResourceClaim, "default", "held")
    assert claim.status.allocation.devices.results[0].pool == "n1"
    assert [r.name for r in claim.status.reserved_for] == ["other"]
    assert pending_message(store, "user") == f"{STUCK} {STILL_NOT_SCHEDULABLE}"


def test_the_deallocation_is_written_only_over_the_claim_the_cycle_saw(store):
    """The scheduler writes PostFilter's decision under the resourceVersion the cycle read: a claim
    changed since (reserved by another pod, say) is left as it is now, and the pod tried again."""
    scheduler = Scheduler(store)
    try:
        seen = make_claim(store, claim_on_n1())
        decided = seen.model_copy(update={"status": type(seen.status)()})
        store.patch(ResourceClaim, "default", "held", {"status": {"reservedFor": [
            {"resource": "pods", "name": "other", "uid": "u-other"}]}}, subresource="status")
        scheduler._deallocate(PodInfo(pod(uid="u-user")), [decided])  # Conflict: nothing written
        now = store.get(ResourceClaim, "default", "held")
        assert now.status.allocation is not None and [r.name for r in now.status.reserved_for] == ["other"]

        store.patch(ResourceClaim, "default", "held", {"status": {"reservedFor": None}}, subresource="status")
        current = store.get(ResourceClaim, "default", "held")
        scheduler._deallocate(PodInfo(pod(uid="u-user")), [current.model_copy(
            update={"status": type(current.status)()})])
        released = store.get(ResourceClaim, "default", "held")
        assert (released.status.allocation, released.status.reserved_for) == (None, None)
        assert released.metadata.finalizers == [PROTECTION]
    finally:
        scheduler.stop()
