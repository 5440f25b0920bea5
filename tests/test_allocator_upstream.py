"""Upstream allocator cases not restated in test_allocator.py.

Each test ports the behaviour (inputs and expected result) of one or more cases of the table in
k8s.io/dynamic-resource-allocation/structured/internal/allocatortesting/allocator_testing.go,
named in a comment, in the table's order. Fixtures follow upstream: node-1 carries the labels
region=region-1 and planet=earth; class(name, driver) selects ``device.driver == driver``;
slices have generation 1 and resourceSliceCount 1 unless stated. As upstream (gomega
ConsistOf), the order of the results inside one allocation does not matter, except where
upstream compares whole AllocationResult structs (the binding-condition cases); shareIDs are
compared as "set or not" and quantities by value.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

import pytest

from mlplane.api.core import Node
from mlplane.api.quantity import parse_quantity
from mlplane.api.resource import DeviceClass, DeviceSelector, ResourceClaim, ResourceSlice
from mlplane.policy.device.allocator import (AllocatedState, AllocationError, Allocator, Features,
                                             PreparedClaims)
from mlplane.policy.device.model import DeviceID

A, B = "driver-a", "driver-b"
SHARE = "<shareID>"


# --- fixtures (upstream's test object generators, restated) -----------------------------------

def node(name="node-1", region="region-1") -> Node:
    return Node.model_validate({"metadata": {"name": name,
                                             "labels": {"region": region, "planet": "earth"}}})


def cls(name, driver, *, expr=None, config=None, multi=None) -> DeviceClass:
    """class(name, driver); ``multi`` adds ``device.allowMultipleAllocations == multi``
    (upstream classWithAllowMultipleAllocations); ``config`` an opaque {attr: attrValue}."""
    if expr is None:
        expr = f'device.driver == "{driver}"'
        if multi is not None:
            expr += f" && device.allowMultipleAllocations == {str(multi).lower()}"
    spec: dict = {"selectors": [{"cel": {"expression": expr}}]}
    if config:
        spec["config"] = [_cfg(driver, config)]
    return DeviceClass.model_validate({"metadata": {"name": name}, "spec": spec})


def _cfg(driver, attr) -> dict:
    return {"opaque": {"driver": driver, "parameters": {attr: attr + "Value"}}}


def dev(name, attrs=None, capacity=None, **fields) -> dict:
    out: dict = {"name": name, **fields}
    if attrs:
        out["attributes"] = attrs
    if capacity:
        out["capacity"] = {k: (v if isinstance(v, dict) else {"value": v}) for k, v in capacity.items()}
    return out


def cdev(name, sets, *, from_counters=True, **fields) -> dict:
    """A device consuming counters (``sets``: counter set -> {counter: quantity}); with
    ``from_counters`` its capacity mirrors the consumption (upstream ``fromCounters``)."""
    out = dev(name, **fields)
    out["consumesCounters"] = [{"counterSet": s, "counters": {n: {"value": v} for n, v in c.items()}}
                               for s, c in sets.items()]
    if from_counters:
        out["capacity"] = {**out.get("capacity", {}),
                           **{n: {"value": v} for c in sets.values() for n, v in c.items()}}
    return out


RANGE = {"default": "2", "validRange": {"min": "2", "step": "2", "max": "4"}}


def ranged(name, value, attrs=None, multi=True, capacity_name="capacity-0") -> dict:
    """withCapacityRequestPolicyRange: default 2, range min 2, step 2, max 4."""
    out = dev(name, attrs, capacity={capacity_name: {"value": value, "requestPolicy": RANGE}})
    if multi:
        out["allowMultipleAllocations"] = True
    return out


def valid_values(name, default, value, more=()) -> dict:
    """withCapacityRequestPolicyValidValues: validValues = [default, *more]."""
    policy = {"default": default, "validValues": [default, *more]}
    return dev(name, capacity={"capacity-0": {"value": value, "requestPolicy": policy}},
               allowMultipleAllocations=True)


def shared(name, capacity=None, attrs=None) -> dict:
    return dev(name, attrs, capacity, allowMultipleAllocations=True)


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
    if counters is not None:
        spec["sharedCounters"] = [{"name": n, "counters": {k: {"value": v} for k, v in c.items()}}
                                  for n, c in counters.items()]
    return ResourceSlice.model_validate({"metadata": {"name": name}, "spec": spec})


def many(name, where, pool, driver, n):
    return slc(name, where, pool, driver, *(dev(f"device-{i}") for i in range(n)))


def label_selector(key, value) -> dict:
    return {"nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": "In",
                                                          "values": [value]}]}]}


def local(name="node-1") -> dict:
    return {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                    "values": [name]}]}]}


def req(name, class_name, count=1, *, mode=None, selectors=(), cap=None, **fields) -> dict:
    exactly: dict = {"deviceClassName": class_name, **fields}
    if mode == "All":
        exactly["allocationMode"] = "All"
    else:
        exactly["count"] = count
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    if cap is not None:
        exactly["capacity"] = {"requests": {"capacity-0": cap}}
    return {"name": name, "exactly": exactly}


def sub(name, class_name, count=1, **kw) -> dict:
    return {"name": name, **req(name, class_name, count, **kw)["exactly"]}


def first(name, *subs) -> dict:
    return {"name": name, "firstAvailable": list(subs)}


def claim(name, *requests, constraints=None, config=None) -> ResourceClaim:
    devices: dict = {"requests": list(requests)}
    if constraints:
        devices["constraints"] = constraints
    if config:
        devices["config"] = config
    return ResourceClaim.model_validate({"metadata": {"name": name}, "spec": {"devices": devices}})


def mem(q, driver=A):
    return f'device.capacity["{driver}"].memory.compareTo(quantity("{q}")) >= 0'


def gen(value, driver=A):
    return f'device.attributes["{driver}"].generation == "{value}"'


def res(request, driver, pool, device, **extra) -> dict:
    return {"request": request, "driver": driver, "pool": pool, "device": device, **extra}


def sres(request, driver, pool, device, consumed=None) -> dict:
    """A result with a shareID (and consumed capacity, when given)."""
    out = res(request, driver, pool, device, shareID=SHARE)
    if consumed:
        out["consumedCapacity"] = consumed
    return out


def alloc(*results, selector="local", config=None) -> dict:
    devices: dict = {"results": list(results)}
    if config:
        devices["config"] = config
    out: dict = {"devices": devices}
    if selector == "local":
        selector = local()
    if selector is not None:
        out["nodeSelector"] = selector
    return out


def _norm(allocation: dict, ordered: bool) -> dict:
    out = json.loads(json.dumps(allocation))
    results = out["devices"]["results"]
    for r in results:
        if "shareID" in r:
            r["shareID"] = SHARE
        if "consumedCapacity" in r:
            r["consumedCapacity"] = {k: str(parse_quantity(v).normalize())
                                     for k, v in r["consumedCapacity"].items()}
        for k in ("bindingConditions", "bindingFailureConditions", "tolerations"):
            if k in r and not r[k]:
                del r[k]
    if not ordered:
        results.sort(key=lambda r: json.dumps(r, sort_keys=True))
    return out


def run(claims, classes, slices, *, n=None, allocated=None, features=Features(), steps=None):
    """What the allocator returns, in the v1 wire shape (None: no solution); with ``steps`` also
    check upstream's expectNumAllocateOneInvocations."""
    allocator = Allocator(classes, slices, allocated or AllocatedState(), features)
    outcome = allocator.try_allocate(n or node(), claims)
    if steps is not None:
        assert outcome.steps == steps
    if outcome.results is None:
        return None
    return [r.model_dump(by_alias=True, exclude_none=True, mode="json") for r in outcome.results]


def check(got, *want, ordered=False):
    """``got`` equals ``want`` (one allocation per claim, in claim order)."""
    assert got is not None, "no allocation found"
    assert [_norm(g, ordered) for g in got] == [_norm(w, ordered) for w in want]


def used(*devices, driver=A, pool="pool-1") -> AllocatedState:
    return AllocatedState(allocated_devices={DeviceID(driver, pool, d) for d in devices})


def capacity_in_use(amounts: dict) -> AllocatedState:
    return AllocatedState(aggregated_capacity={DeviceID(A, "pool-1", d): {"capacity-0": Decimal(v)}
                                               for d, v in amounts.items()})


CLASS_A, CLASS_B = cls("class-a", A), cls("class-b", B)
ONE_A = slc("slice-1", "node-1", "pool-1", A, dev("device-1"))


# --- basics -----------------------------------------------------------------------------------

def test_empty():
    # "empty": nothing to allocate, nothing given.
    assert run([], [], []) == []


def test_empty_class():
    # "empty-class": a request without a class name is an error.
    c = claim("claim-0", req("req-0", ""))
    with pytest.raises(AllocationError, match=r"claim claim-0, request req-0: missing device class name "
                                              r"\(unsupported request type\?\)"):
        run([c], [CLASS_A], [ONE_A])


def test_all_devices_plus_another_single_devices():
    # "all-devices-plus-another" and "all-devices-plus-another-reversed".
    all_a = claim("claim-0", req("req-0", "class-a", mode="All"))
    one_b = claim("claim-1", req("req-0", "class-b"))
    s = [ONE_A, slc("slice-1", "node-1", "pool-1", B, dev("device-1"))]
    check(run([all_a, one_b], [CLASS_A, CLASS_B], s),
          alloc(res("req-0", A, "pool-1", "device-1")), alloc(res("req-0", B, "pool-1", "device-1")))
    check(run([one_b, all_a], [CLASS_A, CLASS_B], s),
          alloc(res("req-0", B, "pool-1", "device-1")), alloc(res("req-0", A, "pool-1", "device-1")))


def test_all_devices_no_slices_prioritized_list():
    # "all-devices-no-slices-prioritized-list": no slice of driver-a at all.
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", mode="All"), sub("subReq-1", "class-b")))
    check(run([c], [CLASS_A, CLASS_B], [slc("slice-2", "node-1", "pool-2", B, dev("device-1"))]),
          alloc(res("req-0/subReq-1", B, "pool-2", "device-1")))


