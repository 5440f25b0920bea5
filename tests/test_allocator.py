"""The DRA allocator, ported from upstream's table in
k8s.io/dynamic-resource-allocation/structured/internal/allocatortesting/allocator_testing.go.

Each test names the upstream case it restates (fixtures as upstream: node-1 with labels
region=region-1 and planet=earth; class(name, driver) selects ``device.driver == driver``;
slices have generation 1 and resourceSliceCount 1). Results are compared in the v1 wire shape.
"""

from __future__ import annotations

import pytest

from mlplane.api.core import Node
from mlplane.api.resource import DeviceClass, ResourceClaim, ResourceSlice
from mlplane.policy.device.allocator import (AllocatedState, AllocationError, Allocator, Features,
                                             SearchBudgetExceeded, allocated_state)
from mlplane.policy.device.convert import AllocationTracker
from mlplane.policy.device.model import DeviceID, SharedDeviceID

A, B = "driver-a", "driver-b"


def node(name="node-1", region="region-1") -> Node:
    return Node.model_validate({"metadata": {"name": name,
                                             "labels": {"region": region, "planet": "earth"}}})


def cls(name, driver, config=None, extra=None) -> DeviceClass:
    expr = f'device.driver == "{driver}"' + (f" && {extra}" if extra else "")
    spec: dict = {"selectors": [{"cel": {"expression": expr}}]}
    if config:
        spec["config"] = [{"opaque": {"driver": driver, "parameters": {config: config + "Value"}}}]
    return DeviceClass.model_validate({"metadata": {"name": name}, "spec": spec})


def dev(name, attrs=None, capacity=None, **fields) -> dict:
    out: dict = {"name": name, **fields}
    if attrs:
        out["attributes"] = attrs
    if capacity:
        out["capacity"] = {k: (v if isinstance(v, dict) else {"value": v}) for k, v in capacity.items()}
    return out


def slc(name, where, pool, driver, *devices, count=1, generation=1, counters=None) -> ResourceSlice:
    spec: dict = {"driver": driver, "pool": {"name": pool, "generation": generation,
                                             "resourceSliceCount": count}}
    if isinstance(where, dict):
        spec["nodeSelector"] = where
    elif where == "all":
        spec["allNodes"] = True
    elif where == "per-device":
        spec["perDeviceNodeSelection"] = True
    else:
        spec["nodeName"] = where
    if devices:
        spec["devices"] = list(devices)
    if counters:
        spec["sharedCounters"] = [{"name": n, "counters": {k: {"value": v} for k, v in c.items()}}
                                  for n, c in counters.items()]
    return ResourceSlice.model_validate({"metadata": {"name": name}, "spec": spec})


def one(name, where, pool, driver, device="device-1"):
    return slc(name, where, pool, driver, dev(device))


def many(name, where, pool, driver, n):
    return slc(name, where, pool, driver, *(dev(f"device-{i}") for i in range(n)))


def label_selector(key, value) -> dict:
    return {"nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": "In",
                                                          "values": [value]}]}]}


def req(name, class_name, count=1, *, mode=None, selectors=(), **fields) -> dict:
    exactly: dict = {"deviceClassName": class_name, **fields}
    if mode == "All":
        exactly["allocationMode"] = "All"
    else:
        exactly["count"] = count
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    return {"name": name, "exactly": exactly}


def sub(name, class_name, count=1, *, mode=None, selectors=(), **fields) -> dict:
    out = req(name, class_name, count, mode=mode, selectors=selectors, **fields)["exactly"]
    return {"name": name, **out}


def first(name, *subs) -> dict:
    return {"name": name, "firstAvailable": list(subs)}


def claim(name, *requests, constraints=None, config=None) -> ResourceClaim:
    devices: dict = {"requests": list(requests)}
    if constraints:
        devices["constraints"] = constraints
    if config:
        devices["config"] = config
    return ResourceClaim.model_validate({"metadata": {"name": name}, "spec": {"devices": devices}})


def mem_at_least(q, driver=A):
    return f'device.capacity["{driver}"].memory.compareTo(quantity("{q}")) >= 0'


LOCAL = {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                 "values": ["node-1"]}]}]}


def res(request, driver, pool, device, **extra) -> dict:
    return {"request": request, "driver": driver, "pool": pool, "device": device, **extra}


def alloc(*results, selector=LOCAL, config=None) -> dict:
    devices: dict = {"results": list(results)}
    if config:
        devices["config"] = config
    out: dict = {"devices": devices}
    if selector is not None:
        out["nodeSelector"] = selector
    return out


def run(claims, classes, slices, *, n=None, allocated=None, features=Features(), max_steps=None):
    allocator = Allocator(classes, slices, allocated or AllocatedState(), features)
    kwargs = {"max_steps": max_steps} if max_steps else {}
    outcome = allocator.try_allocate(n or node(), claims, **kwargs)
    if outcome.results is None:
        return None
    return [r.model_dump(by_alias=True, exclude_none=True, mode="json") for r in outcome.results]


def outcome(claims, classes, slices, **kw):
    return Allocator(classes, slices, kw.pop("allocated", AllocatedState())).try_allocate(
        kw.pop("n", node()), claims, **kw)


# --- basics -----------------------------------------------------------------------------------

def test_simple():
    got = run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)],
              [one("slice-1", "node-1", "pool-1", A)])
    assert got == [alloc(res("req-0", A, "pool-1", "device-1"))]


def test_other_node():
    got = run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)],
              [one("slice-1", "node-1", "pool-1", B), one("slice-2", "node-2", "pool-2", A)],
              n=node("node-2", "region-2"))
    sel = {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                   "values": ["node-2"]}]}]}
    assert got == [alloc(res("req-0", A, "pool-2", "device-1"), selector=sel)]


