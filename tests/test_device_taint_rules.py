"""DeviceTaintRule (resource.k8s.io/v1alpha3, KEP-5055): the API, the allocator's view of rule taints,
the eviction decision, and live: the scheduler keeps pods off rule-tainted devices and the device
taint eviction controller evicts pods from devices with untolerated NoExecute taints."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import events, get_pod, wait_for
from mlplane.api import Node, Pod
from mlplane.api.errors import Invalid
from mlplane.api.meta import find_condition, parse_time
from mlplane.api.registry import REGISTRY
from mlplane.api.resource import (DeviceClass, DeviceTaint, DeviceTaintRule, ResourceClaim, ResourceClaimTemplate,
                                  ResourceSlice)
from mlplane.control.controllers.devicetaint import DeviceTaintEvictionController
from mlplane.control.controllers.resourceclaim import ResourceClaimController
from mlplane.control.controllers.scheduler import Scheduler
from mlplane.policy.device.allocator import Allocator, allocated_state
from mlplane.policy.device.taints import apply_rules, plan_evictions, rule_condition
from mlplane.policy.pod.claims import DeviceSnapshot

DRIVER = "gpu.example.com"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def rule(name="unhealthy", effect="NoSchedule", selector=None, key="example.com/unhealthy", value="xid-79",
         time_added="2026-01-01T12:00:00Z", api_version="resource.k8s.io/v1alpha3"):
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    if time_added:
        taint["timeAdded"] = time_added
    return REGISTRY.decode({"apiVersion": api_version, "kind": "DeviceTaintRule", "metadata": {"name": name},
                            "spec": {"deviceSelector": {"driver": DRIVER, "device": "gpu-0"} if selector is None
                                     else selector, "taint": taint}})


def gpu_slice(node="n1", count=2):
    return ResourceSlice.model_validate({
        "metadata": {"name": f"{node}-{DRIVER}"},
        "spec": {"driver": DRIVER, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                 "devices": [{"name": f"gpu-{i}"} for i in range(count)]}})


def gpu_class():
    return DeviceClass.model_validate({"metadata": {"name": DRIVER},
                                       "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}]}})


def node(name="n1"):
    return Node.model_validate({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                                "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}})


def claim(name="c", tolerations=None, count=1):
    exactly = {"deviceClassName": DRIVER, "count": count}
    if tolerations:
        exactly["tolerations"] = tolerations
    return ResourceClaim.model_validate({"metadata": {"name": name, "namespace": "default"},
                                         "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}})


# -- API --------------------------------------------------------------------------------------------------

def test_rule_decodes_from_v1alpha3_and_v1beta2_and_sets_time_added():
    r = rule(time_added=None, api_version="resource.k8s.io/v1beta2")
    assert r.api_version == "resource.k8s.io/v1alpha3"
    assert r.spec.taint.time_added  # set when missing
    assert REGISTRY.by_name("devicetaintrules").kind == "DeviceTaintRule"
    assert r.matches(DRIVER, "n1", "gpu-0") and not r.matches(DRIVER, "n1", "gpu-1")


def test_rule_validation_names_each_field():
    with pytest.raises(Invalid) as e:
        REGISTRY.decode({"apiVersion": "resource.k8s.io/v1alpha3", "kind": "DeviceTaintRule",
                         "metadata": {"name": "bad"},
                         "spec": {"deviceSelector": {"driver": "Bad_Driver", "pool": "a//b", "device": "GPU",
                                                     "deviceClassName": "gpu", "selectors": []},
                                  "taint": {"key": "bad key", "value": "-x-", "effect": "NoSchedule",
                                            "timeAdded": "yesterday"}}})
    paths = [p for p, _ in e.value.causes]
    assert paths == ["spec.deviceSelector.driver", "spec.deviceSelector.pool", "spec.deviceSelector.device",
                     "spec.deviceSelector.deviceClassName", "spec.deviceSelector.selectors", "spec.taint.key",
                     "spec.taint.value", "spec.taint.timeAdded"]
    assert "removed from DeviceTaintRule in Kubernetes 1.35" in dict(e.value.causes)["spec.deviceSelector.deviceClassName"]
    with pytest.raises(Invalid) as e:
        REGISTRY.decode({"apiVersion": "resource.k8s.io/v1alpha3", "kind": "DeviceTaintRule",
                         "metadata": {"name": "bad"}, "spec": {"taint": {"key": "k", "effect": "PreferNoSchedule"}}})
    assert [p for p, _ in e.value.causes] == ["spec.taint.effect"]


# -- scheduling: rules as the allocator sees them ---------------------------------------------------------

def test_apply_rules_adds_the_taint_to_selected_devices_only():
    s = gpu_slice()
    assert apply_rules([s], []) == [s]
    [patched] = apply_rules([s], [rule(), rule("none-selector", selector={}), rule("other", selector={"pool": "n9"})])
    taints = {d.name: [(t.key, t.effect) for t in d.taints or []] for d in patched.spec.devices}
    # The empty selector matches every device; another pool matches none.
    assert taints == {"gpu-0": [("example.com/unhealthy", "NoSchedule")] * 2,
                      "gpu-1": [("example.com/unhealthy", "NoSchedule")]}
    assert s.spec.devices[0].taints is None  # the input is not changed


def test_device_snapshot_keeps_claims_off_rule_tainted_devices_unless_tolerated():
    snap = DeviceSnapshot()
    snap.set_class(gpu_class())
    snap.set_slice(gpu_slice(count=1))
    n1 = node()
    assert snap.allocator().try_allocate(n1, [claim()]).feasible
    snap.set_rule(rule())
    outcome = snap.allocator().try_allocate(n1, [claim()])
    assert not outcome.feasible
    assert "device gpu-0 has a taint not tolerated: example.com/unhealthy=xid-79:NoSchedule" in outcome.message()
    tolerating = claim(tolerations=[{"key": "example.com/unhealthy", "operator": "Exists"}])
    assert snap.allocator().try_allocate(n1, [tolerating]).feasible
    before = snap.allocator()
    snap.set_rule(rule().model_copy(update={"status": rule().status.model_copy(update={"conditions": []})}))
    assert snap.allocator() is before  # a status-only change keeps the allocator
    snap.set_rule(rule(effect="None"))  # informational: no longer keeps claims off
    assert snap.allocator() is not before
    assert snap.allocator().try_allocate(n1, [claim()]).feasible
    snap.set_rule(rule(effect="NoExecute"))
    assert not snap.allocator().try_allocate(n1, [claim()]).feasible
    snap.remove_rule("unhealthy")
    assert snap.allocator().try_allocate(n1, [claim()]).feasible


def test_allocator_picks_the_untainted_device():
    [patched] = apply_rules([gpu_slice()], [rule()])
    result = Allocator([gpu_class()], [patched], allocated_state([])).allocate(node(), [claim()])
    assert [r.device for r in result[0].devices.results] == ["gpu-1"]


# -- the eviction decision ---------------------------------------------------------------------------------

def running_pod(name="p", uid="uid-p", claim_name="c"):
    return Pod.model_validate({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"nodeName": "n1", "containers": [{"name": "main", "command": ["true"]}],
                 "resourceClaims": [{"name": "gpu", "resourceClaimName": claim_name}]},
        "status": {"phase": "Running"}})


def allocated(name="c", device="gpu-0", uid="uid-p", tolerations=None):
    result = {"request": "gpu", "driver": DRIVER, "pool": "n1", "device": device}
    if tolerations:
        result["tolerations"] = tolerations
    return ResourceClaim.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}},
        "status": {"allocation": {"devices": {"results": [result]}},
                   "reservedFor": [{"resource": "pods", "name": "p", "uid": uid}]}})


def test_plan_evicts_untolerated_noexecute_now_and_tolerated_after_toleration_seconds():
    pods, slices = [running_pod()], [gpu_slice()]
    assert plan_evictions(pods, [allocated()], slices, [rule(effect="NoSchedule")], NOW) == {}
    assert plan_evictions(pods, [allocated(device="gpu-1")], slices, [rule(effect="NoExecute")], NOW) == {}
    [(key, ev)] = plan_evictions(pods, [allocated()], slices, [rule(effect="NoExecute")], NOW).items()
    assert (key, ev.at, ev.rules, ev.uid) == ("default/p", NOW, ("unhealthy",), "uid-p")
    tol = {"key": "example.com/unhealthy", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}
    [ev] = plan_evictions(pods, [allocated(tolerations=[tol])], slices, [rule(effect="NoExecute")], NOW).values()
    assert ev.at == NOW + timedelta(seconds=60)  # timeAdded + tolerationSeconds
    forever = {"key": "example.com/unhealthy", "operator": "Exists", "effect": "NoExecute"}
    assert plan_evictions(pods, [allocated(tolerations=[forever])], slices, [rule(effect="NoExecute")], NOW) == {}
    # Not reserved for this pod (another uid), or the pod finished: nothing to do.
    assert plan_evictions(pods, [allocated(uid="other")], slices, [rule(effect="NoExecute")], NOW) == {}
    done = running_pod().model_copy(update={"status": running_pod().status.model_copy(update={"phase": "Succeeded"})})
    assert plan_evictions([done], [allocated()], slices, [rule(effect="NoExecute")], NOW) == {}


def test_plan_counts_only_noexecute_tolerations_evicts_from_time_added_and_leaves_unbound_pods():
    """As upstream's claimEvictionTime and podEvictionTime (pkg/controller/devicetainteviction)."""
    pods, slices = [running_pod()], [gpu_slice()]
    added = NOW - timedelta(hours=1)
    tainted = [rule(effect="NoExecute", time_added="2026-01-01T11:00:00Z")]
    # Not tolerated: evicted at the taint's timeAdded, not at "now".
    [ev] = plan_evictions(pods, [allocated()], slices, tainted, NOW).values()
    assert ev.at == added
    # A toleration without an effect does not count for eviction, with or without seconds.
    for tol in ({"key": "example.com/unhealthy", "operator": "Exists"},
                {"key": "example.com/unhealthy", "operator": "Exists", "tolerationSeconds": 7200}):
        [ev] = plan_evictions(pods, [allocated(tolerations=[tol])], slices, tainted, NOW).values()
        assert ev.at == added, tol
    # NoExecute with seconds: timeAdded + seconds; one NoExecute toleration without seconds: for ever.
    secs = {"key": "example.com/unhealthy", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 7200}
    [ev] = plan_evictions(pods, [allocated(tolerations=[secs])], slices, tainted, NOW).values()
    assert ev.at == added + timedelta(hours=2)
    forever = {"operator": "Exists", "effect": "NoExecute"}
    assert plan_evictions(pods, [allocated(tolerations=[secs, forever])], slices, tainted, NOW) == {}
    # A pod its claim is reserved for (PreBind) but that is not bound yet is not evicted.
    unbound = running_pod().model_copy(update={"spec": running_pod().spec.model_copy(update={"node_name": None})})
    assert plan_evictions([unbound], [allocated()], slices, tainted, NOW) == {}