# --- config -----------------------------------------------------------------------------------

def test_with_class_device_config():
    # "with-class-device-config"
    got = run([claim("claim-0", req("req-0", "class-a"))], [cls("class-a", A, config="classAttribute")],
              [ONE_A])
    check(got, alloc(res("req-0", A, "pool-1", "device-1"),
                     config=[{"source": "FromClass", "requests": ["req-0"], **_cfg(A, "classAttribute")}]))


def test_claim_with_device_config():
    # "claim-with-device-config": a claim config naming no requests applies to all of them.
    c = claim("claim-0", req("req-0", "class-a"), config=[_cfg(A, "deviceAttribute")])
    check(run([c], [CLASS_A], [ONE_A]),
          alloc(res("req-0", A, "pool-1", "device-1"),
                config=[{"source": "FromClaim", **_cfg(A, "deviceAttribute")}]))


# --- invalid requests -------------------------------------------------------------------------

def test_unknown_selector():
    # "unknown-selector": a selector without CEL (a future selector type) is refused.
    c = claim("claim-0", req("req-0", "class-a"))
    c.spec.devices.requests[0].exactly.selectors = [DeviceSelector.model_validate({})]
    with pytest.raises(AllocationError, match=r"CEL expression empty \(unsupported selector type\?\)"):
        run([c], [CLASS_A], [ONE_A])


def test_unknown_allocation_mode():
    # "unknown-allocation-mode": the API refuses the mode already; the allocator, given one,
    # refuses it too.
    prepared = PreparedClaims([claim("claim-0", req("req-0", "class-a"))])
    c = prepared.claims[0]
    prepared.claims[0] = dataclasses.replace(
        c, requests=(dataclasses.replace(c.requests[0], mode="future-mode"),))
    allocator = Allocator([CLASS_A], [ONE_A], AllocatedState())
    with pytest.raises(AllocationError, match="unsupported count mode future-mode"):
        allocator.try_allocate(node(), prepared)


def test_unknown_constraint():
    # "unknown-constraint"
    c = claim("claim-0", req("req-0", "class-a"), constraints=[{}])
    with pytest.raises(AllocationError, match=r"empty constraint \(unsupported constraint type\?\)"):
        run([c], [CLASS_A], [ONE_A])


@pytest.mark.parametrize("mode", [None, "All"])
def test_invalid_cel_in_request(mode):
    # "invalid-CEL-one-device" and "invalid-CEL-all-devices"
    c = claim("claim-0", req("req-0", "class-a", mode=mode, selectors=["noSuchVar"]))
    with pytest.raises(AllocationError, match="undeclared reference"):
        run([c], [CLASS_A], [ONE_A])


def test_many_devices_okay_without_slices():
    # "many-devices-okay": 32 devices is within the limit; without slices there is no solution
    # and no error. "all-devices-invalid-CEL" asks for 500: over the limit.
    assert run([claim("claim-0", req("req-0", "class-a", 32))], [CLASS_A], []) is None
    with pytest.raises(AllocationError, match="exceeds the claim limit"):
        run([claim("claim-0", req("req-0", "class-a", 500))], [CLASS_A], [])


# --- firstAvailable ---------------------------------------------------------------------------

def test_prioritized_list_class_config():
    # "prioritized-list-class-config": only the class config of the chosen subrequest.
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", 2), sub("subReq-1", "class-b", 2)))
    s = [slc("slice-1", "node-1", "pool-1", B, dev("device-1"), dev("device-2")),
         slc("slice-2", "node-1", "pool-2", A, dev("device-3"))]
    check(run([c], [cls("class-a", A, config="foo"), cls("class-b", B, config="bar")], s),
          alloc(res("req-0/subReq-1", B, "pool-1", "device-1"),
                res("req-0/subReq-1", B, "pool-1", "device-2"),
                config=[{"source": "FromClass", "requests": ["req-0/subReq-1"], **_cfg(B, "bar")}]))


def test_prioritized_list_subrequests_with_allocation_mode_all():
    # "prioritized-list-subrequests-with-allocation-mode-all": All fails on an allocated device.
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", mode="All"), sub("subReq-1", "class-a")))
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2"))]
    check(run([c], [CLASS_A], s, allocated=used("device-1")),
          alloc(res("req-0/subReq-1", A, "pool-1", "device-2")))


def test_prioritized_list_allocation_mode_all_multiple_requests():
    # "prioritized-list-allocation-mode-all-multiple-requests"
    c = claim("claim-0", req("req-0", "class-a"),
              first("req-1", sub("subReq-0", "class-a", mode="All"), sub("subReq-1", "class-a")))
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2"))]
    check(run([c], [CLASS_A], s), alloc(res("req-0", A, "pool-1", "device-1"),
                                        res("req-1/subReq-1", A, "pool-1", "device-2")))


def _big_and_small():
    return [slc("slice-1", "node-1", "pool-1", A, dev("device-1", capacity={"memory": "8Gi"})),
            slc("slice-2", "node-1", "pool-2", A, dev("device-2", capacity={"memory": "4Gi"}))]


def test_prioritized_list_multi_request():
    # "prioritized-list-multi-request"
    c = claim("claim-0", req("req-1", "class-a", selectors=[mem("8Gi")]),
              first("req-0", sub("subReq-0", "class-a", selectors=[mem("8Gi")]),
                    sub("subReq-1", "class-a", selectors=[mem("4Gi")])))
    check(run([c], [CLASS_A], _big_and_small()),
          alloc(res("req-1", A, "pool-1", "device-1"), res("req-0/subReq-1", A, "pool-2", "device-2")))


def test_prioritized_list_with_backtracking():
    # "prioritized-list-with-backtracking": subReq-0 takes the 8Gi device first; req-1 needs it.
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", selectors=[mem("8Gi")]),
                               sub("subReq-1", "class-a", selectors=[mem("4Gi")])),
              req("req-1", "class-a", selectors=[mem("8Gi")]))
    check(run([c], [CLASS_A], _big_and_small()),
          alloc(res("req-0/subReq-1", A, "pool-2", "device-2"), res("req-1", A, "pool-1", "device-1")))


def test_prioritized_list_too_many_in_first_subrequest():
    # "prioritized-list-too-many-in-first-subrequest": 500 is skipped, not an error.
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-b", 500), sub("subReq-1", "class-a")))
    check(run([c], [CLASS_A, CLASS_B], [ONE_A]), alloc(res("req-0/subReq-1", A, "pool-1", "device-1")))


# --- partitionable devices --------------------------------------------------------------------

def _counter_slices(devices, counters, *, pool="pool-1", names=("slice-1", "slice-2"), where="node-1"):
    return [slc(names[0], where, pool, A, *devices, count=2),
            slc(names[1], where, pool, A, count=2, counters=counters)]


def test_partitionable_devices_single_device():
    # "partitionable-devices-single-device"
    s = _counter_slices([cdev("device-1", {"counter-set-1": {"memory": "4Gi"}}, from_counters=False)],
                        {"counter-set-1": {"memory": "8Gi"}})
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s),
          alloc(res("req-0", A, "pool-1", "device-1")))


def _three_partitions(sizes=("4Gi", "6Gi", "4Gi")):
    return [cdev(f"device-{i}", {"counter-set-1": {"memory": m}}) for i, m in enumerate(sizes, 1)]


def test_partitionable_devices_prioritized_list():
    # "partitionable-devices-prioritized-list": 4Gi + 6Gi would exceed the 8Gi counter.
    c = claim("claim-0", req("req-0", "class-a"),
              first("req-1", sub("subReq-0", "class-a", selectors=[mem("6Gi")]),
                    sub("subReq-1", "class-a", selectors=[mem("4Gi")])))
    s = _counter_slices(_three_partitions(), {"counter-set-1": {"memory": "8Gi"}})
    check(run([c], [CLASS_A], s), alloc(res("req-0", A, "pool-1", "device-1"),
                                        res("req-1/subReq-1", A, "pool-1", "device-3")))


def test_partitionable_devices_multiple_devices():
    # "partitionable-devices-multiple-devices"
    c = claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"))
    s = _counter_slices(_three_partitions(), {"counter-set-1": {"memory": "8Gi"}})
    check(run([c], [CLASS_A], s), alloc(res("req-0", A, "pool-1", "device-1"),
                                        res("req-1", A, "pool-1", "device-3")))


def test_partitionable_devices_multiple_capacity_pools():
    # "partitionable-devices-multiple-capacity-pools": two counter sets; cpus run out.
    devices = [cdev(f"device-{i}", {"counter-set-1": {"memory": m}, "counter-set-2": {"cpus": c}})
               for i, m, c in ((1, "4Gi", "4"), (2, "6Gi", "6"), (3, "4Gi", "4"))]
    c = claim("claim-0", req("req-0", "class-a"),
              first("req-1", sub("subReq-0", "class-a", selectors=[mem("6Gi")]),
                    sub("subReq-1", "class-a", selectors=[mem("4Gi")])))
    s = _counter_slices(devices, {"counter-set-1": {"memory": "18Gi"}, "counter-set-2": {"cpus": "8"}})
    check(run([c], [CLASS_A], s), alloc(res("req-0", A, "pool-1", "device-1"),
                                        res("req-1/subReq-1", A, "pool-1", "device-3")))