def test_small_and_large_backtrack_requests():
    # Upstream "small-and-large" and "small-and-large-backtrack-requests": the large device is
    # listed first, taken by the small request, and the search must undo that choice.
    c = claim("claim-0", req("req-0", "class-a", selectors=[mem_at_least("1Gi")]),
              req("req-1", "class-a", selectors=[mem_at_least("2Gi")]))
    for order in (("device-1", "1Gi", "device-2", "2Gi"), ("device-2", "2Gi", "device-1", "1Gi")):
        s = slc("slice-1", "node-1", "pool-1", A, dev(order[0], capacity={"memory": order[1]}),
                dev(order[2], capacity={"memory": order[3]}))
        assert run([c], [cls("class-a", A)], [s]) == [alloc(res("req-0", A, "pool-1", "device-1"),
                                                            res("req-1", A, "pool-1", "device-2"))]


def test_small_and_large_backtrack_claims():
    s = slc("slice-1", "node-1", "pool-1", A, dev("device-2", capacity={"memory": "2Gi"}),
            dev("device-1", capacity={"memory": "1Gi"}))
    got = run([claim("claim-0", req("req-0", "class-a", selectors=[mem_at_least("1Gi")])),
               claim("claim-1", req("req-1", "class-a", selectors=[mem_at_least("2Gi")]))],
              [cls("class-a", A)], [s])
    assert got == [alloc(res("req-0", A, "pool-1", "device-1")),
                   alloc(res("req-1", A, "pool-1", "device-2"))]


def test_devices_split_across_different_slices():
    got = run([claim("claim-0", req("req-0", "class-a", 2))], [cls("class-a", A)],
              [one("slice-1", "node-1", "pool-1", A), one("slice-2", "node-1", "pool-2", A)])
    assert got == [alloc(res("req-0", A, "pool-1", "device-1"), res("req-0", A, "pool-2", "device-1"))]


def test_obsolete_slice():
    # The newer generation of pool-1 has one of its two slices: the pool is incomplete and the
    # obsolete slice is ignored, so ExactCount finds nothing (upstream "obsolete-slice").
    old = slc("slice-1-obsolete", "node-1", "pool-1", A, dev("device-1"), count=2)
    new = slc("slice-1-obsolete", "node-1", "pool-1", A, dev("device-2"), count=2, generation=2)
    assert run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)], [old, new]) is None


def test_duplicate_slice_is_an_invalid_pool():
    s1 = slc("slice-1", "node-1", "pool-1", A, dev("device-1"), count=2)
    s2 = slc("slice-1-2", "node-1", "pool-1", A, dev("device-1"), count=2)
    with pytest.raises(AllocationError, match="invalid resource pools were encountered"):
        run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)], [s1, s2])


def test_no_slices_and_not_enough_devices():
    # Upstream "no-slices", "not-enough-suitable-devices", "no-claims-to-allocate".
    assert run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)], []) is None
    assert run([claim("claim-0", req("req-0", "class-a")), claim("claim-0", req("req-1", "class-a"))],
               [cls("class-a", A)], [one("slice-1", "node-1", "pool-1", A)]) is None
    assert run([], [cls("class-a", A)], [one("slice-1", "node-1", "pool-1", A)]) == []


def test_unknown_class():
    # Upstream "no-classes" and "unknown-class".
    with pytest.raises(AllocationError, match="could not retrieve device class class-a"):
        run([claim("claim-0", req("req-0", "class-a"))], [], [one("slice-1", "node-1", "pool-1", A)])
    with pytest.raises(AllocationError, match="could not retrieve device class unknown-class"):
        run([claim("claim-0", req("req-0", "unknown-class"))], [cls("class-a", A)],
            [one("slice-1", "node-1", "pool-1", A)])


def test_several_different_drivers_and_already_allocated():
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2")),
         one("slice-1", "node-1", "pool-1", B)]
    got = run([claim("claim-0", req("req-0", "class-a")), claim("claim-0", req("req-0", "class-b"))],
              [cls("class-a", A), cls("class-b", B)], s)
    assert got == [alloc(res("req-0", A, "pool-1", "device-1")), alloc(res("req-0", B, "pool-1", "device-1"))]
    # Upstream "already-allocated-devices".
    used = AllocatedState(allocated_devices={DeviceID(A, "pool-1", "device-1"),
                                             DeviceID(A, "pool-1", "device-2")})
    assert run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)],
               [one("slice-1", "node-1", "pool-1", A)], allocated=used) is None


# --- allocationMode All -----------------------------------------------------------------------

def test_all_devices_single_and_many():
    all0 = claim("claim-0", req("req-0", "class-a", mode="All"))
    assert run([all0], [cls("class-a", A)], [one("slice-1", "node-1", "pool-1", A)]) == [
        alloc(res("req-0", A, "pool-1", "device-1"))]
    assert run([all0], [cls("class-a", A)], [one("slice-1", "node-1", "pool-1", A),
                                              one("slice-1", "node-1", "pool-2", A)]) == [
        alloc(res("req-0", A, "pool-1", "device-1"), res("req-0", A, "pool-2", "device-1"))]


def test_all_devices_of_the_incomplete_pool_is_an_error():
    s = slc("slice-1", "node-1", "pool-1", A, dev("device-1"), count=2)
    with pytest.raises(AllocationError, match="claim claim-0, request req-0: asks for all devices, but "
                                              "resource pool driver-a/pool-1 is currently being updated"):
        run([claim("claim-0", req("req-0", "class-a", mode="All"))], [cls("class-a", A)], [s])


def test_all_devices_plus_another_both_orders():
    classes = [cls("class-a", A), cls("class-b", B)]
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2")),
         one("slice-1", "node-1", "pool-1", B)]
    all_a = claim("claim-0", req("req-0", "class-a", mode="All"))
    one_b = claim("claim-1", req("req-0", "class-b"))
    both_a = alloc(res("req-0", A, "pool-1", "device-1"), res("req-0", A, "pool-1", "device-2"))
    b = alloc(res("req-0", B, "pool-1", "device-1"))
    assert run([all_a, one_b], classes, s) == [both_a, b]
    assert run([one_b, all_a], classes, s) == [b, both_a]


