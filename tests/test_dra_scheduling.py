"""DRA scheduling end to end on a real embedded store: the Scheduler with its DynamicResources
plugin and the ResourceClaim controller, with Nodes and ResourceSlices made here (no node agent)."""

from __future__ import annotations

import pytest

from conftest import events_about, get_pod, wait_for
from mlplane.api import Node, Pod
from mlplane.api.meta import find_condition
from mlplane.api.resource import DeviceClass, ResourceClaim, ResourceClaimTemplate, ResourceSlice
from mlplane.control.controllers.resourceclaim import ResourceClaimController
from mlplane.control.controllers.scheduler import Scheduler

DRIVER = "gpu.example.com"


def make_node(store, name):
    return store.create(Node.model_validate({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}}))


def make_class(store, name=DRIVER, extra=""):
    expression = f"device.driver == '{DRIVER}'" + (f" && {extra}" if extra else "")
    return store.create(DeviceClass.model_validate({
        "metadata": {"name": name}, "spec": {"selectors": [{"cel": {"expression": expression}}]}}))


def make_slice(store, node, models):
    """One pool on ``node`` with a GPU per entry of ``models`` (gpu-0, gpu-1...)."""
    devices = [{"name": f"gpu-{i}", "attributes": {"model": {"string": m}}} for i, m in enumerate(models)]
    return store.create(ResourceSlice.model_validate({
        "metadata": {"name": f"{node}-{DRIVER}"},
        "spec": {"driver": DRIVER, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                 "devices": devices}}))


def make_template(store, name="one-gpu", device_class=DRIVER, selector=None):
    exactly: dict = {"deviceClassName": device_class}
    if selector:
        exactly["selectors"] = [{"cel": {"expression": selector}}]
    return store.create(ResourceClaimTemplate.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"metadata": {"labels": {"team": "ml"}},
                 "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}}}))


def make_pod(store, name, template="one-gpu"):
    return store.create(Pod.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "command": ["true"], "resources": {"claims": [{"name": "gpu"}]}}],
                 "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template}]}}))


def claims_of(store, pod_name):
    pod = get_pod(store, pod_name)
    names = [s.resource_claim_name for s in pod.status.resource_claim_statuses or []]
    return [store.get(ResourceClaim, "default", n) for n in names]


def pending_message(store, name):
    cond = find_condition(get_pod(store, name).status.conditions, "PodScheduled")
    return cond.message if cond is not None and cond.status == "False" else None


def wait_pending(store, name, expected):
    """Wait until the pod's PodScheduled=False message is ``expected`` (earlier attempts may say
    it still waits for its claim to be made); fail showing the last message seen."""
    try:
        wait_for(lambda: pending_message(store, name) == expected, what=f"pod {name} pending")
    except AssertionError:
        assert pending_message(store, name) == expected
    return expected


@pytest.fixture
def plane(store):
    started = [ResourceClaimController(store).start(), Scheduler(store, unschedulable_timeout=60).start()]
    yield store
    for part in reversed(started):
        part.stop()


def test_claim_from_template_is_allocated_on_the_right_node_before_binding(plane):
    store = plane
    make_node(store, "n1")
    make_node(store, "n2")
    make_class(store)
    make_slice(store, "n2", ["a100"])
    make_template(store)
    pod = make_pod(store, "trainer")
    bound = wait_for(lambda: get_pod(store, "trainer").spec.node_name, what="pod bound")
    assert bound == "n2"
    trainer = get_pod(store, "trainer")
    [claim] = claims_of(store, "trainer")
    assert [(s.name, s.resource_claim_name) for s in trainer.status.resource_claim_statuses] == [("gpu", claim.name)]
    assert claim.name.startswith("trainer-gpu-")
    assert claim.labels == {"team": "ml"}
    assert claim.metadata.annotations["resource.kubernetes.io/pod-claim-name"] == "gpu"
    [owner] = claim.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Pod", "trainer", pod.uid, True)
    wire = claim.to_dict()["status"]
    assert wire["allocation"]["devices"]["results"] == [
        {"request": "gpu", "driver": DRIVER, "pool": "n2", "device": "gpu-0"}]
    assert wire["allocation"]["nodeSelector"] == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}
    assert wire["reservedFor"] == [{"resource": "pods", "name": "trainer", "uid": pod.uid}]