def test_partitionable_devices_multiple_counters():
    # "partitionable-devices-multiple-counters"
    spec = {1: ({"memory": "4Gi", "cpus": "6"}, {"cpus": "4", "memory": "2Gi"}),
            2: ({"memory": "6Gi", "cpus": "4"}, {"cpus": "6", "memory": "6Gi"}),
            3: ({"memory": "4Gi", "cpus": "4"}, {"cpus": "4", "memory": "4Gi"})}
    devices = [cdev(f"device-{i}", {"counter-set-1": s1, "counter-set-2": s2}, from_counters=False)
               for i, (s1, s2) in spec.items()]
    s = _counter_slices(devices, {"counter-set-1": {"cpus": "8", "memory": "18Gi"},
                                  "counter-set-2": {"cpus": "12", "memory": "18Gi"}})
    check(run([claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"))], [CLASS_A], s),
          alloc(res("req-0", A, "pool-1", "device-2"), res("req-1", A, "pool-1", "device-3")))


def test_partitionable_devices_multiple_pools():
    # "partitionable-devices-multiple-pools": pool-1's counters are used up by allocated devices.
    def devices(spec):
        return [cdev(f"device-{i}", {"counter-set-1": {"cpus": c, "memory": m}})
                for i, (c, m) in enumerate(spec, 1)]
    counters = {"counter-set-1": {"cpus": "8", "memory": "18Gi"}}
    s = (_counter_slices(devices([("6", "4Gi"), ("4", "6Gi"), ("4", "4Gi")]), counters) +
         _counter_slices(devices([("6", "4Gi"), ("1", "7Gi"), ("1", "7Gi")]), counters, pool="pool-2",
                         names=("slice-3", "slice-4")))
    state = AllocatedState(allocated_devices={DeviceID(A, "pool-1", "device-2"),
                                              DeviceID(A, "pool-1", "device-3"),
                                              DeviceID(A, "pool-2", "device-1")})
    c = claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"))
    check(run([c], [CLASS_A], s, allocated=state),
          alloc(res("req-0", A, "pool-2", "device-2"), res("req-1", A, "pool-2", "device-3")))


def test_partitionable_devices_unused_counters_in_counter_set():
    # "partitionable-devices-unused-counters-in-counter-set"
    devices = [cdev(f"device-{i}", {"counter-set-1": {"memory": m}}, from_counters=False)
               for i, m in ((1, "5Gi"), (2, "4Gi"), (3, "4Gi"))]
    s = _counter_slices(devices, {"counter-set-1": {"memory": "8Gi", "unused": "1Gi"}})
    check(run([claim("claim-0", req("req-0", "class-a", 2))], [CLASS_A], s),
          alloc(res("req-0", A, "pool-1", "device-2"), res("req-0", A, "pool-1", "device-3")))


@pytest.mark.parametrize("big", ["16Gi", "20Gi"])
def test_partitionable_devices_no_capacity_available(big):
    # "partitionable-devices-no-capacity-available" (16Gi) and
    # "partitionable-devices-overallocated-capacity-pool" (20Gi, more than the set holds):
    # the allocated device leaves too little for device-1. Both slices declare one slice.
    devices = [cdev("device-1", {"counter-set-1": {"memory": "4Gi"}}),
               cdev("device-2", {"counter-set-1": {"memory": big}})]
    s = [slc("slice-1", "node-1", "pool-1", A, *devices),
         slc("slice-2", "node-1", "pool-1", A, counters={"counter-set-1": {"memory": "18Gi"}})]
    assert run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s,
               allocated=used("device-2")) is None


def test_partitionable_devices_disabled():
    off = Features(partitionable_devices=False)
    counters = {"counter-set-1": {"memory": "18Gi"}}
    consuming = cdev("device-1", {"counter-set-1": {"memory": "4Gi"}}, from_counters=False)
    # "partitionable-devices-disabled-device-consumes-counters"
    s = [slc("slice-1", "node-1", "pool-1", A, consuming),
         slc("slice-2", "node-1", "pool-1", A, counters=counters)]
    assert run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s, features=off) is None
    # "partitionable-devices-disabled-other-device-do-not-consume-counters"
    s = _counter_slices([consuming, dev("device-2")], counters)
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s, features=off),
          alloc(res("req-0", A, "pool-1", "device-2")))
    # "partitionable-devices-disabled-per-device-node-selection"
    s = [slc("slice-1", "per-device", "pool-1", A, dev("device-2", nodeName="node-1"))]
    assert run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s, features=off) is None


def test_partitionable_devices_per_device_node_selection_nodename():
    # "partitionable-devices-per-device-node-selection-nodename": the 6Gi device is on node-2.
    devices = [cdev("device-1", {"counter-set-1": {"memory": "4Gi"}}, nodeName="node-1"),
               cdev("device-2", {"counter-set-1": {"memory": "6Gi"}}, nodeName="node-2")]
    s = _counter_slices(devices, {"counter-set-1": {"memory": "18Gi"}}, where="per-device")
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", selectors=[mem("6Gi")]),
                               sub("subReq-1", "class-a", selectors=[mem("4Gi")])))
    check(run([c], [CLASS_A], s), alloc(res("req-0/subReq-1", A, "pool-1", "device-1")))


def test_partitionable_devices_per_device_node_selection_node_selector():
    # "partitionable-devices-per-device-node-selection-node-selector"
    region = label_selector("region", "region-1")
    devices = [cdev("device-1", {"counter-set-1": {"memory": "4Gi"}}, nodeSelector=region)]
    s = _counter_slices(devices, {"counter-set-1": {"memory": "18Gi"}}, where="per-device")
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s),
          alloc(res("req-0", A, "pool-1", "device-1"), selector=region))


def test_partitionable_devices_per_device_node_selection_node_selector_multiple_devices():
    # "partitionable-devices-per-device-node-selection-node-selector-multiple-devices": a
    # node-local device makes the claim's selector that node.
    four = {"memory": "4Gi"}
    a_devices = [cdev("device-1", {"counter-set-1": four}, nodeSelector=label_selector("region", "region-1")),
                 cdev("device-2", {"counter-set-1": four}, nodeName="node-1"),
                 cdev("device-3", {"counter-set-1": four}, allNodes=True)]
    s = _counter_slices(a_devices, {"counter-set-1": {"memory": "18Gi"}}, where="per-device")
    s += [slc("slice-3", "node-1", "pool-2", B, *(cdev(f"device-{i}", {"counter-set-2": four})
                                                  for i in (1, 2, 3)), count=2),
          slc("slice-4", "node-1", "pool-2", B, count=2, counters={"counter-set-2": {"memory": "12Gi"}})]
    c = claim("claim-0", req("req-0", "class-a", 3), req("req-1", "class-b", 3))
    check(run([c], [CLASS_A, CLASS_B], s),
          alloc(*(res("req-0", A, "pool-1", f"device-{i}") for i in (1, 2, 3)),
                *(res("req-1", B, "pool-2", f"device-{i}") for i in (1, 2, 3))))


# --- taints -----------------------------------------------------------------------------------

T_NOSCHED = {"key": "taint-key", "value": "taint-value", "effect": "NoSchedule"}
T_NOEXEC = {"key": "taint-key", "value": "taint-value-2", "effect": "NoExecute"}
T_NONE = {"key": "taint-key", "value": "taint-value", "effect": "None"}
TOL_NOSCHED = {"operator": "Exists", "key": "taint-key", "effect": "NoSchedule"}
TOL_NOEXEC = {"operator": "Equal", "key": "taint-key", "value": "taint-value-2", "effect": "NoExecute"}
TOL_KEY1 = {"operator": "Exists", "key": "key1", "effect": "NoSchedule"}


def _tainted(*taint_lists):
    return [slc("slice-1", "node-1", "pool-1", A,
                *(dev(f"device-{i}", taints=t) for i, t in enumerate(taint_lists, 1)))]


def test_tainted_devices_not_tolerated():
    # "tainted-two-devices", "tainted-one-device-two-taints"
    c = claim("claim-0", req("req-0", "class-a"))
    assert run([c], [CLASS_A], _tainted([T_NOSCHED], [T_NOEXEC])) is None
    assert run([c], [CLASS_A], _tainted([T_NOSCHED, T_NOEXEC])) is None


def test_tainted_two_devices_tolerated():
    # "tainted-two-devices-tolerated": only device-2's taint is tolerated.
    c = claim("claim-0", req("req-0", "class-a", tolerations=[TOL_NOEXEC]))
    check(run([c], [CLASS_A], _tainted([T_NOSCHED], [T_NOEXEC])),
          alloc(res("req-0", A, "pool-1", "device-2", tolerations=[TOL_NOEXEC])))


def test_tainted_two_devices_prioritized_list_tolerated():
    # "tainted-two-devices-prioritized-list-tolerated"
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a"),
                               sub("subReq-1", "class-a", tolerations=[TOL_NOEXEC])))
    check(run([c], [CLASS_A], _tainted([T_NOSCHED], [T_NOEXEC])),
          alloc(res("req-0/subReq-1", A, "pool-1", "device-2", tolerations=[TOL_NOEXEC])))


def test_tainted_no_effect():
    # "tainted-no-effect": a taint with effect None does not keep the device away.
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], _tainted([T_NONE])),
          alloc(res("req-0", A, "pool-1", "device-1")))


def test_tainted_one_device_two_taints_both_tolerated():
    # "tainted-one-device-two-taints-both-tolerated"
    c = claim("claim-0", req("req-0", "class-a", tolerations=[TOL_NOSCHED, TOL_NOEXEC]))
    check(run([c], [CLASS_A], _tainted([T_NOSCHED, T_NOEXEC])),
          alloc(res("req-0", A, "pool-1", "device-1", tolerations=[TOL_NOSCHED, TOL_NOEXEC])))


def test_tainted_disabled():
    # "tainted-disabled"
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], _tainted([T_NOSCHED, T_NOEXEC]),
              features=Features(device_taints=False)),
          alloc(res("req-0", A, "pool-1", "device-1")))


def test_tainted_prioritized_list():
    # "tainted-prioritized-list" and "tainted-prioritized-list-disabled"
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-b"), sub("subReq-1", "class-a")))
    assert run([c], [CLASS_A, CLASS_B], _tainted([T_NOSCHED])) is None
    check(run([c], [CLASS_A, CLASS_B], _tainted([T_NOSCHED]), features=Features(device_taints=False)),
          alloc(res("req-0/subReq-1", A, "pool-1", "device-1")))