def test_all_devices_no_solution_and_some_allocated():
    one_dev = [one("slice-1", "node-1", "pool-1", A)]
    all_a = claim("claim-0", req("req-0", "class-a", mode="All"))
    one_a = claim("claim-1", req("req-0", "class-a"))
    assert run([one_a, all_a], [cls("class-a", A)], one_dev) is None
    assert run([all_a, one_a], [cls("class-a", A)], one_dev) is None
    # "all-devices-slice-without-devices" and "all-devices-no-slices": All needs one device.
    assert run([all_a], [cls("class-a", A)], [slc("slice-1", "node-1", "pool-1", A)]) is None
    assert run([all_a], [cls("class-a", A)], []) is None
    # "all-devices-some-allocated"
    two = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2"))]
    used = AllocatedState(allocated_devices={DeviceID(A, "pool-1", "device-1")})
    assert run([all_a], [cls("class-a", A)], two, allocated=used) is None


def test_all_devices_with_consumed_counters():
    s = [slc("slice-1", "node-1", "pool-1", A,
             dev("device-1", consumesCounters=[{"counterSet": "counter-set-1",
                                                "counters": {"memory": {"value": "4Gi"}}}]), count=2),
         slc("slice-2", "node-1", "pool-1", A, count=2, counters={"counter-set-1": {"memory": "8Gi"}})]
    assert run([claim("claim-0", req("req-0", "class-a", mode="All"))], [cls("class-a", A)], s) == [
        alloc(res("req-0", A, "pool-1", "device-1"))]


def test_constraint_failure_with_all_devices_is_an_error():
    # Upstream "with-constraint-not-matching-int-attribute-all-devices".
    s = slc("slice-1", "node-1", "pool-1", A, dev("device-1", {"numa": {"int": 1}}),
            dev("device-2", {"numa": {"int": 2}}))
    c = claim("claim-0", req("req-0", "class-a", mode="All"),
              constraints=[{"matchAttribute": f"{A}/numa"}])
    with pytest.raises(AllocationError, match="claim claim-0, request req-0: cannot add device "
                                              "driver-a/pool-1/device-2 because a claim constraint"):
        run([c], [cls("class-a", A)], [s])


# --- admin access -----------------------------------------------------------------------------

def _admin(name, count=1, mode=None):
    return claim(name, req("req-0", "class-a", count, mode=mode, adminAccess=True))


def test_admin_access_uses_allocated_devices():
    two = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2"))]
    used = AllocatedState(allocated_devices={DeviceID(A, "pool-1", "device-1")})
    both = alloc(res("req-0", A, "pool-1", "device-1", adminAccess=True),
                 res("req-0", A, "pool-1", "device-2", adminAccess=True))
    # "all-devices-some-allocated-admin-access", "count-devices-some-allocated-admin-access"
    assert run([_admin("claim-0", mode="All")], [cls("class-a", A)], two, allocated=used) == [both]
    assert run([_admin("claim-0", 2)], [cls("class-a", A)], two, allocated=used) == [both]
    # "admin-access-enabled"
    used2 = AllocatedState(allocated_devices={DeviceID(A, "pool-1", "device-1"),
                                              DeviceID(A, "pool-1", "device-2")})
    assert run([_admin("claim-0")], [cls("class-a", A)], [one("slice-1", "node-1", "pool-1", A)],
               allocated=used2) == [alloc(res("req-0", A, "pool-1", "device-1", adminAccess=True))]


def test_admin_access_shares_across_claims_not_within_one():
    two = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2"))]
    admin_result = alloc(res("req-0", A, "pool-1", "device-1", adminAccess=True))
    # "separate-claims-share-device-admin-access"
    assert run([_admin("claim-0"), _admin("claim-1")], [cls("class-a", A)], two) == [admin_result] * 2
    # "admin-access-claims-device-allocating-for-non-admin-access"
    assert run([claim("claim-0", req("req-0", "class-a")), _admin("claim-1")], [cls("class-a", A)],
               two) == [alloc(res("req-0", A, "pool-1", "device-1")), admin_result]
    # "all-devices-some-allocating-admin-access": All cannot reuse a device of the same claim.
    c = claim("claim-0", req("req-0", "class-a", adminAccess=True),
              req("req-1", "class-a", mode="All", adminAccess=True))
    assert run([c], [cls("class-a", A)], two) is None


def test_admin_access_disabled():
    with pytest.raises(AllocationError, match="claim claim-0, request req-0: admin access is "
                                              "requested, but the feature is disabled"):
        run([_admin("claim-0")], [cls("class-a", A)], [one("slice-1", "node-1", "pool-1", A)],
            features=Features(admin_access=False))


# --- constraints ------------------------------------------------------------------------------

ATTRS = {"driverVersion": {"version": "1.0.0"}, "numa": {"int": 1},
         "stringAttribute": {"string": "stringAttributeValue"}, "boolAttribute": {"bool": True}}


def test_with_constraint_all_attribute_types():
    c = claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"),
              constraints=[{"matchAttribute": f"{A}/{k}"} for k in ATTRS])
    s = slc("slice-1", "node-1", "pool-1", A, dev("device-1", ATTRS), dev("device-2", ATTRS))
    assert run([c], [cls("class-a", A)], [s]) == [alloc(res("req-0", A, "pool-1", "device-1"),
                                                        res("req-1", A, "pool-1", "device-2"))]


@pytest.mark.parametrize("attr,v1,v2", [
    ("numa", {"int": 1}, {"int": 2}),
    ("stringAttribute", {"string": "stringAttributeValue"}, {"string": "stringAttributeValue2"}),
    ("boolAttribute", {"bool": True}, {"bool": False}),
    ("driverVersion", {"version": "1.0.0"}, {"version": "2.0.0"}),
])
def test_with_constraint_not_matching(attr, v1, v2):
    s = slc("slice-1", "node-1", "pool-1", A, dev("device-1", {attr: v1}), dev("device-2", {attr: v2}))
    c = claim("claim-0", req("req-0", "class-a", 2), constraints=[{"matchAttribute": f"{A}/{attr}"}])
    assert run([c], [cls("class-a", A)], [s]) is None