def test_two_pods_compete_for_one_device_and_the_loser_gets_it_once_the_winner_is_gone(plane):
    store = plane
    make_node(store, "n1")
    make_node(store, "n2")
    make_class(store)
    make_slice(store, "n2", ["a100"])
    make_template(store)
    make_pod(store, "first")
    wait_for(lambda: get_pod(store, "first").spec.node_name, what="first pod bound")
    make_pod(store, "second")
    message = wait_pending(store, "second", "0/2 nodes are available: 1 all 1 devices checked for request gpu "
                                            "are in use, 1 no devices available for request gpu.")
    assert find_condition(get_pod(store, "second").status.conditions, "PodScheduled").reason == "Unschedulable"
    failed = wait_for(lambda: [e for e in events_about(store, "second")
                               if e.reason == "FailedScheduling" and e.message == message], what="FailedScheduling event")
    assert failed[0].type == "Warning"
    [first_claim] = claims_of(store, "first")

    store.delete(Pod, "default", "first", grace_period_seconds=0)
    assert wait_for(lambda: get_pod(store, "second").spec.node_name, what="second pod bound") == "n2"
    [second_claim] = claims_of(store, "second")
    assert second_claim.status.allocation.devices.results[0].device == "gpu-0"
    assert [r.name for r in second_claim.status.reserved_for] == ["second"]
    assert not store.list(ResourceClaim, "default", field_selector=f"metadata.name={first_claim.name}").items


def test_unmatched_selectors_say_why_per_node(plane):
    store = plane
    for n in ("n1", "n2", "n3"):
        make_node(store, n)
    make_class(store)
    make_slice(store, "n1", ["t4", "t4", "t4", "t4"])
    make_slice(store, "n2", ["t4", "t4", "t4", "t4"])
    make_template(store, selector=f"device.attributes['{DRIVER}'].model == 'a100'")
    make_pod(store, "picky")
    wait_pending(store, "picky", "0/3 nodes are available: 1 no devices available for request gpu, "
                                 "2 no device matched selector of request gpu (4 devices checked).")
    make_slice(store, "n3", ["t4", "a100"])  # a new slice retries the pod
    assert wait_for(lambda: get_pod(store, "picky").spec.node_name, what="pod bound") == "n3"
    [claim] = claims_of(store, "picky")
    assert claim.status.allocation.devices.results[0].device == "gpu-1"


def test_missing_device_class_is_a_clear_pending_reason_until_it_is_created(plane):
    store = plane
    make_node(store, "n1")
    make_slice(store, "n1", ["a100"])
    make_template(store)
    make_pod(store, "early")
    wait_pending(store, "early", f"0/1 nodes are available: request gpu: device class {DRIVER} does not exist.")
    make_class(store)
    assert wait_for(lambda: get_pod(store, "early").spec.node_name, what="pod bound") == "n1"


def test_missing_template_is_reported_and_the_pod_waits_for_its_claim(plane):
    store = plane
    make_node(store, "n1")
    make_class(store)
    make_slice(store, "n1", ["a100"])
    make_pod(store, "orphan", template="later")
    wait_pending(store, "orphan", '0/1 nodes are available: waiting for resource claim "gpu" to be created '
                                  'from template "later".')
    warned = wait_for(lambda: [e for e in events_about(store, "orphan") if e.reason == "FailedResourceClaimCreation"],
                      what="FailedResourceClaimCreation event")
    assert warned[0].type == "Warning"
    assert "resource claim template 'later' not found" in warned[0].message
    make_template(store, name="later")
    assert wait_for(lambda: get_pod(store, "orphan").spec.node_name, what="pod bound") == "n1"
    assert len(claims_of(store, "orphan")) == 1