def test_tainted_admin_access():
    # "tainted-admin-access" and "tainted-admin-access-disabled": admin access does not bypass
    # taints.
    c = claim("claim-0", req("req-0", "class-a", adminAccess=True))
    state = used("device-1", "device-2")
    assert run([c], [CLASS_A], _tainted([T_NOSCHED]), allocated=state) is None
    check(run([c], [CLASS_A], _tainted([T_NOSCHED]), allocated=state,
              features=Features(device_taints=False)),
          alloc(res("req-0", A, "pool-1", "device-1", adminAccess=True)))


def test_tainted_all_devices_single():
    # "tainted-all-devices-single" and "tainted-all-devices-single-disabled"
    c = claim("claim-0", req("req-0", "class-a", mode="All"))
    assert run([c], [CLASS_A], _tainted([T_NOSCHED])) is None
    check(run([c], [CLASS_A], _tainted([T_NOSCHED]), features=Features(device_taints=False)),
          alloc(res("req-0", A, "pool-1", "device-1")))


# --- firstAvailable with allocationMode All ---------------------------------------------------

def test_prioritized_list_allocation_mode_all():
    # "prioritized-list-allocation-mode-all"
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", mode="All"), sub("subReq-1", "class-a")))
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), dev("device-2"))]
    check(run([c], [CLASS_A], s, allocated=used("device-2")),
          alloc(res("req-0/subReq-1", A, "pool-1", "device-1")))


def _gen_claim():
    return claim("claim-0", first("req-0", sub("subReq-0", "class-a", mode="All", selectors=[gen("v6")]),
                                  sub("subReq-1", "class-a", mode="All", selectors=[gen("v5")])))


def _gdev(name, g, **attrs):
    return dev(name, {"generation": {"string": g}, **attrs})


def test_prioritized_list_allocation_mode_all_with_selectors():
    # "prioritized-list-allocation-mode-all-with-selectors": All must find at least one device.
    check(run([_gen_claim()], [CLASS_A], [slc("slice-1", "node-1", "pool-1", A, _gdev("device-1", "v5"))]),
          alloc(res("req-0/subReq-1", A, "pool-1", "device-1")))


def test_prioritized_list_allocation_mode_all_with_selectors_multiple_pools():
    # "prioritized-list-allocation-mode-all-with-selectors-multiple-pools"
    s = [slc("slice-1", "node-1", "pool-1", A, _gdev("device-1", "v5")),
         slc("slice-2", "node-1", "pool-2", A, _gdev("device-1", "v5"))]
    check(run([_gen_claim()], [CLASS_A], s), alloc(res("req-0/subReq-1", A, "pool-1", "device-1"),
                                                   res("req-0/subReq-1", A, "pool-2", "device-1")))


def test_prioritized_list_allocation_mode_all_with_selectors_multiple_pools_across_nodes():
    # "...-multiple-pools-across-nodes": node-2's devices do not count.
    s = [slc("slice-1", "node-1", "pool-1", A, _gdev("device-1", "v5")),
         slc("slice-2", "node-2", "pool-2", A, _gdev("device-1", "v5"), _gdev("device-2", "v6"))]
    check(run([_gen_claim()], [CLASS_A], s), alloc(res("req-0/subReq-1", A, "pool-1", "device-1")))


def test_prioritized_list_allocation_mode_all_with_selectors_deviceclass_subset():
    # "...-deviceclass-subset": only devices the class selects.
    klass = cls("class-a", A, expr=f'device.driver == "{A}" && device.attributes["{A}"].selected')
    s = [slc("slice-1", "node-1", "pool-1", A, _gdev("device-1", "v6", selected={"bool": False}),
             _gdev("device-2", "v5", selected={"bool": False}),
             _gdev("device-3", "v5", selected={"bool": True}))]
    check(run([_gen_claim()], [klass], s), alloc(res("req-0/subReq-1", A, "pool-1", "device-3")))


def test_max_number_devices():
    # "max-number-devices"
    got = run([claim("claim-0", req("req-0", "class-a", 32))], [CLASS_A],
              [many("slice-1", "node-1", "pool-1", A, 32)])
    check(got, alloc(*(res("req-0", A, "pool-1", f"device-{i}") for i in range(32))))


def test_partitionable_devices_with_attribute_selector():
    # "partitionable-devices-with-attribute-selector": req-0 must leave the special device.
    devices = [cdev(f"device-{i}", {"counter-set-1": {f"cpu{i}": "1"}, "counter-set-2": {"mem": "10Gi"}},
                    from_counters=False, attributes={"special": {"bool": i == 1}}) for i in (1, 2, 3)]
    s = _counter_slices(devices, {"counter-set-1": {"cpu1": "1", "cpu2": "1", "cpu3": "1"},
                                  "counter-set-2": {"mem": "30Gi"}})
    c = claim("claim-0", req("req-0", "class-a", 2),
              req("req-1", "class-a", selectors=[f'device.attributes["{A}"].special']))
    check(run([c], [CLASS_A], s), alloc(res("req-0", A, "pool-1", "device-2"),
                                        res("req-0", A, "pool-1", "device-3"),
                                        res("req-1", A, "pool-1", "device-1")))


def test_prioritized_list_max_allocation_limit_request():
    # "prioritized-list-max-allocation-limit-request": 32 + 32 is over the limit; 16 + 16 fits.
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", 32), sub("subReq-1", "class-a", 16)),
              first("req-1", sub("subReq-0", "class-a", 32), sub("subReq-1", "class-a", 16)))
    got = run([c], [CLASS_A], [many("slice-1", "node-1", "pool-1", A, 64)], steps=75)
    check(got, alloc(*(res("req-0/subReq-1", A, "pool-1", f"device-{i}") for i in range(16)),
                     *(res("req-1/subReq-1", A, "pool-1", f"device-{i}") for i in range(16, 32))))


def test_prioritized_list_max_allocation_allocation_mode_all():
    # "prioritized-list-max-allocation-allocation-mode-all": All (31) + 2 is over the limit.
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", mode="All"), sub("subReq-1", "class-a", 2)),
              req("req-1", "class-b", 2))
    got = run([c], [CLASS_A, CLASS_B], [many("slice-1", "node-1", "pool-1", A, 31),
                                        many("slice-2", "node-1", "pool-2", B, 2)], steps=42)
    check(got, alloc(res("req-0/subReq-1", A, "pool-1", "device-0"),
                     res("req-0/subReq-1", A, "pool-1", "device-1"),
                     res("req-1", B, "pool-2", "device-0"), res("req-1", B, "pool-2", "device-1")))


# --- binding conditions (upstream compares these results in order) ----------------------------

def _bc(name, conditions, failures, **kw):
    return dev(name, bindingConditions=conditions, bindingFailureConditions=failures, **kw)


def bres(request, device, conditions=None, failures=None, **extra):
    out = res(request, A, "pool-1", device, **extra)
    if conditions:
        out["bindingConditions"] = conditions
    if failures:
        out["bindingFailureConditions"] = failures
    return out


def test_device_binding_conditions():
    # "device-binding-conditions"
    s = [slc("slice-1", "node-1", "pool-1", A, _bc("device-1", ["IsPrepare"], ["BindingFailed"]))]
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s),
          alloc(bres("req-0", "device-1", ["IsPrepare"], ["BindingFailed"])), ordered=True)


def test_binding_conditions_multiple_devices():
    # "binding-conditions-multiple-devices"
    s = [slc("slice-1", "node-1", "pool-1", A, *(_bc(f"device-{i}", [f"IsPrepare{x}"], [f"BindingFailed{x}"])
                                                 for i, x in ((1, ""), (2, "2"), (3, "3"))))]
    c = claim("claim-0", req("req-0", "class-a", 2), req("req-1", "class-a"))
    check(run([c], [CLASS_A], s),
          alloc(bres("req-0", "device-1", ["IsPrepare"], ["BindingFailed"]),
                bres("req-0", "device-2", ["IsPrepare2"], ["BindingFailed2"]),
                bres("req-1", "device-3", ["IsPrepare3"], ["BindingFailed3"])), ordered=True)


def test_binding_conditions_with_and_without():
    # "binding-conditions-with-and-without"
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"),
             _bc("device-2", ["IsPrepare"], ["BindingFailed"]))]
    c = claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"))
    check(run([c], [CLASS_A], s), alloc(bres("req-0", "device-1"),
                                        bres("req-1", "device-2", ["IsPrepare"], ["BindingFailed"])),
          ordered=True)


def test_binding_conditions_without_feature_gate():
    # "binding-conditions-without-feature-gate": such devices are not used.
    s = [slc("slice-1", "node-1", "pool-1", A, _bc("device-1", ["IsPrepare"], ["BindingFailed"]))]
    assert run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s,
               features=Features(device_binding_and_status=False)) is None


def test_node_restriction():
    # "node-restriction": bindsToNode narrows a network-attached device's selector to the node.
    s = [slc("slice-1", label_selector("planet", "earth"), "pool-1", A, dev("device-1", bindsToNode=True))]
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s),
          alloc(res("req-0", A, "pool-1", "device-1")))


def _bc_counters(devices, count=2):
    return [slc("slice-1", "node-1", "pool-1", A, *devices, count=count),
            slc("slice-2", "node-1", "pool-1", A, count=count, counters={"counter-set-1": {"memory": "8Gi"}})]


def test_partitionable_devices_with_binding_conditions():
    # "partitionable-devices-with-binding-conditions" and "...-multiple"
    d1 = cdev("device-1", {"counter-set-1": {"memory": "4Gi"}}, bindingConditions=["IsPrepare"],
              bindingFailureConditions=["BindingFailed"])
    d2 = cdev("device-2", {"counter-set-1": {"memory": "4Gi"}}, bindingConditions=["IsPrepare2"],
              bindingFailureConditions=["BindingFailed2"])
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], _bc_counters([d1])),
          alloc(bres("req-0", "device-1", ["IsPrepare"], ["BindingFailed"])), ordered=True)
    check(run([claim("claim-0", req("req-0", "class-a", 2))], [CLASS_A], _bc_counters([d1, d2])),
          alloc(bres("req-0", "device-1", ["IsPrepare"], ["BindingFailed"]),
                bres("req-0", "device-2", ["IsPrepare2"], ["BindingFailed2"])), ordered=True)