def test_with_constraint_non_existent_attribute():
    c = claim("claim-0", req("req-0", "class-a"),
              constraints=[{"matchAttribute": "example.com/nonExistent"}])
    assert run([c], [cls("class-a", A)], [one("slice-1", "node-1", "pool-1", A)]) is None


def test_with_constraint_for_request_and_retry():
    v = f"{A}/driverVersion"
    s = slc("slice-1", "node-1", "pool-1", A, dev("device-1", {"driverVersion": {"version": "1.0.0"}}),
            dev("device-2", {"driverVersion": {"version": "2.0.0"}}))
    c = claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"),
              constraints=[{"requests": ["req-0"], "matchAttribute": v}])
    assert run([c], [cls("class-a", A)], [s]) == [alloc(res("req-0", A, "pool-1", "device-1"),
                                                        res("req-1", A, "pool-1", "device-2"))]
    # "with-constraint-for-request-retry": device-1 fails the second constraint; backtrack.
    s = slc("slice-1", "node-1", "pool-1", A,
            dev("device-1", {"driverVersion": {"version": "1.0.0"}, "stringAttribute": {"string": "a"}}),
            dev("device-2", {"driverVersion": {"version": "2.0.0"}, "stringAttribute": {"string": "b"}}),
            dev("device-3", {"driverVersion": {"version": "3.0.0"}, "stringAttribute": {"string": "b"}}))
    c = claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"),
              constraints=[{"requests": ["req-0"], "matchAttribute": v},
                           {"matchAttribute": f"{A}/stringAttribute"}])
    assert run([c], [cls("class-a", A)], [s]) == [alloc(res("req-0", A, "pool-1", "device-2"),
                                                        res("req-1", A, "pool-1", "device-3"))]


def test_distinct_attribute():
    s = slc("slice-1", "node-1", "pool-1", A, dev("device-1", {"numa": {"int": 1}}),
            dev("device-2", {"numa": {"int": 1}}), dev("device-3", {"numa": {"int": 2}}))
    c = claim("claim-0", req("req-0", "class-a", 2), constraints=[{"distinctAttribute": f"{A}/numa"}])
    assert run([c], [cls("class-a", A)], [s]) == [alloc(res("req-0", A, "pool-1", "device-1"),
                                                        res("req-0", A, "pool-1", "device-3"))]
    c3 = claim("claim-0", req("req-0", "class-a", 3), constraints=[{"distinctAttribute": f"{A}/numa"}])
    assert run([c3], [cls("class-a", A)], [s]) is None


# --- firstAvailable ---------------------------------------------------------------------------

def test_prioritized_list_first_unavailable_and_non_available():
    classes = [cls("class-a", A), cls("class-b", B)]
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-b"), sub("subReq-1", "class-a")))
    assert run([c], classes, [one("slice-1", "node-1", "pool-1", A)]) == [
        alloc(res("req-0/subReq-1", A, "pool-1", "device-1"))]
    c2 = claim("claim-0", first("req-0", sub("subReq-0", "class-b", 2), sub("subReq-1", "class-a", 2)))
    assert run([c2], classes, [one("slice-1", "node-1", "pool-1", A),
                               one("slice-2", "node-1", "pool-2", B)]) is None


def test_prioritized_list_subrequests_with_expressions():
    c = claim("claim-0", req("req-0", "class-a", selectors=[mem_at_least("1Gi")]),
              first("req-1", sub("subReq-0", "class-a", selectors=[mem_at_least("4Gi")]),
                    sub("subReq-1", "class-a", 2, selectors=[mem_at_least("2Gi")])))
    s = slc("slice-1", "node-1", "pool-1", A, dev("device-1", capacity={"memory": "2Gi"}),
            dev("device-2", capacity={"memory": "2Gi"}), dev("device-3", capacity={"memory": "1Gi"}))
    assert run([c], [cls("class-a", A)], [s]) == [alloc(
        res("req-0", A, "pool-1", "device-3"), res("req-1/subReq-1", A, "pool-1", "device-1"),
        res("req-1/subReq-1", A, "pool-1", "device-2"))]


@pytest.mark.parametrize("scope", [["req-0", "req-1"], ["req-0", "req-1/subReq-0"]])
def test_prioritized_list_subrequests_with_constraints(scope):
    # "...-with-constraints-ref-parent-request" and "...-ref-sub-request".
    v = {"driverVersion": {"version": "1.0.0"}}
    slices = [slc("slice-1", "node-1", "pool-1", A, dev("device-1", v, {"memory": "8Gi"})),
              slc("slice-2", "node-1", "pool-2", A,
                  dev("device-2", {"driverVersion": {"version": "2.0.0"}}, {"memory": "2Gi"}),
                  *([dev("device-3", v, {"memory": "1Gi"})] if scope[1] == "req-1" else []))]
    c = claim("claim-0", req("req-0", "class-a", selectors=[mem_at_least("8Gi")]),
              first("req-1", sub("subReq-0", "class-a", selectors=[mem_at_least("2Gi")]),
                    sub("subReq-1", "class-a", selectors=[mem_at_least("1Gi")])),
              constraints=[{"requests": scope, "matchAttribute": f"{A}/driverVersion"}])
    expected_device = "device-3" if scope[1] == "req-1" else "device-2"
    assert run([c], [cls("class-a", A)], slices) == [alloc(
        res("req-0", A, "pool-1", "device-1"), res("req-1/subReq-1", A, "pool-2", expected_device))]


def test_all_devices_prioritized_list_falls_back():
    # "all-devices-slice-without-devices-prioritized-list", "all-devices-some-allocated-prioritized-list"
    classes = [cls("class-a", A), cls("class-b", B)]
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", mode="All"), sub("subReq-1", "class-b")))
    want = [alloc(res("req-0/subReq-1", B, "pool-2", "device-1"))]
    assert run([c], classes, [slc("slice-1", "node-1", "pool-1", A),
                              one("slice-2", "node-1", "pool-2", B)]) == want
    used = AllocatedState(allocated_devices={DeviceID(A, "pool-1", "device-1")})
    assert run([c], classes, [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2")),
                              one("slice-2", "node-1", "pool-2", B)], allocated=used) == want