def test_a_shared_claim_is_released_only_when_its_last_pod_is_gone(plane):
    store = plane
    make_node(store, "n1")
    make_node(store, "n2")
    make_class(store)
    make_slice(store, "n2", ["a100"])
    store.create(ResourceClaim.model_validate({
        "metadata": {"name": "shared", "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}}}))
    for name in ("a", "b"):
        store.create(Pod.model_validate({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "main", "command": ["true"]}],
                     "resourceClaims": [{"name": "gpu", "resourceClaimName": "shared"}]}}))
    for name in ("a", "b"):
        assert wait_for(lambda: get_pod(store, name).spec.node_name, what=f"pod {name} bound") == "n2"
    claim = store.get(ResourceClaim, "default", "shared")
    assert sorted(r.name for r in claim.status.reserved_for) == ["a", "b"]
    store.delete(Pod, "default", "a", grace_period_seconds=0)
    wait_for(lambda: [r.name for r in store.get(ResourceClaim, "default", "shared").status.reserved_for or []]
             == ["b"], what="a released")
    assert store.get(ResourceClaim, "default", "shared").status.allocation is not None
    store.delete(Pod, "default", "b", grace_period_seconds=0)
    released = wait_for(lambda: (c := store.get(ResourceClaim, "default", "shared")).status.allocation is None and c,
                        what="claim deallocated")
    assert released.status.reserved_for is None


def _shared_claim_and_pod(store, pod="user"):
    make_node(store, "n1")
    make_class(store)
    make_slice(store, "n1", ["a100"])
    store.create(ResourceClaim.model_validate({
        "metadata": {"name": "shared", "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}}}))
    store.create(Pod.model_validate({
        "metadata": {"name": pod, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "command": ["true"]}],
                 "resourceClaims": [{"name": "gpu", "resourceClaimName": "shared"}]}}))
    wait_for(lambda: get_pod(store, pod).spec.node_name, what="pod bound")


def test_an_allocated_claim_is_delete_protected_until_its_last_consumer_is_gone(plane):
    # Upstream: the scheduler adds resource.kubernetes.io/delete-protection before writing the
    # allocation; the resourceclaim controller removes it after deallocating (controller.go syncClaim).
    store = plane
    _shared_claim_and_pod(store)
    claim = store.get(ResourceClaim, "default", "shared")
    assert claim.metadata.finalizers == ["resource.kubernetes.io/delete-protection"]
    store.delete(ResourceClaim, "default", "shared")
    held = store.get(ResourceClaim, "default", "shared")  # still there: a running pod holds it
    assert held.metadata.deletion_timestamp and held.status.allocation is not None
    store.delete(Pod, "default", "user", grace_period_seconds=0)
    wait_for(lambda: not store.list(ResourceClaim, "default").items, what="claim gone once unused")


def test_an_allocation_the_scheduler_did_not_make_is_kept_when_its_consumer_leaves(plane):
    store = plane
    make_node(store, "n1")
    results = [{"request": "gpu", "driver": DRIVER, "pool": "n1", "device": "gpu-0"}]
    claim = store.create(ResourceClaim.model_validate({
        "metadata": {"name": "by-hand", "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}}}))
    claim = store.update_status(ResourceClaim.model_validate({**claim.to_dict(), "status": {
        "allocation": {"devices": {"results": results}},
        "reservedFor": [{"resource": "pods", "name": "gone", "uid": "0000"}]}}))
    kept = wait_for(lambda: (c := store.get(ResourceClaim, "default", "by-hand")).status.reserved_for is None and c,
                    what="stale consumer removed")
    assert kept.to_dict()["status"]["allocation"]["devices"]["results"] == results


def test_prebind_never_writes_a_stale_device_choice(store):
    """The allocation chosen in a cycle is written only if the claim is as the cycle saw it: a claim
    released meanwhile, or changed while unallocated, fails the binding (the pod is tried again),
    so two claims never end up holding the same device."""
    from mlplane.api.resource import ResourceClaim
    from mlplane.control.controllers.scheduler import ClaimWriter
    from mlplane.policy.pod.dynamicresources import STATE_KEY, ClaimsState
    from mlplane.policy.pod.interface import Code, CycleState
    from mlplane.policy.pod.snapshot import PodInfo

    def claim(name):
        return store.create(ResourceClaim.model_validate({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}}]}}}))

    allocation = {"devices": {"results": [{"request": "gpu", "driver": "gpu.example.com", "pool": "n1",
                                            "device": "gpu-0"}]}}
    pod = PodInfo(Pod.model_validate({"metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
                                      "spec": {"containers": [{"name": "c"}]}}))

    def prebind(seen, *, allocating):
        wanted = seen.model_copy(deep=True)
        wanted.status = wanted.status.model_validate({"allocation": allocation})
        state = CycleState()
        state.write(STATE_KEY, ClaimsState(None, [seen], [seen] if allocating else [], None, None, [],
                                           claims_to_write=[wanted],
                                           base_versions={seen.key: seen.metadata.resource_version}))
        return ClaimWriter(store).pre_bind(state, pod, "n1")

    # Allocated when the cycle began, released before PreBind: not written back.
    held = claim("held")
    held = store.patch(ResourceClaim, "default", "held", {"status": {"allocation": allocation}}, subresource="status")
    store.patch(ResourceClaim, "default", "held", {"status": {"allocation": None}}, subresource="status")
    status = prebind(held, allocating=False)
    assert status.code is Code.UNSCHEDULABLE and "deallocated meanwhile" in status.message
    assert store.get(ResourceClaim, "default", "held").status.allocation is None

    # Unallocated and changed since the cycle read it: the choice is not written either.
    fresh = claim("fresh")
    store.patch(ResourceClaim, "default", "fresh", {"metadata": {"labels": {"touched": "yes"}}})
    status = prebind(fresh, allocating=True)
    assert status.code is Code.UNSCHEDULABLE and "changed meanwhile" in status.message

    # Deleted meanwhile, or being deleted: the pod is tried again (not dropped), nothing is written.
    gone = claim("gone")
    store.delete(ResourceClaim, "default", "gone")
    status = prebind(gone, allocating=True)
    assert status.code is Code.UNSCHEDULABLE and "was deleted" in status.message
    going = claim("going")
    going = store.patch(ResourceClaim, "default", "going", {"metadata": {"finalizers": ["example.com/hold"]}})
    store.delete(ResourceClaim, "default", "going")
    status = prebind(going, allocating=True)
    assert status.code is Code.UNSCHEDULABLE and "got deleted in the meantime" in status.message
    assert store.get(ResourceClaim, "default", "going").status.allocation is None

    # Unchanged: allocation and reservedFor are written.
    calm = claim("calm")
    assert prebind(calm, allocating=True).is_success
    written = store.get(ResourceClaim, "default", "calm").status
    assert written.allocation.devices.results[0].device == "gpu-0" and written.reserved_for[0].uid == "u-1"


def test_an_in_flight_allocation_holds_its_devices_across_other_changes_to_the_claim():
    """Between Reserve and the allocation reaching the store, the claim may change in other ways
    (PreBind first adds its finalizer; a user edits a label): its devices must not look free
    meanwhile (upstream DynamicResources.inFlightAllocations)."""
    from mlplane.policy.pod.claims import DeviceSnapshot

    def claim(version, *, allocated=False, labels=None):
        status = {}
        if allocated:
            status = {"allocation": {"devices": {"results": [
                {"request": "gpu", "driver": DRIVER, "pool": "n1", "device": "gpu-0"}]}},
                "reservedFor": [{"resource": "pods", "name": "p", "uid": "u-1"}]}
        return ResourceClaim.model_validate({
            "metadata": {"name": "c", "namespace": "default", "uid": "c-1", "resourceVersion": version,
                         "labels": labels or {}},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}},
            "status": status})

    snapshot = DeviceSnapshot()
    snapshot.set_claim(claim("1"))
    snapshot.assume_claim(claim("1", allocated=True), "u-1")
    snapshot.set_claim(claim("2", labels={"edited": "yes"}))  # not the allocation yet
    assert snapshot.is_assumed("default/c")
    assert [c.name for c in snapshot.allocated_claims()] == ["c"]
    snapshot.set_claim(claim("3", allocated=True))  # the allocation landed: the store's copy counts
    assert not snapshot.is_assumed("default/c")
    assert [c.name for c in snapshot.allocated_claims()] == ["c"]

    snapshot.set_claim(claim("4"))
    snapshot.assume_claim(claim("4", allocated=True), "u-1")
    snapshot.forget_claim("default/c")  # Unreserve after a failed PreBind frees the devices
    assert snapshot.allocated_claims() == []