def test_partitionable_devices_with_binding_conditions_some_devices_no_conditions():
    # "partitionable-devices-with-binding-conditions-some-devices-no-conditions"
    devices = [cdev("device-1", {"counter-set-1": {"memory": "2Gi"}}, bindingConditions=["IsPrepare"],
                    bindingFailureConditions=["BindingFailed"]),
               cdev("device-2", {"counter-set-1": {"memory": "2Gi"}}),
               cdev("device-3", {"counter-set-1": {"memory": "4Gi"}}, bindingConditions=["IsReady"],
                    bindingFailureConditions=["BindingTimeout"])]
    check(run([claim("claim-0", req("req-0", "class-a", 3))], [CLASS_A], _bc_counters(devices)),
          alloc(bres("req-0", "device-1", ["IsPrepare"], ["BindingFailed"]), bres("req-0", "device-2"),
                bres("req-0", "device-3", ["IsReady"], ["BindingTimeout"])), ordered=True)


def test_partitionable_devices_with_binding_conditions_multi_slices():
    # "partitionable-devices-with-binding-conditions-multi-slices": slices are searched by name,
    # so device-2 (slice-2) comes before device-1 (slice-4).
    s = [slc("slice-4", "node-1", "pool-1", A,
             cdev("device-1", {"counter-set-1": {"memory": "4Gi"}}, bindingConditions=["IsPrepare"],
                  bindingFailureConditions=["BindingFailed"]), count=4),
         slc("slice-3", "node-1", "pool-1", A, count=4, counters={"counter-set-1": {"memory": "8Gi"}}),
         slc("slice-2", "node-1", "pool-1", A, cdev("device-2", {"counter-set-2": {"memory": "4Gi"}}), count=4),
         slc("slice-1", "node-1", "pool-1", A, count=4, counters={"counter-set-2": {"memory": "8Gi"}})]
    check(run([claim("claim-0", req("req-0", "class-a", 2))], [CLASS_A], s),
          alloc(bres("req-0", "device-2"), bres("req-0", "device-1", ["IsPrepare"], ["BindingFailed"])),
          ordered=True)


def test_partitionable_devices_with_binding_conditions_and_taints():
    # "partitionable-devices-with-binding-conditions-and-taints" and "...-tolerated"
    taint = {"key": "key1", "value": "value1", "effect": "NoSchedule"}
    devices = [cdev("device-1", {"counter-set-1": {"memory": "4Gi"}}, bindingConditions=["IsPrepare"],
                    bindingFailureConditions=["BindingFailed"], taints=[taint]),
               cdev("device-2", {"counter-set-1": {"memory": "4Gi"}})]
    s = [slc("slice-1", "node-1", "pool-1", A, *devices),
         slc("slice-2", "node-1", "pool-1", A, counters={"counter-set-1": {"memory": "8Gi"}})]
    assert run([claim("claim-0", req("req-0", "class-a", 2))], [CLASS_A], s) is None
    c = claim("claim-0", req("req-0", "class-a", 2, tolerations=[TOL_KEY1]))
    check(run([c], [CLASS_A], _bc_counters(devices)),
          alloc(bres("req-0", "device-1", ["IsPrepare"], ["BindingFailed"], tolerations=[TOL_KEY1]),
                bres("req-0", "device-2", tolerations=[TOL_KEY1])), ordered=True)


# --- consumable capacity ----------------------------------------------------------------------

def test_consumable_capacity_disabled_feature():
    # "consumable-capacity-disabled-feature" and "...-with-prioritized-list"
    off = Features(consumable_capacity=False)
    with pytest.raises(AllocationError, match="claim claim-0, request req-0: has capacity requests, "
                                              "but the DRAConsumableCapacity feature is disabled"):
        run([claim("claim-0", req("req-0", "class-a", cap="1"))], [CLASS_A], [ONE_A], features=off)
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", cap="1"), sub("subReq-1", "class-a", cap="1")))
    with pytest.raises(AllocationError, match="claim claim-0, subrequest subReq-0: has capacity requests, "
                                              "but the DRAConsumableCapacity feature is disabled"):
        run([c], [CLASS_A], [ONE_A], features=off)


def test_consumable_capacity_missing_capacity_request():
    # "consumable-capacity-multi-allocatable-device-with-missing-capacity-request" and
    # "...-allocation-mode-all-with-missing-capacity-request": the device lacks capacity-0.
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", {"capacity-1": "1"}))]
    assert run([claim("claim-0", req("req-0", "class-a", cap="1"))], [CLASS_A], s) is None
    assert run([claim("claim-0", req("req-0", "class-a", mode="All", cap="1"))],
               [cls("class-a", A, multi=True)], s) is None


def test_consumable_capacity_without_capacity_without_request():
    # "consumable-capacity-multi-allocatable-device-without-capacity-without-capacity-request"
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1"))]
    claims = [claim("claim-0", req("req-0", "class-a")), claim("claim-1", req("req-0", "class-a"))]
    check(run(claims, [cls("class-a", A, multi=True)], s),
          alloc(sres("req-0", A, "pool-1", "device-1")), alloc(sres("req-0", A, "pool-1", "device-1")))


def test_consumable_capacity_without_policy_without_request():
    # "...-without-policy-without-capacity-request": each share takes the whole capacity.
    claims = [claim("claim-0", req("req-0", "class-a")), claim("claim-1", req("req-0", "class-a"))]
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", {"capacity-0": "1"}),
             shared("device-2", {"capacity-0": "1"}))]
    check(run(claims, [cls("class-a", A, multi=True)], s),
          alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "1"})),
          alloc(sres("req-0", A, "pool-1", "device-2", {"capacity-0": "1"})))
    # "...-without-policy-without-capacity-request-block": one device cannot serve both.
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", {"capacity-0": "2"}))]
    assert run(claims, [cls("class-a", A, multi=True)], s) is None


def test_consumable_capacity_without_policy_with_request():
    # "...-without-policy-with-capacity-request"
    claims = [claim("claim-0", req("req-0", "class-a", cap="1")), claim("claim-1", req("req-0", "class-a", cap="1"))]
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", {"capacity-0": "2"}))]
    one = alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "1"}))
    check(run(claims, [cls("class-a", A, multi=True)], s), one, one)


def test_consumable_capacity_with_policy_without_request():
    # "...-with-policy-without-capacity-request": both take the default (2).
    claims = [claim("claim-0", req("req-0", "class-a")), claim("claim-1", req("req-0", "class-a"))]
    s = [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "4"))]
    two = alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "2"}))
    check(run(claims, [cls("class-a", A, multi=True)], s), two, two)


def test_consumable_capacity_zero_request_policy():
    # "...-with-zero-request-policy" and "...-violates-zero-request-policy"
    s = [slc("slice-1", "node-1", "pool-1", A, valid_values("device-1", "0", "1"))]
    claims = [claim("claim-0", req("req-0", "class-a")), claim("claim-1", req("req-0", "class-a"))]
    zero = alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "0"}))
    check(run(claims, [cls("class-a", A, multi=True)], s), zero, zero)
    assert run([claim("claim-0", req("req-0", "class-a", cap="1"))], [cls("class-a", A, multi=True)], s) is None


def test_consumable_capacity_range_policy():
    # "...-with-range-policy-with-capacity-request": 1 rounds up to the minimum 2.
    s = [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "4"))]
    claims = [claim("claim-0", req("req-0", "class-a", cap="1")), claim("claim-1", req("req-0", "class-a", cap="1"))]
    two = alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "2"}))
    check(run(claims, [cls("class-a", A, multi=True)], s), two, two)
    # "...-with-range-policy-step": 3 rounds up to 2 + 2.
    check(run([claim("claim-0", req("req-0", "class-a", cap="3"))], [cls("class-a", A, multi=True)], s),
          alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "4"})))


def test_consumable_capacity_valid_values_policy():
    # "...-with-valid-values-policy" and "...-with-valid-values-policy-round-up"
    s = [slc("slice-1", "node-1", "pool-1", A, valid_values("device-1", "1", "4", ["2"]))]
    c = claim("claim-0", req("req-0", "class-a", cap="2"))
    check(run([c], [cls("class-a", A, multi=True)], s),
          alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "2"})))
    s = [slc("slice-1", "node-1", "pool-1", A, valid_values("device-1", "1", "3", ["3"]))]
    check(run([c], [cls("class-a", A, multi=True)], s),
          alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "3"})))


def test_consumable_capacity_exceeded_requests():
    # "...-with-exceeded-consumable-capacity-request": 2 (rounded) + 2 > 2.
    s = [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "2"))]
    claims = [claim("claim-0", req("req-0", "class-a", cap="1")), claim("claim-1", req("req-0", "class-a", cap="2"))]
    assert run(claims, [cls("class-a", A, multi=True)], s) is None
    # "...-with-request-over-max-sharing-policy": 6 is above the policy max 4 (capacity 10).
    s = [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "10"))]
    assert run([claim("claim-0", req("req-0", "class-a", cap="6"))], [cls("class-a", A, multi=True)], s) is None


def test_consumable_capacity_with_allocated_capacity():
    klass = [cls("class-a", A, multi=True)]
    c = claim("claim-0", req("req-0", "class-a", cap="2"))
    in_use = capacity_in_use({"device-1": "2"})
    # "...-with-allocated-capacity-use-remaining"
    check(run([c], klass, [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "4"))], allocated=in_use),
          alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "2"})))
    # "...-with-allocated-capacity-next-device"
    s = [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "2"), ranged("device-2", "2"))]
    check(run([c], klass, s, allocated=in_use), alloc(sres("req-0", A, "pool-1", "device-2", {"capacity-0": "2"})))
    # "...-with-no-available-consumable-capacity"
    assert run([c], klass, [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "2"))],
               allocated=in_use) is None