def test_prioritized_list_disabled():
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a")))
    with pytest.raises(AllocationError, match="DRAPrioritizedList feature is disabled"):
        run([c], [cls("class-a", A)], [], features=Features(prioritized_list=False))


# --- config -----------------------------------------------------------------------------------

def _cfg(driver, attr):
    return {"opaque": {"driver": driver, "parameters": {attr: attr + "Value"}}}


def test_class_and_claim_config():
    # "with-class-device-config-with-multiple-request-and-configs"
    c = claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"), req("req-2", "class-b"))
    got = run([c], [cls("class-a", A, "classAttribute-A"), cls("class-b", B, "classAttribute-B")],
              [many("slice-1", "node-1", "pool-1", A, 2), one("slice-2", "node-1", "pool-1", B)])
    assert got == [alloc(res("req-0", A, "pool-1", "device-0"), res("req-1", A, "pool-1", "device-1"),
                         res("req-2", B, "pool-1", "device-1"), config=[
        {"source": "FromClass", "requests": ["req-0", "req-1"], **_cfg(A, "classAttribute-A")},
        {"source": "FromClass", "requests": ["req-2"], **_cfg(B, "classAttribute-B")}])]
    # "with-claim-config-for-two-requests"
    c = claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"), req("req-2", "class-a"),
              config=[{"requests": ["req-0", "req-1"], **_cfg(A, "deviceAttribute")}])
    got = run([c], [cls("class-a", A)], [many("slice-1", "node-1", "pool-1", A, 3)])
    assert got[0]["devices"]["config"] == [
        {"source": "FromClaim", "requests": ["req-0", "req-1"], **_cfg(A, "deviceAttribute")}]


def test_prioritized_list_device_config():
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a"), sub("subReq-1", "class-b", 2)),
              config=[{"requests": ["req-0/subReq-0"], **_cfg(A, "foo")},
                      {"requests": ["req-0/subReq-1"], **_cfg(B, "bar")}])
    got = run([c], [cls("class-a", A), cls("class-b", B)],
              [slc("slice-1", "node-1", "pool-1", B, dev("device-1"), dev("device-2"))])
    assert got == [alloc(res("req-0/subReq-1", B, "pool-1", "device-1"),
                         res("req-0/subReq-1", B, "pool-1", "device-2"),
                         config=[{"source": "FromClaim", "requests": ["req-0/subReq-1"],
                                  **_cfg(B, "bar")}])]


# --- network-attached devices -----------------------------------------------------------------

def test_network_attached_device():
    s = [one("slice-1", label_selector("region", "region-1"), "pool-1", A)]
    c = [claim("claim-0", req("req-0", "class-a"))]
    assert run(c, [cls("class-a", A)], s) == [
        alloc(res("req-0", A, "pool-1", "device-1"), selector=label_selector("region", "region-1"))]
    # "unsuccessful-allocation-network-attached-device"
    assert run(c, [cls("class-a", A)], s, n=node("node-2", "region-2")) is None


def test_many_network_attached_devices_merge_selectors():
    s = [one("slice-1", label_selector("region", "region-1"), "pool-1", A),
         one("slice-1", "all", "pool-2", A),
         one("slice-1", label_selector("planet", "earth"), "pool-3", A),
         one("slice-1", LOCAL, "pool-4", A)]
    got = run([claim("claim-0", req("req-0", "class-a", 4))], [cls("class-a", A)], s)
    merged = {"nodeSelectorTerms": [{
        "matchExpressions": [{"key": "region", "operator": "In", "values": ["region-1"]},
                             {"key": "planet", "operator": "In", "values": ["earth"]}],
        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]}
    assert got == [alloc(*(res("req-0", A, f"pool-{i}", "device-1") for i in range(1, 5)),
                         selector=merged)]


def test_local_and_network_attached_and_all_nodes():
    s = [one("slice-1", label_selector("region", "region-1"), "pool-1", A),
         one("slice-1", "node-1", "pool-2", A)]
    assert run([claim("claim-0", req("req-0", "class-a", 2))], [cls("class-a", A)], s) == [
        alloc(res("req-0", A, "pool-1", "device-1"), res("req-0", A, "pool-2", "device-1"))]
    # Devices of allNodes slices only: usable everywhere, no nodeSelector.
    assert run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)],
               [one("slice-1", "all", "pool-1", A)]) == [
        alloc(res("req-0", A, "pool-1", "device-1"), selector=None)]


# --- 32-device limit --------------------------------------------------------------------------

def test_too_many_devices():
    # "too-many-devices-single-request", "too-many-devices-total", "many-devices-okay"
    with pytest.raises(AllocationError, match="number of requested devices 500 exceeds the claim limit of 32"):
        run([claim("claim-0", req("req-0", "class-a", 500))], [cls("class-a", A)], [])
    s = [many("slice-1", "node-1", "pool-1", A, 33)]
    with pytest.raises(AllocationError, match="exceeds the claim limit"):
        run([claim("claim-0", req("req-0", "class-a", 32), req("req-1", "class-a"))],
            [cls("class-a", A)], s)
    got = run([claim("claim-0", req("req-0", "class-a", 32))], [cls("class-a", A)], s)
    assert len(got[0]["devices"]["results"]) == 32


def test_all_mode_over_the_limit_is_an_error():
    with pytest.raises(AllocationError, match="number of requested devices 33 exceeds"):
        run([claim("claim-0", req("req-0", "class-a", mode="All"))], [cls("class-a", A)],
            [many("slice-1", "node-1", "pool-1", A, 33)])


def test_prioritized_list_skips_subrequest_over_the_limit():
    # A subrequest that would exceed 32 devices is skipped for a smaller one
    # (upstream "prioritized-list-allocation-result-max-size-exceeded" behaviour).
    c = claim("claim-0", req("req-0", "class-a", 30),
              first("req-1", sub("subReq-0", "class-a", 3), sub("subReq-1", "class-a", 2)))
    got = run([c], [cls("class-a", A)], [many("slice-1", "node-1", "pool-1", A, 40)])
    results = got[0]["devices"]["results"]
    assert len(results) == 32 and results[-1]["request"] == "req-1/subReq-1"


