"""DRA scheduling benchmark, in process, in the shape of Kubernetes' scheduler_perf DRA workloads.

    python -m mlplane.bench.dra [--quick]

kube-scheduler's test/integration/scheduler_perf/dra (SchedulingWithResourceClaimTemplate,
"5000pods_500nodes"): 500 nodes with 10 devices each, one ResourceSlice per node, 5,000 pods
that each get one claim from a ResourceClaimTemplate; the first half (init pods) fill half the
cluster, the second half are measured. Here the same shape runs through mlplane's real policy
core: the default Framework (DynamicResources included) over a Snapshot, every decision
assumed in the snapshot as the scheduler does (Reserve assumes the claim's allocation), with no
store and no HTTP. The claims exist before their pods are scheduled, as the claim controller
would have made them (named in ``status.resourceClaimStatuses``, owned by the pod).

Shapes (devices gpu-0..9 per node; the init claims hold gpu-0..4 of every node):

- ``empty``: one device of a class without selectors; 5 measured pods fit per node;
- ``cel``: one device with a CEL selector on an attribute and a capacity;
- ``match``: two requests of one device each with ``matchAttribute`` on a NUMA attribute that
  pairs devices (gpu-4 and gpu-5 share one, so the search backtracks); 2 pods fit per node;
- ``partitionable``: per node two counter sets of 4 memory units; devices are a whole GPU
  (4 units) and four quarters (1 unit) of each; the init claims hold gpu-0's quarters and the
  measured pods ask for a quarter by selector, so counters decide (4 pods per node);
- ``backtracking``: a claim whose two requests (15 + 16 devices of one NUMA node out of 60
  alternating ones) cannot be satisfied, which a first-fit search only learns after trying
  the combinations; it must give up within the allocator's step budget.

Each shape also schedules one pod more than fits, which must stay Unschedulable. Checks kept
outside the scheduler: no device allocated twice, every placed pod's devices on its node, no
counter set over-consumed, every pod that fits placed. kube-scheduler's published figures are
rows of their own, labelled published, not measured here.
"""

from __future__ import annotations

import gc
import hashlib
import sys
import time
from collections import Counter

from mlplane.bench import print_report
from mlplane.api.core import Node, Pod
from mlplane.api.resource import DeviceClass, ResourceClaim, ResourceSlice
from mlplane.policy.device.search import DEFAULT_MAX_STEPS
from mlplane.policy.pod.interface import Code
from mlplane.policy.pod.plugins import default_framework
from mlplane.policy.pod.snapshot import Snapshot

DRIVER = "gpu.example.com"
DEVICES_PER_NODE = 10
NAMESPACE = "bench"
# kubernetes/kubernetes PR #140254 (2026-07, local benchstat), quoted in
# shared/reference/device.md section 5: selector_empty_500nodes and match_empty_500nodes.
PUBLISHED = {"empty": 240, "match": 110}
GOALS = {"empty": 500, "match": 250}
CEL_SELECTOR = (f"device.attributes['{DRIVER}'].model == 'a100' && "
                f"device.capacity['{DRIVER}'].memory.compareTo(quantity('40Gi')) >= 0")
QUARTER_SELECTOR = f"device.attributes['{DRIVER}'].profile == '1g'"