def test_consumable_capacity_with_multi_allocatable_device_backtrack():
    # "consumable-capacity-with-multi-allocatable-device-backtrack": claim-0's two requests must
    # match stringAttribute, so both go to the larger device-1.
    s = [slc("slice-1", "node-1", "pool-1", A,
             ranged("device-2", "2", {"stringAttribute": {"string": "stringAttributeValue1"}}),
             ranged("device-1", "4", {"stringAttribute": {"string": "stringAttributeValue2"}}))]
    c0 = claim("claim-0", req("req-0", "class-a", cap="2"), req("req-1", "class-a", cap="2"),
               constraints=[{"matchAttribute": f"{A}/stringAttribute"}])
    c1 = claim("claim-1", req("req-0", "class-a", cap="2"))
    check(run([c0, c1], [CLASS_A], s),
          alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "2"}),
                sres("req-1", A, "pool-1", "device-1", {"capacity-0": "2"})),
          alloc(sres("req-0", A, "pool-1", "device-2", {"capacity-0": "2"})))


def test_consumable_capacity_with_subrequest():
    # "consumable-capacity-multi-allocatable-device-with-subrequest"
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", cap="4"), sub("subReq-1", "class-a", cap="2"),
                               sub("subReq-1", "class-a")))
    check(run([c], [cls("class-a", A, multi=True)], [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "2"))]),
          alloc(sres("req-0/subReq-1", A, "pool-1", "device-1", {"capacity-0": "2"})))


def test_consumable_capacity_allocation_mode_all_filters():
    klass = [cls("class-a", A, multi=True)]
    c = claim("claim-0", req("req-0", "class-a", mode="All", cap="2"))
    # "...-allocation-mode-all-filter-out-no-capacity"
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", {"capacity-0": "2"}), shared("device-2"))]
    check(run([c], klass, s), alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "2"})))
    # "...-allocation-mode-all-filter-out-insufficient-capacity"
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", {"capacity-0": "2"}),
             shared("device-2", {"capacity-0": "1"}))]
    check(run([c], klass, s), alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "2"})))


def test_consumable_capacity_allocation_mode_all_sufficient():
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", {"capacity-0": "2"}),
             shared("device-2", {"capacity-0": "1"}))]
    one = {"capacity-0": "1"}
    # "...-allocation-mode-all-allocating-sufficient"
    c = claim("claim-0", req("req-0", "class-a", cap="1"), req("req-1", "class-a", mode="All", cap="1"))
    check(run([c], [CLASS_A], s), alloc(sres("req-0", A, "pool-1", "device-1", one),
                                        sres("req-1", A, "pool-1", "device-1", one),
                                        sres("req-1", A, "pool-1", "device-2", one)))
    # "...-allocation-mode-all-in-use-sufficient"
    c = claim("claim-0", req("req-0", "class-a", mode="All", cap="1"))
    check(run([c], [CLASS_A], s, allocated=capacity_in_use({"device-1": "1"})),
          alloc(sres("req-0", A, "pool-1", "device-1", one), sres("req-0", A, "pool-1", "device-2", one)))


def test_consumable_capacity_dedicated_devices():
    not_multi = [cls("class-a", A, multi=False)]
    # "consumable-capacity-dedicated-device-with-consumable-capacity-request": no shareID.
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1", capacity={"capacity-0": "1"}))]
    check(run([claim("claim-0", req("req-0", "class-a", cap="1"))], not_multi, s),
          alloc(res("req-0", A, "pool-1", "device-1")))
    # "...-dedicated-device-with-multiple-consumable-capacity-request"
    s = [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "2", multi=False))]
    claims = [claim("claim-0", req("req-0", "class-a", cap="1")), claim("claim-1", req("req-0", "class-a", cap="1"))]
    assert run(claims, not_multi, s) is None


def test_allow_multiple_allocations_exclusions():
    c = claim("claim-0", req("req-0", "class-a", cap="1"))
    # "allow-multiple-allocations-exclude-multi-allocatable-device-by-class-selector"
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", {"capacity-0": "1"}))]
    assert run([c], [cls("class-a", A, multi=False)], s) is None
    # "...-not-allocate-multi-allocatable-device-which-already-dedicated"
    s = [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "2"))]
    assert run([c], [cls("class-a", A, multi=True)], s, allocated=used("device-1")) is None
    # "...-not-allocate-dedicated-device-which-change-from-multi-allocatable"
    s = [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "2", multi=False))]
    assert run([c], [cls("class-a", A, multi=True)], s,
               allocated=capacity_in_use({"device-1": "1"})) is None


# --- distinctAttribute ------------------------------------------------------------------------

def test_with_distinct_constraints():
    # "with-distinct-constraints"
    def d(name, version, numa, flag):
        return shared(name, attrs={"driverVersion": {"version": version}, "numa": {"int": numa},
                                   "boolAttribute": {"bool": flag}})
    s = [slc("slice-1", "node-1", "pool-1", A, d("device-1", "1.0.0", 0, True), d("device-2", "1.0.1", 1, False),
             d("device-3", "1.0.2", 2, True), d("device-4", "1.0.0", 3, True))]
    c = claim("claim-0", *(req(f"req-{i}", "class-a") for i in range(4)), constraints=[
        {"distinctAttribute": f"{A}/boolAttribute", "requests": ["req-0", "req-1"]},
        {"distinctAttribute": f"{A}/driverVersion", "requests": ["req-0", "req-1", "req-2"]},
        {"distinctAttribute": f"{A}/numa", "requests": ["req-0", "req-1", "req-2", "req-3"]}])
    check(run([c], [CLASS_A], s), alloc(*(sres(f"req-{i}", A, "pool-1", f"device-{i + 1}") for i in range(4))))


def test_with_distinct_constraints_attribute_not_set():
    # "with-distinct-constraints-attribute-not-set"
    c = claim("claim-0", req("req-0", "class-a"),
              constraints=[{"distinctAttribute": f"{A}/boolAttribute", "requests": ["req-0"]}])
    assert run([c], [CLASS_A], [slc("slice-1", "node-1", "pool-1", A, shared("device-1"))]) is None


def test_with_distinct_constraints_unknown_type_attribute():
    # "with-distinct-constraints-unknown-type-attribute": an attribute with no value.
    c = claim("claim-0", req("req-0", "class-a"),
              constraints=[{"distinctAttribute": f"{A}/boolAttribute", "requests": ["req-0"]}])
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", attrs={"boolAttribute": {}}))]
    with pytest.raises(AllocationError, match="unsupported attribute value"):
        run([c], [CLASS_A], s)


def test_with_distinct_constraints_with_subrequests():
    # "with-distinct-constraints-with-subrequests": the constraint covers req-0 and req-1 only.
    flag = f'device.attributes["{A}"].boolAttribute'
    c = claim("claim-0", *(first(f"req-{i}", sub("subReq-0", "class-a", selectors=[flag]),
                                 sub("subReq-1", "class-a")) for i in range(3)),
              constraints=[{"distinctAttribute": f"{A}/boolAttribute", "requests": ["req-0", "req-1"]}])
    s = [slc("slice-1", "node-1", "pool-1", A, shared("device-1", attrs={"boolAttribute": {"bool": True}}),
             shared("device-2", attrs={"boolAttribute": {"bool": False}}))]
    check(run([c], [CLASS_A], s), alloc(sres("req-0/subReq-0", A, "pool-1", "device-1"),
                                        sres("req-1/subReq-1", A, "pool-1", "device-2"),
                                        sres("req-2/subReq-0", A, "pool-1", "device-1")))


def test_distinct_constraint_multi_allocatable_devices():
    s_attr = {"stringAttribute": {"string": "stringAttributeValue"}}
    c = claim("claim-0", req("req-0", "class-a", cap="1"), req("req-1", "class-a", cap="1"),
              constraints=[{"distinctAttribute": f"{A}/stringAttribute"}])
    # "distinct-constraint-one-multi-allocatable-device-with-distinct-constraint"
    s = [slc("slice-1", "node-1", "pool-1", A, ranged("device-1", "2", s_attr))]
    assert run([c], [cls("class-a", A, multi=True)], s) is None
    # "distinct-constraint-two-multi-allocatable-devices-with-distinct-constraint": two slices of
    # one pool, both named slice-1.
    c = claim("claim-0", req("req-0", "class-a", cap="2"), req("req-1", "class-a", cap="2"),
              constraints=[{"distinctAttribute": f"{A}/stringAttribute"}])
    s = [slc("slice-1", "node-1", "pool-1", A,
             ranged("device-1", "4", {"stringAttribute": {"string": "stringAttributeValue1"}}), count=2),
         slc("slice-1", "node-1", "pool-1", A,
             ranged("device-2", "4", {"stringAttribute": {"string": "stringAttributeValue2"}}), count=2)]
    check(run([c], [cls("class-a", A, multi=True)], s),
          alloc(sres("req-0", A, "pool-1", "device-1", {"capacity-0": "2"}),
                sres("req-1", A, "pool-1", "device-2", {"capacity-0": "2"})))


# --- pools spread over nodes ------------------------------------------------------------------

def _gen_slices(spec):
    """(slice name, node, generation, device) -> slices of pool-1 with resourceSliceCount 2."""
    return [slc(name, where, "pool-1", A, dev(device), count=2, generation=g) for name, where, g, device in spec]


def test_allocation_mode_all_with_multi_host_resource_pool():
    # "allocation-mode-all-with-multi-host-resource-pool": the pool is complete, All takes the
    # node's devices.
    s = _gen_slices([("slice-1", "node-1", 1, "device-1"), ("slice-2", "node-2", 1, "device-2")])
    check(run([claim("claim-0", req("req-0", "class-a", mode="All"))], [CLASS_A], s),
          alloc(res("req-0", A, "pool-1", "device-1")))


def test_multi_host_resource_pool_with_stale_slice_for_current_node():
    # "multi-host-resource-pool-with-stale-slice-for-current-node"
    s = _gen_slices([("slice-1", "node-1", 1, "device-1"), ("slice-2", "node-2", 2, "device-2")])
    assert run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s) is None