# --- CEL --------------------------------------------------------------------------------------

def test_cel_runtime_error_names_expression_and_device():
    expr = f'device.attributes["{A}"].missing == 1'
    with pytest.raises(AllocationError) as err:
        run([claim("claim-0", req("req-0", "class-a", selectors=[expr]))], [cls("class-a", A)],
            [one("slice-1", "node-1", "pool-1", A)])
    assert "driver-a/pool-1/device-1" in str(err.value) and expr in str(err.value)
    assert "CEL runtime error" in str(err.value)


def test_invalid_cel_in_class_is_an_error():
    # Upstream "invalid-CEL-one-device-class".
    with pytest.raises(AllocationError, match="class class-a: selector #0 .*undeclared reference"):
        run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A, extra="noSuchVar")],
            [one("slice-1", "node-1", "pool-1", A)])


# --- partitionable devices (counters) ---------------------------------------------------------

def _partitioned(*devices):
    return [slc("slice-1", "node-1", "pool-1", A, *devices,
                counters={"gpu-0": {"memory": "8Gi", "slices": "4"}})]


def _consumes(memory, slices_):
    return [{"counterSet": "gpu-0", "counters": {"memory": {"value": memory}, "slices": {"value": slices_}}}]


def test_partitions_share_a_counter_set():
    s = _partitioned(dev("half-0", consumesCounters=_consumes("4Gi", "2")),
                     dev("half-1", consumesCounters=_consumes("4Gi", "2")),
                     dev("whole", consumesCounters=_consumes("8Gi", "4")))
    got = run([claim("claim-0", req("req-0", "class-a", 2))], [cls("class-a", A)], s)
    assert got == [alloc(res("req-0", A, "pool-1", "half-0"), res("req-0", A, "pool-1", "half-1"))]
    # Two halves in use leave no counters for the whole device.
    used = AllocatedState(allocated_devices={DeviceID(A, "pool-1", "half-0")})
    o = outcome([claim("claim-0", req("req-0", "class-a", 2))], [cls("class-a", A)], s, allocated=used)
    assert o.results is None
    assert "insufficient counter memory in gpu-0" in o.reasons


def test_partitionable_devices_disabled_skips_counter_devices():
    s = _partitioned(dev("half-0", consumesCounters=_consumes("4Gi", "2")))
    assert run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)], s,
               features=Features(partitionable_devices=False)) is None


# --- consumable capacity ----------------------------------------------------------------------

RANGE = {"default": 2, "validRange": {"min": 2, "step": 2, "max": 4}}


def _shared(name="device-1", value=4, policy=None):
    cap = {"value": value, **({"requestPolicy": policy} if policy else {})}
    return dev(name, capacity={"capacity-0": cap}, allowMultipleAllocations=True)


def _cap_req(name, amount=None, count=1):
    fields = {"capacity": {"requests": {"capacity-0": amount}}} if amount is not None else {}
    return req(name, "class-a", count, **fields)


def test_consumable_capacity_shares_a_device():
    s = [slc("slice-1", "node-1", "pool-1", A, _shared(policy=RANGE))]
    got = run([claim("claim-0", _cap_req("req-0", 1)), claim("claim-1", _cap_req("req-0"))],
              [cls("class-a", A)], s)
    results = [g["devices"]["results"][0] for g in got]
    # 1 rounds up to min 2; no request takes the default 2; together they fill the capacity 4.
    assert [r["consumedCapacity"] for r in results] == [{"capacity-0": "2"}, {"capacity-0": "2"}]
    assert results[0]["shareID"] != results[1]["shareID"]
    assert {r["device"] for r in results} == {"device-1"}
    # A third share does not fit.
    assert run([claim(f"claim-{i}", _cap_req("req-0")) for i in range(3)], [cls("class-a", A)], s) is None


def test_consumable_capacity_policy_violations():
    s = [slc("slice-1", "node-1", "pool-1", A, _shared(policy=RANGE))]
    # Above validRange max: the device is not eligible.
    assert run([claim("claim-0", _cap_req("req-0", 5))], [cls("class-a", A)], s) is None
    vv = {"default": "1Gi", "validValues": ["1Gi", "2Gi"]}
    s = [slc("slice-1", "node-1", "pool-1", A, _shared(value="4Gi", policy=vv))]
    got = run([claim("claim-0", _cap_req("req-0", "1500Mi"))], [cls("class-a", A)], s)
    assert got[0]["devices"]["results"][0]["consumedCapacity"] == {"capacity-0": "2Gi"}
    assert run([claim("claim-0", _cap_req("req-0", "3Gi"))], [cls("class-a", A)], s) is None


def test_consumable_capacity_respects_existing_shares():
    s = [slc("slice-1", "node-1", "pool-1", A, _shared(policy=RANGE))]
    used = AllocatedState(
        allocated_shared_device_ids={SharedDeviceID(A, "pool-1", "device-1", "x")},
        aggregated_capacity={DeviceID(A, "pool-1", "device-1"): {"capacity-0": 4}})
    assert run([claim("claim-0", _cap_req("req-0"))], [cls("class-a", A)], s, allocated=used) is None


def test_capacity_request_on_dedicated_device_is_a_filter():
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1", capacity={"capacity-0": 1}),
             dev("device-2", capacity={"capacity-0": 4}))]
    got = run([claim("claim-0", _cap_req("req-0", 3))], [cls("class-a", A)], s)
    assert got == [alloc(res("req-0", A, "pool-1", "device-2"))]