# -- objects ------------------------------------------------------------------------------------
def _node(name: str) -> Node:
    return Node.model_validate({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110"}}})


def _gpu_slice(node: str) -> ResourceSlice:
    devices = [{"name": f"gpu-{i}",
                "attributes": {"model": {"string": "a100"}, "index": {"int": i}, "numa": {"int": i // 2}},
                "capacity": {"memory": {"value": "80Gi"}}} for i in range(DEVICES_PER_NODE)]
    return _slice(node, devices)


def _partitioned_slice(node: str) -> ResourceSlice:
    devices = []
    for gpu in range(2):
        devices.append({"name": f"gpu-{gpu}", "attributes": {"profile": {"string": "4g"}},
                        "consumesCounters": [{"counterSet": f"gpu-{gpu}", "counters": {"memory": {"value": "4"}}}]})
        devices += [{"name": f"gpu-{gpu}-q{q}", "attributes": {"profile": {"string": "1g"}},
                     "consumesCounters": [{"counterSet": f"gpu-{gpu}", "counters": {"memory": {"value": "1"}}}]}
                    for q in range(4)]
    counters = [{"name": f"gpu-{gpu}", "counters": {"memory": {"value": "4"}}} for gpu in range(2)]
    return _slice(node, devices, counters)


def _numa_slice(node: str, n: int) -> ResourceSlice:
    return _slice(node, [{"name": f"dev-{i}", "attributes": {"numa": {"int": i % 2}}} for i in range(n)])


def _slice(node: str, devices: list[dict], counters: list[dict] | None = None) -> ResourceSlice:
    spec: dict = {"driver": DRIVER, "nodeName": node, "devices": devices,
                  "pool": {"name": node, "generation": 1, "resourceSliceCount": 1}}
    if counters:
        spec["sharedCounters"] = counters
    return ResourceSlice.model_validate({"metadata": {"name": f"{node}-{DRIVER}"}, "spec": spec})


def _requests(shape: str) -> tuple[list[dict], list[dict]]:
    """The claim template's requests and constraints for a shape."""
    if shape == "match":
        return ([{"name": r, "exactly": {"deviceClassName": DRIVER}} for r in ("a", "b")],
                [{"requests": ["a", "b"], "matchAttribute": f"{DRIVER}/numa"}])
    if shape == "backtracking":
        return ([{"name": "a", "exactly": {"deviceClassName": DRIVER, "count": 15}},
                 {"name": "b", "exactly": {"deviceClassName": DRIVER, "count": 16}}],
                [{"requests": ["a", "b"], "matchAttribute": f"{DRIVER}/numa"}])
    exactly: dict = {"deviceClassName": DRIVER}
    selector = {"cel": CEL_SELECTOR, "partitionable": QUARTER_SELECTOR}.get(shape)
    if selector:
        exactly["selectors"] = [{"cel": {"expression": selector}}]
    return [{"name": "gpu", "exactly": exactly}], []


def _pod_and_claim(shape: str, i: int, node: str | None = None,
                   devices: list[tuple[str, str]] = ()) -> tuple[Pod, ResourceClaim]:
    """Pod ``i`` and the claim the claim controller made for it from the template; with
    ``node`` the pod is bound there and its claim allocated ``devices`` [(request, device)]."""
    name, uid = f"pod-{i:05d}", f"uid-{shape}-{i}"
    claim_name = f"{name}-gpu"
    pod_spec: dict = {"containers": [{"name": "main", "image": "x", "resources": {"claims": [{"name": "gpu"}]}}],
                      "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": f"{shape}-template"}]}
    if node:
        pod_spec["nodeName"] = node
    pod = Pod.model_validate({
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid},
        "spec": pod_spec,
        "status": {"resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": claim_name}]}})
    requests, constraints = _requests(shape)
    claim: dict = {
        "metadata": {"name": claim_name, "namespace": NAMESPACE, "resourceVersion": "1",
                     "annotations": {"resource.kubernetes.io/pod-claim-name": "gpu"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid,
                                          "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"devices": {"requests": requests, "constraints": constraints}}}
    if node:
        claim["status"] = {
            "allocation": {"devices": {"results": [{"request": r, "driver": DRIVER, "pool": node, "device": d}
                                                   for r, d in devices]},
                           "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                               {"key": "metadata.name", "operator": "In", "values": [node]}]}]}},
            "reservedFor": [{"resource": "pods", "name": name, "uid": uid}]}
    return pod, ResourceClaim.model_validate(claim)


def _cluster(shape: str, nodes: int) -> tuple[Snapshot, list[Pod], int]:
    """The snapshot with the init half allocated, the pods to measure and how many of them fit."""
    names = [f"node-{n:03d}" for n in range(nodes)]
    snapshot = Snapshot.build(_node(n) for n in names)
    devices = snapshot.devices
    devices.set_class(DeviceClass.model_validate({"metadata": {"name": DRIVER}, "spec": {}}))
    if shape == "backtracking":
        for n in names:
            devices.set_slice(_numa_slice(n, 60))
        pod, claim = _pod_and_claim(shape, 0)
        devices.set_claim(claim)
        return snapshot, [pod], 0
    make_slice = _partitioned_slice if shape == "partitionable" else _gpu_slice
    init = ([f"gpu-0-q{q}" for q in range(4)] if shape == "partitionable"
            else [f"gpu-{i}" for i in range(DEVICES_PER_NODE // 2)])
    fit_per_node = {"match": 2, "partitionable": 4}.get(shape, DEVICES_PER_NODE // 2)
    request = "a" if shape == "match" else "gpu"
    i = 0
    for n in names:
        devices.set_slice(make_slice(n))
        for d in init:
            pod, claim = _pod_and_claim(shape, i, n, [(request, d)])
            snapshot.set_pod(pod)
            devices.set_claim(claim)
            i += 1
    measured = []
    for _ in range(nodes * fit_per_node + 1):  # one pod more than fits
        pod, claim = _pod_and_claim(shape, i)
        devices.set_claim(claim)
        measured.append(pod)
        i += 1
    return snapshot, measured, nodes * fit_per_node


# -- the run ------------------------------------------------------------------------------------
def run_shape(shape: str, nodes: int) -> dict:
    """Schedule the shape's measured pods one by one; time each cycle; check the outcome."""
    snapshot, pods, fit = _cluster(shape, nodes)
    framework = default_framework()
    latencies, placed, unschedulable = [], {}, []
    gc.collect()  # the garbage of building the cluster is not the scheduler's
    start = time.perf_counter()
    for pod in pods:
        t0 = time.perf_counter()
        result = framework.schedule(pod, snapshot)
        latencies.append(time.perf_counter() - t0)
        if result.status.is_success:
            placed[pod.key] = result.node
        elif result.status.code is Code.UNSCHEDULABLE or result.status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
            unschedulable.append(result.status.message)
        else:
            raise RuntimeError(f"{shape}: scheduling {pod.key} failed: {result.status.message}")
    elapsed = time.perf_counter() - start
    latencies.sort()
    out = {"nodes": nodes, "devices": nodes * _devices_per_node(shape), "pods": len(pods), "fit": fit,
           "placed": len(placed), "unschedulable": len(unschedulable),
           "message": unschedulable[-1] if unschedulable else "",
           "seconds": elapsed, "pods_per_s": len(pods) / elapsed,
           "p50_ms": 1000 * latencies[len(latencies) // 2],
           "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}
    out.update(check(shape, snapshot, placed))
    return out


def _devices_per_node(shape: str) -> int:
    return 60 if shape == "backtracking" else DEVICES_PER_NODE


def check(shape: str, snapshot: Snapshot, placed: dict[str, str]) -> dict:
    """Consistency kept independent of the scheduler: devices allocated more than once, placed
    pods whose devices are not on their node, counter sets consumed beyond their size; and a
    digest of every placement and allocation, to compare the decisions of two versions."""
    uses: Counter = Counter()
    digest = hashlib.sha256(repr(sorted(placed.items())).encode())
    wrong_node = 0
    consumed: Counter = Counter()
    for claim in snapshot.devices.allocated_claims():
        owner = claim.metadata.owner_references[0].name
        node = placed.get(f"{NAMESPACE}/{owner}")
        digest.update(claim.status.allocation.model_dump_json(by_alias=True).encode())
        for r in claim.status.allocation.devices.results:
            uses[(r.driver, r.pool, r.device)] += 1
            if node is not None and r.pool != node:
                wrong_node += 1
            if shape == "partitionable":
                gpu = r.device.split("-q")[0]
                consumed[(r.pool, gpu)] += 1 if "-q" in r.device else 4
    return {"double_allocated": sum(1 for n in uses.values() if n > 1), "wrong_node": wrong_node,
            "over_counters": sum(1 for v in consumed.values() if v > 4),
            "decisions": digest.hexdigest()[:16]}


def run(quick: bool = False) -> dict:
    nodes = 50 if quick else 500
    results = {shape: run_shape(shape, nodes) for shape in ("empty", "cel", "match", "partitionable")}
    results["backtracking"] = run_shape("backtracking", 1 if quick else 2)
    return results


def rows(results: dict) -> list[str]:
    out = []
    labels = {"empty": "empty selector", "cel": "CEL selector on attributes",
              "match": "matchAttribute across two requests", "partitionable": "partitionable devices (counters)"}
    for shape, label in labels.items():
        r = results[shape]
        name = f"DRA {label} ({r['nodes']} nodes x {DEVICES_PER_NODE} devices, {r['pods']:,} measured pods)"
        goal = f">= {GOALS[shape]}" if shape in GOALS else ""
        out.append(f"| {name}: pods/s | {r['pods_per_s']:,.0f} | | {goal} |")
        if shape in PUBLISHED:
            out.append(f"| {name}: kube-scheduler pods/s (published, not measured) | | ~{PUBLISHED[shape]} | |")
        out.append(f"| {name}: per-pod latency p50 / p99 (ms) | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | | |")
        out.append(f"| {name}: placed / fit, double-allocated, wrong node, counters over | "
                   f"{r['placed']:,} / {r['fit']:,}, {r['double_allocated']}, {r['wrong_node']}, "
                   f"{r['over_counters']} | | all, 0, 0, 0 |")
    r = results["backtracking"]
    out.append(f"| DRA pathological backtracking ({r['nodes']} nodes x 60 devices, budget "
               f"{DEFAULT_MAX_STEPS:,} steps/node): seconds to give up | {r['seconds']:.2f} | | ends |")
    out.append(f"| DRA pathological backtracking: message | {r['message']} | | |")
    return out


def main() -> int:
    return print_report(run, rows)


if __name__ == "__main__":
    sys.exit(main())