def test_a_reservation_on_a_shared_claim_is_confirmed_even_if_another_consumer_left_meanwhile():
    """Reserve assumed the claim with consumers [A, B]; A left before PreBind wrote [B]. The store's
    copy confirms B's reservation: once the claim is released later, its devices must be free."""
    from mlplane.policy.pod.claims import DeviceSnapshot

    def claim(version, consumers):
        status = {}
        if consumers:
            status = {"allocation": {"devices": {"results": [
                {"request": "gpu", "driver": DRIVER, "pool": "n1", "device": "gpu-0"}]}},
                "reservedFor": [{"resource": "pods", "name": n, "uid": n} for n in consumers]}
        return ResourceClaim.model_validate({
            "metadata": {"name": "c", "namespace": "default", "uid": "c-1", "resourceVersion": version},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}},
            "status": status})

    snapshot = DeviceSnapshot()
    snapshot.set_claim(claim("1", ["a"]))
    snapshot.assume_claim(claim("1", ["a", "b"]), "b")
    snapshot.set_claim(claim("2", ["b"]))  # PreBind's write, after a left
    assert not snapshot.is_assumed("default/c")
    snapshot.set_claim(claim("3", []))  # b done: the claim controller deallocated it
    assert snapshot.allocated_claims() == []


def test_a_prioritized_list_prefers_the_node_that_offers_its_first_choice(plane):
    # Upstream DynamicResources Score (KEP-4816): each allocated subrequest scores 8 minus its index,
    # so of two nodes that both fit, the one giving the first choice wins (without the score the
    # tie would go to n1, the first by name).
    store = plane
    make_node(store, "n1")
    make_node(store, "n2")
    make_class(store)
    make_slice(store, "n1", ["t4"])
    store.create(ResourceSlice.model_validate({
        "metadata": {"name": f"n2-{DRIVER}"},
        "spec": {"driver": DRIVER, "nodeName": "n2", "pool": {"name": "n2", "generation": 1, "resourceSliceCount": 1},
                 "devices": [{"name": "gpu-0", "attributes": {"model": {"string": "a100"}}}]}}))

    def model_is(model):
        return [{"cel": {"expression": f"device.attributes['{DRIVER}'].model == '{model}'"}}]

    store.create(ResourceClaimTemplate.model_validate({
        "metadata": {"name": "a100-else-t4", "namespace": "default"},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "firstAvailable": [
            {"name": "big", "deviceClassName": DRIVER, "selectors": model_is("a100")},
            {"name": "small", "deviceClassName": DRIVER, "selectors": model_is("t4")}]}]}}}}))
    make_pod(store, "picky", template="a100-else-t4")
    assert wait_for(lambda: get_pod(store, "picky").spec.node_name, what="pod bound") == "n2"
    [claim] = claims_of(store, "picky")
    assert claim.to_dict()["status"]["allocation"]["devices"]["results"][0]["request"] == "gpu/big"