def test_plan_sees_noexecute_taints_in_the_slice_too():
    tainted = gpu_slice()
    tainted.spec.devices[0].taints = [DeviceTaint(key="k", effect="NoExecute")]
    [ev] = plan_evictions([running_pod()], [allocated()], [tainted], [], NOW).values()
    assert ev.at == NOW and ev.rules == ()


def test_rule_condition_wording():
    r = rule(effect="NoExecute")
    evictions = plan_evictions([running_pod()], [allocated()], [gpu_slice()], [r], NOW)
    c = rule_condition(r, evictions)
    assert (c["type"], c["status"], c["reason"], c["message"]) == (
        "EvictionInProgress", "True", "PodsPendingEviction", "1 pod needs to be evicted in 1 namespace.")
    c = rule_condition(r, {}, evicted=1)
    assert (c["status"], c["reason"], c["message"]) == ("False", "Completed", "1 pod evicted since starting the controller.")
    assert rule_condition(r, {})["reason"] == "NotStarted"
    assert rule_condition(rule(effect="NoSchedule"), {})["reason"] == "OtherEffect"


# -- live ---------------------------------------------------------------------------------------------------

@pytest.fixture
def plane(store):
    started = [ResourceClaimController(store).start(), Scheduler(store, unschedulable_timeout=60).start(),
               DeviceTaintEvictionController(store).start()]
    yield store
    for part in reversed(started):
        part.stop()