def test_allocated_state_from_claims():
    s = [slc("slice-1", "node-1", "pool-1", A, _shared(policy=RANGE), dev("device-2"))]
    first_round = Allocator([cls("class-a", A)], s, AllocatedState()).allocate(
        node(), [claim("claim-0", _cap_req("req-0", 4))])
    done = claim("claim-0", _cap_req("req-0", 4))
    done.status.allocation = first_round[0]
    state = allocated_state([done])
    assert state.aggregated_capacity == {DeviceID(A, "pool-1", "device-1"): {"capacity-0": 4}}
    got = run([claim("claim-1", req("req-0", "class-a"))], [cls("class-a", A)], s, allocated=state)
    assert got[0]["devices"]["results"][0]["device"] == "device-2"


# --- taints -----------------------------------------------------------------------------------

TAINT = {"key": "example.com/taint", "value": "tainted", "effect": "NoSchedule"}


@pytest.mark.parametrize("effect", ["NoSchedule", "NoExecute"])
def test_tainted_devices_are_skipped(effect):
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1", taints=[{**TAINT, "effect": effect}]),
             dev("device-2"))]
    got = run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)], s)
    assert got == [alloc(res("req-0", A, "pool-1", "device-2"))]
    o = outcome([claim("claim-0", req("req-0", "class-a", 2))], [cls("class-a", A)], s)
    assert o.results is None
    assert f"device device-1 has a taint not tolerated: example.com/taint=tainted:{effect}" in o.reasons


def test_tolerated_taint_and_result_tolerations():
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1", taints=[TAINT]))]
    tol = {"key": "example.com/taint", "operator": "Exists", "effect": "NoSchedule"}
    got = run([claim("claim-0", req("req-0", "class-a", tolerations=[tol]))], [cls("class-a", A)], s)
    assert got == [alloc(res("req-0", A, "pool-1", "device-1", tolerations=[tol]))]
    wrong = {"key": "example.com/taint", "operator": "Equal", "value": "other", "effect": "NoSchedule"}
    assert run([claim("claim-0", req("req-0", "class-a", tolerations=[wrong]))], [cls("class-a", A)], s) is None
    # Feature off: taints are ignored.
    assert run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)], s,
               features=Features(device_taints=False)) == [alloc(res("req-0", A, "pool-1", "device-1"))]


# --- incomplete pools, per-device node selection ----------------------------------------------

def test_no_allocation_from_incomplete_pools():
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), count=2)]
    assert run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)], s) is None


def test_per_device_node_selection():
    s = [slc("slice-1", "per-device", "pool-1", A, dev("device-1", nodeName="node-2"),
             dev("device-2", allNodes=True))]
    assert run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A)], s) == [
        alloc(res("req-0", A, "pool-1", "device-2"), selector=None)]


# --- search budget and diagnosis --------------------------------------------------------------

def test_combinations_not_permutations():
    # Upstream "interrupt"/PR #133678 shape: 4 devices, a request for 5 -> no solution, and only
    # ascending device choices are explored.
    o = outcome([claim("claim-0", req("req-0", "class-a", 5))], [cls("class-a", A)],
                [many("slice-1", "node-1", "pool-1", A, 4)])
    assert o.results is None and o.steps == 16


def test_search_budget_exceeded():
    with pytest.raises(SearchBudgetExceeded, match="gave up after 10 steps"):
        run([claim("claim-0", req("req-0", "class-a", 8))], [cls("class-a", A)],
            [many("slice-1", "node-1", "pool-1", A, 20)], max_steps=10)


def test_why_unschedulable_selector_message():
    o = outcome([claim("claim-0", req("gpu", "class-a", selectors=[mem_at_least("80Gi")]))],
                [cls("class-a", A)], [slc("slice-1", "node-1", "pool-1", A,
                                          *(dev(f"gpu-{i}", capacity={"memory": "40Gi"}) for i in range(8)))])
    assert o.results is None
    assert o.message() == "no device matched selector of request gpu (8 devices checked)"


def test_inputs_are_not_mutated():
    c = claim("claim-0", req("req-0", "class-a"))
    s = one("slice-1", "node-1", "pool-1", A)
    before = (c.to_dict(), s.to_dict())
    run([c], [cls("class-a", A)], [s])
    assert (c.to_dict(), s.to_dict()) == before


# --- consumable capacity with partitionable devices (upstream cases of the same names) ---------

def _from_counters(name, sets, policy_capacity=None, attrs=None):
    """A shared device whose capacity mirrors its counter consumption (upstream "fromCounters")."""
    capacity = {n: {"value": v} for counters in sets.values() for n, v in counters.items()}
    for n, v in (policy_capacity or {}).items():
        capacity[n] = {"value": v, "requestPolicy": RANGE}
    return dev(name, attrs, allowMultipleAllocations=True, capacity=capacity,
               consumesCounters=[{"counterSet": s, "counters": {n: {"value": v} for n, v in c.items()}}
                                 for s, c in sets.items()])


def test_allow_multiple_allocations_with_partitionable_device():
    s = [slc("slice-1", "node-1", "pool-1", A,
             *(_from_counters(f"device-{i}", {"counter-set-1": {"memory": m}})
               for i, m in ((1, "4Gi"), (2, "6Gi"), (3, "4Gi"))), count=2),
         slc("slice-2", "node-1", "pool-1", A, count=2, counters={"counter-set-1": {"memory": "8Gi"}})]
    c = claim("claim-0", req("req-0", "class-a"),
              first("req-1", sub("subReq-0", "class-a", selectors=[mem_at_least("6Gi")]),
                    sub("subReq-1", "class-a", selectors=[mem_at_least("4Gi")])))
    got = run([c], [cls("class-a", A, extra="device.allowMultipleAllocations == true")], s)
    results = got[0]["devices"]["results"]
    assert [(r["request"], r["device"], r["consumedCapacity"]) for r in results] == [
        ("req-0", "device-1", {"memory": "4Gi"}), ("req-1/subReq-1", "device-3", {"memory": "4Gi"})]