@pytest.mark.parametrize("spec,expected", [
    # "multi-host-resource-pool-complete-update-from-node-1-to-node-2"
    ([("slice-1", "node-1", 1, "device-1"), ("slice-1", "node-1", 1, "device-2"),
      ("slice-2", "node-2", 2, "device-1"), ("slice-2", "node-2", 2, "device-2")], "device-1"),
    # "multi-host-resource-pool-complete-update-from-node-2-to-node-1"
    ([("slice-1", "node-2", 1, "device-1"), ("slice-1", "node-2", 1, "device-2"),
      ("slice-2", "node-1", 2, "device-1"), ("slice-2", "node-1", 2, "device-2")], "device-1"),
    # "multi-host-resource-pool-incomplete-update-from-node-1-to-node-2"
    ([("slice-1", "node-1", 1, "device-1"), ("slice-1", "node-1", 1, "device-2"),
      ("slice-2", "node-2", 2, "device-1")], "device-1"),
    # "multi-host-resource-pool-incomplete-update-from-node-2-to-node-1": slice-2 is incomplete.
    ([("slice-1", "node-2", 1, "device-1"), ("slice-1", "node-2", 1, "device-2"),
      ("slice-2", "node-1", 2, "device-1")], None),
])
def test_multi_host_resource_pool_updates(spec, expected):
    got = run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], _gen_slices(spec))
    if expected is None:
        assert got is None
    else:
        check(got, alloc(res("req-0", A, "pool-1", expected)))


# --- invalid pools ----------------------------------------------------------------------------

def _invalid(slices):
    with pytest.raises(AllocationError, match="invalid resource pools were encountered"):
        run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], slices)


def test_partitionable_devices_same_counter_set_name_in_different_resource_slices():
    # "partitionable-devices-same-counter-set-name-in-different-resource-slices"
    _invalid([slc("slice-1", "node-1", "pool-1", A, dev("device-1"), count=4),
              slc("slice-2", "node-1", "pool-1", A, count=4, counters={"counter-set-1": {}}),
              slc("slice-3", "node-1", "pool-1", A, dev("device-2"), count=4),
              slc("slice-4", "node-1", "pool-1", A, count=4, counters={"counter-set-1": {}})])


def test_partitionable_devices_unknown_counter_references():
    # "partitionable-devices-device-counter-consumption-references-unknown-counter-set"
    _invalid([slc("slice-1", "node-1", "pool-1", A, cdev("device-1", {"counter-set-2": {}}), count=2),
              slc("slice-2", "node-1", "pool-1", A, count=2, counters={"counter-set-1": {}})])
    # "...-references-unknown-counter-in-counter-set"
    _invalid([slc("slice-1", "node-1", "pool-1", A,
                  cdev("device-1", {"counter-set-1": {"memory": "8Gi"}}, from_counters=False), count=2),
              slc("slice-2", "node-1", "pool-1", A, count=2, counters={"counter-set-1": {"other-memory": "8Gi"}})])
    # "...-references-counter-set-in-other-pool"
    _invalid([slc("slice-1", "node-1", "pool-1", A,
                  cdev("device-1", {"counter-set-1": {"memory": "8Gi"}}, from_counters=False)),
              slc("slice-2", "node-1", "pool-2", A, counters={"counter-set-1": {"memory": "8Gi"}})])


def test_partitionable_devices_devices_on_different_nodes_consume_same_counter_set():
    # "partitionable-devices-devices-on-different-nodes-consume-same-counter-set": node-2's
    # allocated device-3 uses 6Gi of the shared 8Gi.
    s = [slc("slice-1", "node-1", "pool-1", A, count=3, counters={"counter-set-1": {"memory": "8Gi"}}),
         slc("slice-2", "node-1", "pool-1", A, cdev("device-1", {"counter-set-1": {"memory": "6Gi"}}),
             cdev("device-2", {"counter-set-1": {"memory": "2Gi"}}), count=3),
         slc("slice-3", "node-2", "pool-1", A,
             cdev("device-3", {"counter-set-1": {"memory": "6Gi"}}, from_counters=False), count=3)]
    c = claim("claim-0", first("req-0", sub("subReq-0", "class-a", selectors=[mem("6Gi")]),
                               sub("subReq-1", "class-a", selectors=[mem("2Gi")])))
    check(run([c], [CLASS_A], s, allocated=used("device-3")),
          alloc(res("req-0/subReq-1", A, "pool-1", "device-2")))


def test_partitionable_devices_validation_error_on_non_targeting_slice():
    # "partitionable-devices-validation-error-on-non-targeting-slice": node-2's slice refers to
    # an unknown counter set; the pool is invalid also for node-1.
    _invalid([slc("slice-1", "node-1", "pool-1", A, count=3, counters={"counter-set-1": {"memory": "8Gi"}}),
              slc("slice-2", "node-1", "pool-1", A, cdev("device-1", {"counter-set-1": {"memory": "6Gi"}}), count=3),
              slc("slice-3", "node-2", "pool-1", A,
                  cdev("device-3", {"counter-set-2": {"memory": "6Gi"}}, from_counters=False), count=3)])


def test_different_resourceslices_in_pool_can_target_different_nodes():
    # "different-resourceslices-in-pool-can-target-different-nodes"
    s = [slc("slice-1", "node-2", "pool-1", A, dev("device-1"), count=2),
         slc("slice-2", "node-1", "pool-1", A, dev("device-2"), count=2)]
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s),
          alloc(res("req-0", A, "pool-1", "device-2")))


def test_invalid_pool_and_other_pools():
    s = [slc("slice-1", "node-1", "pool-1", A, dev("device-1"), count=2),
         slc("slice-2", "node-1", "pool-1", A, dev("device-1"), count=2),
         slc("slice-3", "node-1", "pool-2", A, dev("device-2"))]
    # "invalid-pool-is-ok-if-devices-can-be-allocated-from-other"
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s),
          alloc(res("req-0", A, "pool-2", "device-2")))
    # "invalid-pool-is-error-if-no-other-device-can-be-allocated"
    with pytest.raises(AllocationError, match="invalid resource pools were encountered"):
        run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s, allocated=used("device-2", pool="pool-2"))


# --- search effort (upstream expectNumAllocateOneInvocations) ---------------------------------

@pytest.mark.parametrize("layout", ["single-pool-single-slice", "single-pool-multiple-slices",
                                    "multiple-pools-multiple-slices", "many-pools"])
def test_check_combinations_within_single_request(layout):
    # "check-combinations-within-single-request-<layout>": 4 devices, 5 wanted, 16 steps.
    d = [dev(f"device-{i}") for i in range(1, 5)]
    s = {"single-pool-single-slice": lambda: [slc("slice-1", "node-1", "pool-1", A, *d)],
         "single-pool-multiple-slices": lambda: [slc("slice-1", "node-1", "pool-1", A, *d[:2], count=2),
                                                 slc("slice-2", "node-1", "pool-1", A, *d[2:], count=2)],
         "multiple-pools-multiple-slices": lambda: [slc("slice-1", "node-1", "pool-1", A, d[0], count=2),
                                                    slc("slice-2", "node-1", "pool-1", A, d[1], count=2),
                                                    slc("slice-3", "node-1", "pool-2", A, *d[2:])],
         "many-pools": lambda: [slc(f"slice-{i}", "node-1", f"pool-{i}", A, d[i - 1]) for i in range(1, 5)],
         }[layout]()
    assert run([claim("claim-0", req("req-0", "class-a", 5))], [CLASS_A], s, steps=16) is None


def _xyy(*, pools=False):
    x = dev("device-1", {"type": {"string": "X"}})
    y2, y3 = dev("device-2", {"type": {"string": "Y"}}), dev("device-3", {"type": {"string": "Y"}})
    if not pools:
        return [slc("slice-1", "node-1", "pool-1", A, x, y2, y3)]
    y3["bindingConditions"] = ["IsPrepare"]
    return [slc("slice-1", "node-1", "pool-1", A, x, count=2), slc("slice-2", "node-1", "pool-1", A, y2, count=2),
            slc("slice-3", "node-1", "pool-2", A, y3)]


def _type(t):
    return f'device.attributes["{A}"].type == "{t}"'


def test_check_combinations_with_backtracking():
    # "check-combinations-with-backtracking": 12 steps.
    c = claim("claim-0", req("req-1", "class-a", 2), req("req-2", "class-a", selectors=[_type("X")]))
    check(run([c], [CLASS_A], _xyy(), steps=12),
          alloc(res("req-1", A, "pool-1", "device-2"), res("req-1", A, "pool-1", "device-3"),
                res("req-2", A, "pool-1", "device-1")))


def test_check_combinations_with_backtracking_across_slices_and_pools():
    # "check-combinations-with-backtracking-across-slices-and-pools": 12 steps.
    c = claim("claim-0", req("req-1", "class-a", 2), req("req-2", "class-a", selectors=[_type("X")]))
    check(run([c], [CLASS_A], _xyy(pools=True), steps=12),
          alloc(res("req-1", A, "pool-1", "device-2"),
                res("req-1", A, "pool-2", "device-3", bindingConditions=["IsPrepare"]),
                res("req-2", A, "pool-1", "device-1")))


def test_check_combinations_with_prioritized_list():
    # "check-combinations-with-prioritized-list": 26 steps.
    c = claim("claim-0", first("req-1", sub("subReq-0", "class-a", 3, selectors=[_type("Y")]),
                               sub("subReq-1", "class-a", 2)),
              first("req-2", sub("subReq-0", "class-a", 2), sub("subReq-1", "class-a", selectors=[_type("X")])))
    check(run([c], [CLASS_A], _xyy(), steps=26),
          alloc(res("req-1/subReq-1", A, "pool-1", "device-2"), res("req-1/subReq-1", A, "pool-1", "device-3"),
                res("req-2/subReq-1", A, "pool-1", "device-1")))


# --- list-typed attributes (DRAListTypeAttributes) in constraints ------------------------------

def _listed(attr, *values):
    """Devices device-1.. of pool-1 with ``attr`` set to each value ({kind: v} dicts)."""
    return [slc("slice-1", "node-1", "pool-1", A, *(dev(f"device-{i}", {attr: v}) for i, v in enumerate(values, 1)))]