def setup_devices(store, count=1, tolerations=None):
    store.create(node())
    store.create(gpu_class())
    store.create(gpu_slice(count=count))
    exactly = {"deviceClassName": DRIVER}
    if tolerations:
        exactly["tolerations"] = tolerations
    store.create(ResourceClaimTemplate.model_validate({
        "metadata": {"name": "one-gpu", "namespace": "default"},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}}}))


def make_pod(store, name):
    return store.create(Pod.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "command": ["true"], "resources": {"claims": [{"name": "gpu"}]}}],
                 "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]}}))


def pending_message(store, name):
    cond = find_condition(get_pod(store, name).status.conditions, "PodScheduled")
    return cond.message if cond is not None and cond.status == "False" else ""


def test_pod_waits_while_its_only_device_is_tainted_by_rule_and_runs_once_the_rule_goes(plane):
    store = plane
    setup_devices(store)
    store.create(rule())
    make_pod(store, "trainer")
    wait_for(lambda: "has a taint not tolerated: example.com/unhealthy=xid-79:NoSchedule"
             in pending_message(store, "trainer"), what="pending reason names the taint")
    assert not get_pod(store, "trainer").spec.node_name
    store.delete(DeviceTaintRule, None, "unhealthy")
    assert wait_for(lambda: get_pod(store, "trainer").spec.node_name, what="pod bound") == "n1"