def test_consumable_capacity_with_partitionable_device_multiple_capacity_pools():
    devices = [_from_counters(f"device-{i}", {"counter-set-1": {"capacity-0": c0},
                                              "counter-set-2": {"capacity-1": 4}},
                              policy_capacity={"capacity-1": 4})
               for i, c0 in ((1, 2), (2, 4), (3, 2))]
    s = [slc("slice-1", "node-1", "pool-1", A, *devices, count=2),
         slc("slice-2", "node-1", "pool-1", A, count=2,
             counters={"counter-set-1": {"capacity-0": 4}, "counter-set-2": {"capacity-1": 8}})]
    cap = f'device.capacity["{A}"]["capacity-0"].compareTo(quantity("%s")) >= 0'
    one_unit = {"capacity": {"requests": {"capacity-0": 1}}}
    c = claim("claim-0", _cap_req("req-0", 1), _cap_req("req-2", 2),
              first("req-1", sub("subReq-0", "class-a", selectors=[cap % 4], **one_unit),
                    sub("subReq-1", "class-a", selectors=[cap % 2], **one_unit)))
    got = run([c], [cls("class-a", A)], s)
    results = got[0]["devices"]["results"]
    assert [(r["request"], r["device"], r["consumedCapacity"]) for r in results] == [
        ("req-0", "device-1", {"capacity-0": "1", "capacity-1": "2"}),
        ("req-2", "device-3", {"capacity-0": "2", "capacity-1": "2"}),
        ("req-1/subReq-1", "device-1", {"capacity-0": "1", "capacity-1": "2"})]


def test_allow_multiple_allocations_with_shared_device_counter_cross_cycle():
    s = [slc("slice-1", "node-1", "pool-1", A,
             _from_counters("device-1", {"counter-set-1": {"capacity-0": 1}}, attrs={"mode": {"string": "a"}}),
             _from_counters("device-2", {"counter-set-1": {"capacity-0": 1}}, attrs={"mode": {"string": "b"}}),
             count=2),
         slc("slice-2", "node-1", "pool-1", A, count=2, counters={"counter-set-1": {"capacity-0": 1}})]
    used = AllocatedState(
        allocated_shared_device_ids={SharedDeviceID(A, "pool-1", "device-1", "aaaaaaaa")},
        aggregated_capacity={DeviceID(A, "pool-1", "device-1"): {"capacity-0": 1}})
    c = claim("claim-0", req("req-0", "class-a", selectors=[f'device.attributes["{A}"].mode == "b"'],
                             capacity={"requests": {"capacity-0": 1}}))
    assert run([c], [cls("class-a", A, extra="device.allowMultipleAllocations == true")], s,
               allocated=used) is None


def test_consumable_capacity_all_mode_allocating_insufficient():
    # "consumable-capacity-multi-allocatable-device-allocation-mode-all-allocating-insufficient"
    s = [slc("slice-1", "node-1", "pool-1", A, _shared("device-1", 1), _shared("device-2", 1))]
    c = claim("claim-0", _cap_req("req-0", 1),
              req("req-1", "class-a", mode="All", capacity={"requests": {"capacity-0": 1}}))
    assert run([c], [cls("class-a", A)], s) is None
    # "...-all-in-use-insufficient": device-1 is full from an earlier cycle; All takes device-2.
    used = AllocatedState(aggregated_capacity={DeviceID(A, "pool-1", "device-1"): {"capacity-0": 1}})
    got = run([claim("claim-0", req("req-0", "class-a", mode="All",
                                    capacity={"requests": {"capacity-0": 1}}))],
              [cls("class-a", A)], s, allocated=used)
    assert [r["device"] for r in got[0]["devices"]["results"]] == ["device-2"]


# --- an allocator that lives while claims come and go (the scheduler's) -----------------------

def _live(slices):
    tracker = AllocationTracker()
    allocator = Allocator([cls("class-a", A)], slices, tracker.state, pool_versions=tracker.pool_versions)
    return tracker, allocator


def _allocated(name, allocator, request):
    """The claim as the scheduler writes it, with what ``allocator`` found for it on node-1."""
    done = claim(name, request)
    done.metadata.namespace = "default"
    found = allocator.allocate(node(), [done])
    assert found is not None, f"{name} did not fit"
    done.status.allocation = found[0]
    return done


def run_on(allocator, name):
    """The device a one-device claim gets on node-1, or None."""
    found = allocator.allocate(node(), [claim(name, req("req-0", "class-a"))])
    return found[0].devices.results[0].device if found else None


def test_live_allocator_sees_claims_allocated_and_freed():
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2"))]
    tracker, allocator = _live(s)
    first = _allocated("claim-0", allocator, req("req-0", "class-a"))
    assert first.status.allocation.devices.results[0].device == "device-1"
    tracker.set(first.key, first)
    second = _allocated("claim-1", allocator, req("req-0", "class-a"))
    assert second.status.allocation.devices.results[0].device == "device-2"
    tracker.set(second.key, second)
    full = allocator.try_allocate(node(), [claim("claim-2", req("req-0", "class-a"))])
    assert full.results is None
    assert full.reasons == ["all 2 devices checked for request req-0 are in use"]
    tracker.set(first.key, None)  # claim-0 deleted: device-1 is free again
    assert run_on(allocator, "claim-2") == "device-1"
    # The live state is what allocated_state builds from the claims still allocated.
    assert tracker.state == allocated_state([second])


def test_live_allocator_recounts_counters_when_partitions_come_and_go():
    whole = 'device.attributes["driver-a"].size == "whole"'
    s = _partitioned(dev("half-0", attrs={"size": {"string": "half"}}, consumesCounters=_consumes("4Gi", "2")),
                     dev("whole", attrs={"size": {"string": "whole"}}, consumesCounters=_consumes("8Gi", "4")))
    tracker, allocator = _live(s)
    want_whole = claim("claim-1", req("req-0", "class-a", selectors=[whole]))
    assert allocator.allocate(node(), [want_whole]) is not None
    half = _allocated("claim-0", allocator, req("req-0", "class-a"))
    assert half.status.allocation.devices.results[0].device == "half-0"
    tracker.set(half.key, half)
    blocked = allocator.try_allocate(node(), [want_whole])
    assert blocked.results is None and "insufficient counter memory in gpu-0" in blocked.reasons
    tracker.set(half.key, None)
    assert allocator.allocate(node(), [want_whole]) is not None
