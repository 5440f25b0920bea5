"""`mlplane queue schedule -f FILE [--cycles N] -o json`: the contract conformance checks rely on."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OBJECTS = """
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: {name: a100}
---
apiVersion: kueue.x-k8s.io/v1beta1
kind: ClusterQueue
metadata: {name: research}
spec:
  namespaceSelector: {}
  cohort: lab
  resourceGroups:
  - coveredResources: [nvidia.com/gpu]
    flavors: [{name: a100, resources: [{name: nvidia.com/gpu, nominalQuota: 4, borrowingLimit: 0}]}]
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata: {namespace: team, name: q}
spec: {clusterQueue: research}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: Workload
metadata: {name: first, namespace: team, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  queueName: q
  podSets: [{name: main, count: 2, template: {spec: {restartPolicy: Never,
    containers: [{name: c, resources: {requests: {nvidia.com/gpu: "1"}}}]}}}]
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: Workload
metadata: {name: second, namespace: team, creationTimestamp: "2026-01-01T00:00:01Z"}
spec:
  queueName: q
  podSets: [{name: main, count: 8, template: {spec: {restartPolicy: Never,
    containers: [{name: c, resources: {requests: {nvidia.com/gpu: "1"}}}]}}}]
"""


def run(*args, input):
    return subprocess.run([sys.executable, "-m", "mlplane.cli.main", "queue", "schedule", *args], input=input,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)


def test_admits_in_queue_order_and_explains_the_rest():
    r = run("-f", "-", "--cycles", "2", "-o", "json", input=OBJECTS)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"admitted", "preempted", "pending"}
    assert out["admitted"] == {"team/first": {"clusterQueue": "research", "podSetAssignments": [
        {"name": "main", "count": 2, "flavors": {"nvidia.com/gpu": "a100"},
         "resourceUsage": {"nvidia.com/gpu": "2"}}]}}
    assert out["preempted"] == {}
    assert "insufficient quota for nvidia.com/gpu in flavor a100" in out["pending"]["team/second"]


def test_invalid_input_exits_2_naming_the_field():
    r = run("-f", "-", "-o", "json", input=OBJECTS.replace("nominalQuota: 4", "nominalQuota: -4"))
    assert r.returncode == 2 and r.stdout == ""
    assert "spec.resourceGroups[0].flavors[0].resources[0].nominalQuota" in r.stderr


def test_a_duplicate_document_exits_2_naming_the_second_one():
    duplicate = "\n---\napiVersion: kueue.x-k8s.io/v1beta2\nkind: ResourceFlavor\nmetadata: {name: a100}\n"
    r = run("-f", "-", "-o", "json", input=OBJECTS + duplicate)
    assert r.returncode == 2 and r.stdout == ""
    assert "ResourceFlavor a100 (object 6): the same kind and name as object 1" in r.stderr


def test_a_negative_container_request_in_a_workload_exits_2_naming_the_field():
    r = run("-f", "-", "-o", "json", input=OBJECTS.replace('nvidia.com/gpu: "1"}}}]}}}]\n---',
                                                              'nvidia.com/gpu: "-1"}}}]}}}]\n---', 1))
    assert r.returncode == 2 and r.stdout == ""
    assert "spec.podSets[0].template.spec.containers[0].resources.requests[nvidia.com/gpu]" in r.stderr


def test_an_admission_naming_a_flavor_the_cluster_queue_lacks_exits_2():
    admitted = OBJECTS + """
status:
  admission:
    clusterQueue: research
    podSetAssignments: [{name: main, count: 8, flavors: {nvidia.com/gpu: h100}, resourceUsage: {nvidia.com/gpu: "8"}}]
  conditions: [{type: QuotaReserved, status: "True", reason: QuotaReserved, message: x,
                lastTransitionTime: "2026-01-01T00:00:02Z"}]
"""
    r = run("-f", "-", "-o", "json", input=admitted)
    assert r.returncode == 2 and r.stdout == ""
    assert ("Workload team/second: status.admission.podSetAssignments[0].flavors[nvidia.com/gpu]: ClusterQueue "
            "research has no flavor h100 for nvidia.com/gpu") in r.stderr