def test_running_pod_is_evicted_when_a_noexecute_rule_taints_its_device(plane):
    store = plane
    setup_devices(store)
    make_pod(store, "trainer")
    wait_for(lambda: get_pod(store, "trainer").spec.node_name, what="pod bound")
    store.create(rule(name="xid", effect="NoExecute", time_added=None))
    pod = wait_for(lambda: (p := get_pod(store, "trainer")).metadata.deletion_timestamp and p, what="pod deleted")
    cond = find_condition(pod.status.conditions, "DisruptionTarget")
    assert (cond.status, cond.reason, cond.message) == ("True", "DeletionByDeviceTaintManager",
                                                        "Device Taint manager: deleting due to NoExecute taint")
    assert ("Normal", "DeviceTaintManagerEviction", "Marking for deletion") in events(store, "trainer")
    c = wait_for(lambda: (c := find_condition(store.get(DeviceTaintRule, None, "xid").status.conditions,
                                              "EvictionInProgress")) and c.reason == "Completed" and c,
                 what="rule condition Completed")
    assert (c.status, c.message) == ("False", "1 pod evicted since starting the controller.")


def test_tolerating_pod_is_not_evicted_and_toleration_seconds_delay_eviction(plane):
    store = plane
    setup_devices(store, count=2, tolerations=[
        {"key": "example.com/unhealthy", "operator": "Exists", "effect": "NoExecute"},
        {"key": "example.com/flaky", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}])
    make_pod(store, "tolerant")
    wait_for(lambda: get_pod(store, "tolerant").spec.node_name, what="pod bound")
    [name] = [s.resource_claim_name for s in get_pod(store, "tolerant").status.resource_claim_statuses]
    device = store.get(ResourceClaim, "default", name).status.allocation.devices.results[0].device
    store.create(rule(name="xid", effect="NoExecute", time_added=None,
                      selector={"driver": DRIVER, "device": device}))
    c = wait_for(lambda: find_condition(store.get(DeviceTaintRule, None, "xid").status.conditions,
                                        "EvictionInProgress"), what="rule condition")
    assert (c.status, c.reason) == ("False", "NotStarted")  # the pod tolerates the taint for ever
    assert not get_pod(store, "tolerant").metadata.deletion_timestamp
    # Tolerated for 2 s from timeAdded: first reported as pending, with the pod still there ...
    flaky = store.create(rule(name="flaky", effect="NoExecute", key="example.com/flaky", value="", time_added=None,
                              selector={"driver": DRIVER, "device": device}))
    c = wait_for(lambda: (c := find_condition(store.get(DeviceTaintRule, None, "flaky").status.conditions,
                                              "EvictionInProgress")) and c.status == "True" and c,
                 what="flaky rule condition True")
    assert (c.reason, c.message) == ("PodsPendingEviction", "1 pod needs to be evicted in 1 namespace.")
    assert not get_pod(store, "tolerant").metadata.deletion_timestamp
    # ... then evicted, no sooner than timeAdded + tolerationSeconds (recorded times, not elapsed ones).
    pod = wait_for(lambda: (p := get_pod(store, "tolerant")).metadata.deletion_timestamp and p, what="pod deleted")
    cond = find_condition(pod.status.conditions, "DisruptionTarget")
    assert cond.reason == "DeletionByDeviceTaintManager"
    due = parse_time(flaky.spec.taint.time_added) + timedelta(seconds=2)
    assert parse_time(cond.last_transition_time) >= due
    assert parse_time(pod.metadata.deletion_timestamp) >= due