def _constrained(kind, attr, count=2):
    return claim("claim-0", req("req-0", "class-a", count), constraints=[{kind: f"{A}/{attr}"}])


def _devices(*names):
    return alloc(*(res("req-0", A, "pool-1", n) for n in names))


@pytest.mark.parametrize("values,count,expected", [
    # "list-attributes-match-constaint-scalar-string-values"
    ([{"string": "value1"}, {"string": "value1"}], 2, ["device-1", "device-2"]),
    # "...-list-of-string-values-with-common-elements"
    ([{"strings": ["value1", "value2", "value3"]}, {"strings": ["value2", "value3", "value4"]}], 2,
     ["device-1", "device-2"]),
    # "...-list-of-string-values-with-partially-common-elements": no value common to all three
    ([{"strings": ["value1", "value2"]}, {"strings": ["value2", "value3"]}, {"strings": ["value3", "value1"]}], 3,
     None),
    # "...-mixed-scalar-and-list-of-string-values-with-common-elements"
    ([{"string": "value1"}, {"strings": ["value1", "value2"]}], 2, ["device-1", "device-2"]),
    # "...-mixed-scalar-and-list-of-string-values-with-partially-common-elements"
    ([{"string": "value1"}, {"strings": ["value1", "value2"]}, {"strings": ["value2", "value3"]}], 3, None),
    # "...-mixed-scalar-and-list-of-string-values-without-common-elements"
    ([{"string": "value1"}, {"strings": ["value2", "value3"]}], 2, None),
])
def test_list_attributes_match_constraint_strings(values, count, expected):
    got = run([_constrained("matchAttribute", "stringAttribute", count)], [CLASS_A],
              _listed("stringAttribute", *values))
    if expected is None:
        assert got is None
    else:
        check(got, _devices(*expected))


def test_list_attributes_match_constraint_without_common_elements():
    # "list-attributes-match-constaint-list-of-string-values-without-common-elements": two
    # requests (both named req-0 upstream) that share the constraint.
    c = claim("claim-0", req("req-0", "class-a"), req("req-1", "class-a"),
              constraints=[{"matchAttribute": f"{A}/stringAttribute"}])
    s = _listed("stringAttribute", {"strings": ["value1", "value2"]}, {"strings": ["value3", "value4"]})
    assert run([c], [CLASS_A], s) is None


@pytest.mark.parametrize("attr,values", [
    # "list-attributes-match-constaint-list-of-int-values-with-common-elements"
    ("numa", [{"ints": [0, 1, 2]}, {"ints": [1, 2, 3]}]),
    # "...-list-of-bool-values-with-common-elements"
    ("boolAttribute", [{"bools": [True, False]}, {"bools": [True]}]),
    # "...-list-of-version-values-with-common-elements"
    ("driverVersion", [{"versions": ["1.0.0", "1.1.0", "2.0.0"]}, {"versions": ["1.1.0", "2.0.0", "2.1.0"]}]),
])
def test_list_attributes_match_constraint_other_types(attr, values):
    check(run([_constrained("matchAttribute", attr)], [CLASS_A], _listed(attr, *values)),
          _devices("device-1", "device-2"))


def test_list_attributes_match_constraint_with_empty_or_unknown_type():
    # "list-attributes-match-constaint-with-empty-or-unknown-type"
    s = _listed("stringAttribute", {}, {"strings": []})
    with pytest.raises(AllocationError, match="unsupported attribute value"):
        run([_constrained("matchAttribute", "stringAttribute")], [CLASS_A], s)


@pytest.mark.parametrize("kind", ["matchAttribute", "distinctAttribute"])
def test_list_attributes_disabled(kind):
    # "list-attributes-disabled-match-constraint-with-lists" and
    # "list-attributes-disabled-distinct-constraint-with-lists"
    s = _listed("stringAttribute", {"strings": ["value1", "value2", "value3"]},
                {"strings": ["value2", "value3", "value4"]})
    with pytest.raises(AllocationError, match="unsupported attribute value"):
        run([_constrained(kind, "stringAttribute")], [CLASS_A], s,
            features=Features(list_type_attributes=False))


@pytest.mark.parametrize("attr,values,expected", [
    # "list-attributes-distinct-constraint-scalar-string-values-all-distinct"
    ("stringAttribute", [{"string": "value1"}, {"string": "value2"}], ["device-1", "device-2"]),
    # "...-scalar-string-values-not-distinct"
    ("stringAttribute", [{"string": "value1"}, {"string": "value1"}], None),
    # "...-list-of-string-values-all-distinct": device-2 overlaps device-1, device-3 does not
    ("stringAttribute", [{"strings": ["value1", "value2"]}, {"strings": ["value2", "value3"]},
                         {"strings": ["value3", "value4"]}], ["device-1", "device-3"]),
    # "...-list-of-string-values-with-common-elements"
    ("stringAttribute", [{"strings": ["value1", "value2", "value3"]}, {"strings": ["value2", "value4", "value5"]}],
     None),
    # "...-mixed-scalar-and-list-all-distinct"
    ("stringAttribute", [{"string": "value1"}, {"strings": ["value1", "value2"]}, {"strings": ["value2", "value3"]}],
     ["device-1", "device-3"]),
    # "...-mixed-scalar-and-list-with-common-elements"
    ("stringAttribute", [{"string": "value1"}, {"strings": ["value1", "value2"]}], None),
    # "...-list-of-int-values-all-distinct"
    ("numa", [{"ints": [0, 1]}, {"ints": [1, 2]}, {"ints": [2, 3]}], ["device-1", "device-3"]),
    # "...-list-of-bool-values-all-distinct"
    ("boolAttribute", [{"bools": [True]}, {"bools": [True, False]}, {"bools": [False]}], ["device-1", "device-3"]),
    # "...-list-of-version-values-all-distinct"
    ("driverVersion", [{"versions": ["1.0.0", "1.1.0"]}, {"versions": ["1.1.0", "2.0.0"]},
                       {"versions": ["2.0.0", "2.1.0"]}], ["device-1", "device-3"]),
])
def test_list_attributes_distinct_constraint(attr, values, expected):
    got = run([_constrained("distinctAttribute", attr)], [CLASS_A], _listed(attr, *values))
    if expected is None:
        assert got is None
    else:
        check(got, _devices(*expected))


def test_list_attributes_distinct_constraint_with_empty_or_unknown_type():
    # "list-attributes-distinct-constaint-with-empty-or-unknown-type"
    s = _listed("driverVersion", {"versions": []}, {})
    with pytest.raises(AllocationError, match="unsupported attribute value"):
        run([_constrained("distinctAttribute", "driverVersion")], [CLASS_A], s)


def test_list_attributes_in_cel_selectors():
    # Not an upstream case: list attributes are CEL lists in selectors; without the feature
    # they are absent, and looking one up is a CEL runtime error.
    s = _listed("numa", {"ints": [0, 1]}, {"ints": [2, 3]})
    c = claim("claim-0", req("req-0", "class-a", selectors=[f'2 in device.attributes["{A}"].numa']))
    check(run([c], [CLASS_A], s), _devices("device-2"))
    with pytest.raises(AllocationError, match="CEL runtime error"):
        run([c], [CLASS_A], s, features=Features(list_type_attributes=False))


# --- rules of upstream GatherPools and the v1 API that the table relies on ----------------------

def test_pools_with_binding_conditions_are_searched_last():
    # GatherPools (experimental allocator): pools holding devices with binding conditions come
    # after the others, whatever their names ("check-combinations-with-backtracking-across-
    # slices-and-pools" relies on it).
    s = [slc("slice-1", "node-1", "pool-1", A, _bc("device-1", ["IsPrepare"], [])),
         slc("slice-2", "node-1", "pool-2", A, dev("device-1"))]
    check(run([claim("claim-0", req("req-0", "class-a"))], [CLASS_A], s),
          alloc(res("req-0", A, "pool-2", "device-1")))


def test_obsolete_pool_generation_on_other_node_hides_the_pool():
    # checkSlicesInPool: a newer generation published for another node makes this node's
    # incomplete view obsolete; ExactCount finds nothing and All reports no pool at all.
    s = _gen_slices([("slice-1", "node-1", 1, "device-1"), ("slice-2", "node-2", 2, "device-2")])
    assert run([claim("claim-0", req("req-0", "class-a", mode="All"))], [CLASS_A], s) is None


def _slice_errors(*devices):
    return slc("slice-1", "node-1", "pool-1", A, *devices).semantic_errors()


def test_list_attribute_validation():
    # v1 validation of list-typed attributes (KEP-5491): one value kind, non-empty, unique
    # entries, semver versions, at most 48 list values per device.
    assert _slice_errors(dev("device-1", {"numa": {"ints": [0, 1]}, "v": {"versions": ["1.0.0"]}})) == []
    errors = dict(_slice_errors(dev("device-1", {"a": {"strings": []}, "b": {"ints": [1, 1]},
                                                 "c": {"versions": ["1.0"]}, "d": {"int": 1, "ints": [2]}})))
    assert errors["spec.devices[0].attributes[a].strings"].startswith("Required value")
    assert errors["spec.devices[0].attributes[b].ints"].startswith("Duplicate value")
    assert "semver" in errors["spec.devices[0].attributes[c].versions[0]"]
    assert "exactly one value" in errors["spec.devices[0].attributes[d]"]
    many_values = dev("device-1", {"a": {"ints": list(range(30))}, "b": {"ints": list(range(19))}})
    assert "at most 48" in dict(_slice_errors(many_values))["spec.devices[0].attributes"]


def test_taint_effect_none_is_accepted():
    # [1.35] DeviceTaintEffectNone ("tainted-no-effect"): valid, informational only.
    assert _slice_errors(dev("device-1", taints=[T_NONE])) == []
    with pytest.raises(Exception, match="effect"):
        _slice_errors(dev("device-1", taints=[{**T_NONE, "effect": "Sometimes"}]))