def test_delayed_eviction_is_reported_on_the_rule_and_cancelled_when_the_rule_goes(plane):
    store = plane
    setup_devices(store, tolerations=[{"key": "example.com/unhealthy", "operator": "Exists", "effect": "NoExecute",
                                       "tolerationSeconds": 600}])
    make_pod(store, "patient")
    wait_for(lambda: get_pod(store, "patient").spec.node_name, what="pod bound")
    store.create(rule(name="xid", effect="NoExecute", time_added=None))
    c = wait_for(lambda: (c := find_condition(store.get(DeviceTaintRule, None, "xid").status.conditions,
                                              "EvictionInProgress")) and c.status == "True" and c,
                 what="rule condition True")
    assert (c.reason, c.message) == ("PodsPendingEviction", "1 pod needs to be evicted in 1 namespace.")
    store.delete(DeviceTaintRule, None, "xid")
    wait_for(lambda: ("Normal", "DeviceTaintManagerEviction", "Cancelling deletion") in events(store, "patient"),
             what="cancel event")
    assert not get_pod(store, "patient").metadata.deletion_timestamp


def test_example_manifest_loads():
    import os

    from mlplane.api.loader import load_paths
    [doc] = load_paths([os.path.join(os.path.dirname(__file__), "..", "examples-dra", "taint-rule.yaml")])
    example = doc.obj
    assert isinstance(example, DeviceTaintRule) and example.spec.taint.effect == "NoExecute"
    assert example.matches(DRIVER, "any-node", "gpu-0")


def test_get_and_describe_show_selector_taint_and_effect(store):
    from mlplane.cli.describe import describe
    from mlplane.cli.printers import print_table
    created = store.create(rule(effect="NoExecute"))
    kind = REGISTRY.by_name("devicetaintrules")
    header, row = print_table(kind, [created]).splitlines()
    assert header.split() == ["NAME", "DRIVER", "POOL", "DEVICE", "TAINT", "EFFECT", "EVICTING", "AGE"]
    assert row.split()[:6] == ["unhealthy", DRIVER, "*", "gpu-0", "example.com/unhealthy=xid-79", "NoExecute"]
    text = describe(store, kind, created)
    assert "Taint:              example.com/unhealthy=xid-79:NoExecute" in text
    assert "device: gpu-0" in text


def test_changing_the_effect_moves_time_added(store):
    created = store.create(rule(effect="NoSchedule", time_added="2026-01-01T00:00:00Z"))
    relabeled = created.model_copy(deep=True)
    relabeled.spec.taint.value = "xid-48"  # same effect: the time stays
    relabeled = store.update(relabeled)
    assert relabeled.spec.taint.time_added == "2026-01-01T00:00:00Z"
    escalated = relabeled.model_copy(deep=True)
    escalated.spec.taint.effect = "NoExecute"
    assert store.update(escalated).spec.taint.time_added != "2026-01-01T00:00:00Z"


def test_slice_taints_get_time_added_when_stored_and_the_eviction_time_does_not_move():
    """Upstream defaults DeviceTaint.timeAdded when a slice is created or updated; the eviction time
    of a tolerated slice taint is then the same for any controller, started whenever."""
    tainted = gpu_slice()
    tainted.spec.devices[0].taints = [DeviceTaint(key="k", effect="NoExecute")]
    decoded = REGISTRY.decode({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", **tainted.to_dict()})
    assert decoded.spec.devices[0].taints[0].time_added  # set when decoded, as on create and update
    fixed = gpu_slice()
    fixed.spec.devices[0].taints = [DeviceTaint(key="k", effect="NoExecute", time_added="2026-01-01T11:59:00Z")]
    kept = REGISTRY.decode({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", **fixed.to_dict()})
    assert kept.spec.devices[0].taints[0].time_added == "2026-01-01T11:59:00Z"  # a given time stays
    tol = {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
    first = plan_evictions([running_pod()], [allocated(tolerations=[tol])], [kept], [], NOW)
    later = plan_evictions([running_pod()], [allocated(tolerations=[tol])], [kept], [], NOW + timedelta(seconds=20))
    assert first["default/p"].at == later["default/p"].at == datetime(2026, 1, 1, 11, 59, 30, tzinfo=timezone.utc)


def test_store_sets_time_added_on_slice_taints_on_create_and_update(store):
    tainted = gpu_slice()
    tainted.spec.devices[0].taints = [DeviceTaint(key="k", effect="NoExecute")]
    created = store.create(tainted)
    stamp = created.spec.devices[0].taints[0].time_added
    assert stamp and store.get(ResourceSlice, None, created.name).spec.devices[0].taints[0].time_added == stamp
    changed = created.model_copy(deep=True)
    changed.spec.devices[1].taints = [DeviceTaint(key="k2", effect="NoSchedule")]
    updated = store.update(changed)
    assert updated.spec.devices[0].taints[0].time_added == stamp  # kept
    assert updated.spec.devices[1].taints[0].time_added  # the new one gets a time


def test_node_agent_keeps_slice_taint_times_and_does_not_republish_for_them(store):
    from mlplane.api.resource import Device
    from mlplane.control.node.devices import DriverDevices, publish_slices
    n1 = store.create(node())

    def inventory(count):
        devices = [Device(name=f"gpu-{i}") for i in range(count)]
        devices[0].taints = [DeviceTaint(key="k", effect="NoExecute")]
        return [DriverDevices(DRIVER, devices, [])]

    assert publish_slices(store, n1, inventory(1))
    [first] = store.list(ResourceSlice).items
    assert first.spec.devices[0].taints[0].time_added
    first = first.model_copy(deep=True)
    first.spec.devices[0].taints[0].time_added = "2026-01-01T00:00:00Z"  # as if published long ago
    store.update(first)
    assert not publish_slices(store, n1, inventory(1))  # the same devices: nothing written
    # Another device: the slice is rewritten, and the taint keeps its time (its tolerationSeconds clock).
    assert publish_slices(store, n1, inventory(2))
    [second] = store.list(ResourceSlice).items
    assert [d.name for d in second.spec.devices] == ["gpu-0", "gpu-1"]
    assert second.spec.devices[0].taints[0].time_added == "2026-01-01T00:00:00Z"


# -- the controller's event filters (upstream handlePodChange, handleSliceChange, handleRuleChange) ----------

def idle_controller(store):
    """A controller not started: its informer handlers are called by hand; queued keys recorded."""
    ctrl = DeviceTaintEvictionController(store)
    added: list[str] = []
    ctrl.controller.queue.add = added.append
    return ctrl, added


def test_routine_pod_rule_and_slice_events_do_not_resync_everything(store):
    ctrl, added = idle_controller(store)
    pod = running_pod()
    ctrl._on_pod("ADDED", None, pod)
    assert added == ["pod:default/p"]
    added.clear()
    # A status write that is not about claims (the DisruptionTarget condition, a phase) is ignored.
    status_only = pod.model_copy(update={"status": pod.status.model_copy(update={"phase": "Failed"})})
    ctrl._on_pod("MODIFIED", pod, status_only)
    assert added == []
    unbound = pod.model_copy(update={"spec": pod.spec.model_copy(update={"node_name": None})})
    ctrl._on_pod("MODIFIED", unbound, pod)  # bound now
    assert added == ["pod:default/p"]
    added.clear()
    # A rule: added, spec changed, deleted -> ALL; a status write (our own) -> nothing.
    r = rule(effect="NoExecute")
    ctrl._on_rule("ADDED", None, r)
    assert added == ["all"]
    added.clear()
    written = r.model_copy(update={"status": r.status.model_copy(update={"conditions": []})})
    ctrl._on_rule("MODIFIED", r, written)
    assert added == []
    ctrl._on_rule("MODIFIED", written, rule(effect="NoSchedule"))
    ctrl._on_rule("DELETED", written, written)
    assert added == ["all", "all"]
    added.clear()
    # A slice: only a change of its pool's NoExecute taints re-syncs every pod.
    plain = gpu_slice()
    ctrl._on_slice("ADDED", None, plain)
    ctrl._on_slice("MODIFIED", plain, gpu_slice(count=3))
    assert added == []
    tainted = gpu_slice(count=3)
    tainted.spec.devices[0].taints = [DeviceTaint(key="k", effect="NoExecute", time_added="2026-01-01T00:00:00Z")]
    ctrl._on_slice("MODIFIED", gpu_slice(count=3), tainted)
    assert added == ["all"]
    added.clear()
    relabeled = tainted.model_copy(deep=True)
    relabeled.spec.devices[1].taints = [DeviceTaint(key="soft", effect="NoSchedule",
                                                    time_added="2026-01-01T00:00:00Z")]
    ctrl._on_slice("MODIFIED", tainted, relabeled)
    assert added == []
    ctrl._on_slice("DELETED", relabeled, relabeled)
    assert added == ["all"]


def test_a_pod_sync_looks_up_only_its_own_claims(store):
    ctrl, _ = idle_controller(store)
    claims = {"default/c": allocated()}

    def no_listing(*_a, **_k):
        raise AssertionError("listed every object")

    ctrl.claims.get = claims.get
    ctrl.claims.list = ctrl.slices.list = no_listing
    tainted = gpu_slice()
    tainted.spec.devices[0].taints = [DeviceTaint(key="k", effect="NoExecute", time_added="2026-01-01T11:00:00Z")]
    ctrl._on_slice("ADDED", None, tainted)
    [ev] = ctrl._plan([running_pod()], NOW).values()
    assert ev.at == datetime(2026, 1, 1, 11, 0, tzinfo=timezone.utc)
