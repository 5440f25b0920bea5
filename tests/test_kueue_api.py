"""The Kueue kinds: loading v1beta2 and v1beta1 manifests, the bad inputs Kueue rejects, storage, printing."""

import re

import pytest

from mlplane.api import REGISTRY, Invalid
from mlplane.api.kueue import (ClusterQueue, Cohort, Configuration, LocalQueue, ResourceFlavor, Workload,
                               WorkloadPriorityClass, cluster_queue_of, duration_seconds, reserved)
from mlplane.api.loader import ManifestError, load_text
from mlplane.cli.printers import print_table, since

# The shapes of section 1.2 of shared/reference/workload.md (Kueue's docs examples).
V1BETA2 = """
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: {name: spot}
spec:
  nodeLabels: {instance-type: spot}
  tolerations: [{key: spot-taint, operator: Exists, effect: NoSchedule}]
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {name: team-a-cq}
spec:
  namespaceSelector: {}
  cohortName: team-ab
  queueingStrategy: BestEffortFIFO
  resourceGroups:
  - coveredResources: [cpu, memory, nvidia.com/gpu]
    flavors:
    - name: default-flavor
      resources:
      - {name: cpu, nominalQuota: 9, borrowingLimit: 1}
      - {name: memory, nominalQuota: 36Gi, lendingLimit: 12Gi}
      - {name: nvidia.com/gpu, nominalQuota: 8}
  preemption:
    reclaimWithinCohort: Any
    borrowWithinCohort: {policy: LowerPriority, maxPriorityThreshold: 100}
    withinClusterQueue: LowerPriority
  flavorFungibility: {whenCanBorrow: MayStopSearch, whenCanPreempt: TryNextFlavor}
  fairSharing: {weight: "1"}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata: {namespace: team-a, name: team-a-queue}
spec: {clusterQueue: team-a-cq}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: Cohort
metadata: {name: important-org}
spec:
  parentName: root-cohort
  fairSharing: {weight: "0.75"}
  resourceGroups:
  - coveredResources: [cpu]
    flavors: [{name: default-flavor, resources: [{name: cpu, nominalQuota: 12}]}]
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: WorkloadPriorityClass
metadata: {name: high}
value: 1000
description: production training
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: Workload
metadata: {name: sample-job, namespace: team-a}
spec:
  active: true
  queueName: team-a-queue
  priorityClassRef: {group: kueue.x-k8s.io, kind: WorkloadPriorityClass, name: high}
  priority: 1000
  podSets:
  - name: main
    count: 3
    minCount: 1
    template: {spec: {containers: [{name: c, image: x, resources: {requests: {cpu: "1", memory: 200Mi}}}],
               restartPolicy: Never}}
status:
  admission:
    clusterQueue: team-a-cq
    podSetAssignments:
    - {name: main, count: 3, flavors: {cpu: default-flavor, memory: default-flavor},
       resourceUsage: {cpu: "3", memory: 600Mi}}
  conditions: [{type: QuotaReserved, status: "True"}, {type: Admitted, status: "True"}]
"""

CQ = """
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {name: cq}
spec:
  cohortName: all
  resourceGroups:
  - coveredResources: [cpu, memory]
    flavors:
    - name: on-demand
      resources: [{name: cpu, nominalQuota: 9}, {name: memory, nominalQuota: 36Gi}]
"""

WL = """
apiVersion: kueue.x-k8s.io/v1beta2
kind: Workload
metadata: {name: wl, namespace: default}
spec:
  queueName: lq
  podSets:
  - name: main
    count: 2
    template: {spec: {containers: [{name: c, resources: {requests: {cpu: "1"}}}], restartPolicy: Never}}
"""


def _objs(text: str) -> list:
    return [d.obj for d in load_text(text, "f.yaml")]


def _error(text: str) -> str:
    with pytest.raises(ManifestError) as e:
        load_text(text, "f.yaml")
    (err,) = e.value.errors
    return err


def test_reference_shapes_load_as_v1beta2_objects_with_kueue_defaults():
    rf, cq, lq, cohort, wpc, wl = _objs(V1BETA2)
    assert isinstance(rf, ResourceFlavor) and rf.spec.tolerations[0].key == "spot-taint"
    assert isinstance(cq, ClusterQueue) and cq.spec.cohort_name == "team-ab"
    quotas = cq.spec.resource_groups[0].flavors[0].resources
    assert [(q.name, q.nominal_quota, q.borrowing_limit, q.lending_limit) for q in quotas] == [
        ("cpu", 9, 1, None), ("memory", "36Gi", None, "12Gi"), ("nvidia.com/gpu", 8, None, None)]
    assert cq.spec.preemption.borrow_within_cohort.max_priority_threshold == 100
    assert cq.spec.namespace_selector is not None  # {} selects every namespace
    assert cq.spec.stop_policy == "None"
    assert isinstance(lq, LocalQueue) and lq.key == "team-a/team-a-queue" and lq.spec.cluster_queue == "team-a-cq"
    assert isinstance(cohort, Cohort) and cohort.spec.parent_name == "root-cohort"
    assert cohort.spec.fair_sharing.weight == "0.75"
    assert isinstance(wpc, WorkloadPriorityClass) and wpc.value == 1000
    assert isinstance(wl, Workload) and wl.spec.pod_sets[0].min_count == 1
    assert wl.spec.priority_class_ref.name == "high" and wl.spec.priority == 1000
    (psa,) = wl.status.admission.pod_set_assignments
    assert psa.flavors == {"cpu": "default-flavor", "memory": "default-flavor"}
    assert psa.resource_usage == {"cpu": "3", "memory": "600Mi"}
    # The wire shape is camelCase, as written.
    data = cq.to_dict()
    assert data["apiVersion"] == "kueue.x-k8s.io/v1beta2"
    assert data["spec"]["resourceGroups"][0]["coveredResources"] == ["cpu", "memory", "nvidia.com/gpu"]
    assert data["spec"]["namespaceSelector"] == {}
    assert REGISTRY.of(cq).decode(data) == cq


def test_omitted_fields_get_the_crd_defaults():
    (cq,) = _objs("apiVersion: kueue.x-k8s.io/v1beta2\nkind: ClusterQueue\nmetadata: {name: bare}\n")
    spec = cq.spec
    assert spec.namespace_selector is None  # omitted: no namespace may use it
    assert spec.queueing_strategy == "BestEffortFIFO"
    assert (spec.flavor_fungibility.when_can_borrow, spec.flavor_fungibility.when_can_preempt) == (
        "MayStopSearch", "TryNextFlavor")
    assert (spec.preemption.within_cluster_queue, spec.preemption.reclaim_within_cohort,
            spec.preemption.borrow_within_cohort.policy) == ("Never", "Never", "Never")
    (wl,) = _objs(WL)
    assert wl.spec.active is True and wl.spec.priority is None
    (lq,) = _objs("apiVersion: kueue.x-k8s.io/v1beta2\nkind: LocalQueue\nmetadata: {name: q, namespace: a}\n"
                  "spec: {clusterQueue: cq, fairSharing: {}}\n")
    assert lq.spec.fair_sharing.weight == "1"


V1BETA1 = """
apiVersion: kueue.x-k8s.io/v1beta1
kind: ClusterQueue
metadata: {name: old-cq}
spec:
  cohort: team-ab
  admissionChecks: [prov]
  flavorFungibility: {whenCanBorrow: Borrow, whenCanPreempt: Preempt}
  namespaceSelector: {}
  resourceGroups:
  - coveredResources: [cpu]
    flavors: [{name: default-flavor, resources: [{name: cpu, nominalQuota: 9, borrowingLimit: 1}]}]
status:
  pendingWorkloads: 2
  pendingWorkloadsStatus: {clusterQueuePendingWorkload: [], lastChangeTime: "2024-01-01T00:00:00Z"}
---
apiVersion: kueue.x-k8s.io/v1beta1
kind: LocalQueue
metadata: {namespace: team-a, name: q}
spec: {clusterQueue: old-cq}
status:
  flavorUsage: [{name: default-flavor, resources: [{name: cpu, total: "3"}]}]
---
apiVersion: kueue.x-k8s.io/v1beta1
kind: Workload
metadata: {name: old-wl, namespace: team-a}
spec:
  queueName: q
  priorityClassSource: kueue.x-k8s.io/workloadpriorityclass
  priorityClassName: high
  priority: 1000
  podSets:
  - {name: main, count: 1, template: {spec: {containers: [{name: c}], restartPolicy: Never}}}
status:
  accumulatedPastExexcutionTimeSeconds: 30
---
apiVersion: kueue.x-k8s.io/v1beta1
kind: ResourceFlavor
metadata: {name: default-flavor}
---
apiVersion: kueue.x-k8s.io/v1beta1
kind: Cohort
metadata: {name: team-ab}
spec: {parentName: root}
---
apiVersion: kueue.x-k8s.io/v1beta1
kind: WorkloadPriorityClass
metadata: {name: high}
value: 1000
"""


def test_v1beta1_manifests_become_v1beta2_objects():
    cq, lq, wl, rf, cohort, wpc = _objs(V1BETA1)
    assert all(o.api_version == "kueue.x-k8s.io/v1beta2" for o in (cq, lq, wl, rf, cohort, wpc))
    assert cq.spec.cohort_name == "team-ab"
    assert [r.name for r in cq.spec.admission_checks_strategy.admission_checks] == ["prov"]
    assert (cq.spec.flavor_fungibility.when_can_borrow, cq.spec.flavor_fungibility.when_can_preempt) == (
        "MayStopSearch", "MayStopSearch")
    assert cq.status.pending_workloads == 2
    assert cq.to_dict()["spec"]["cohortName"] == "team-ab" and "cohort" not in cq.to_dict()["spec"]
    assert lq.status.flavors_usage[0].resources[0].total == "3"
    ref = wl.spec.priority_class_ref
    assert (ref.group, ref.kind, ref.name) == ("kueue.x-k8s.io", "WorkloadPriorityClass", "high")
    assert wl.status.accumulated_past_execution_time_seconds == 30
    assert isinstance(cohort, Cohort) and cohort.spec.parent_name == "root"
    assert REGISTRY.by_gvk("kueue.x-k8s.io/v1beta1", "Workload") is REGISTRY.of(Workload)


def test_v1beta1_pod_priority_class_source_and_bad_conversions():
    text = V1BETA1.split("---")[2].replace("kueue.x-k8s.io/workloadpriorityclass", "scheduling.k8s.io/priorityclass")
    (wl,) = _objs(text)
    assert (wl.spec.priority_class_ref.group, wl.spec.priority_class_ref.kind) == ("scheduling.k8s.io",
                                                                                   "PriorityClass")
    err = _error(text.replace("scheduling.k8s.io/priorityclass", "bogus"))
    assert "spec.priorityClassSource" in err and 'Unsupported value: "bogus"' in err
    both = V1BETA1.split("---")[0].replace("cohort: team-ab", "cohort: team-ab\n  cohortName: other")
    err = _error(both)
    assert 'ClusterQueue.kueue.x-k8s.io "old-cq" is invalid' in err and "spec.cohortName" in err
    checks = V1BETA1.split("---")[0].replace("admissionChecks: [prov]",
                                             "admissionChecks: [prov]\n  admissionChecksStrategy: "
                                             "{admissionChecks: [{name: other}]}")
    assert "Either AdmissionChecks or AdmissionCheckStrategy can be set, but not both" in _error(checks)


def _flavor(name: str, *quotas: str) -> str:
    return f"    - name: {name}\n      resources: [{', '.join(quotas)}]\n"


@pytest.mark.parametrize("text, field, words", [
    (CQ + "  - coveredResources: [gpu]\n    flavors:\n" + _flavor("on-demand", "{name: gpu, nominalQuota: 1}"),
     "spec.resourceGroups[1].flavors[0].name", "Duplicate value: 'on-demand'"),
    (CQ + "  - coveredResources: [cpu]\n    flavors:\n" + _flavor("spot", "{name: cpu, nominalQuota: 1}"),
     "spec.resourceGroups[1].coveredResources[0]", "Duplicate value: 'cpu'"),
    (CQ.replace("[{name: cpu, nominalQuota: 9}, {name: memory, nominalQuota: 36Gi}]",
                "[{name: memory, nominalQuota: 36Gi}, {name: cpu, nominalQuota: 9}]"),
     "spec.resourceGroups[0].flavors[0].resources[0].name", "must match the name in coveredResources"),
    (CQ.replace(", {name: memory, nominalQuota: 36Gi}", ""),
     "spec.resourceGroups[0].flavors[0].resources", "must have the same number of resources as the coveredResources"),
    (CQ.replace("  cohortName: all\n", "").replace("nominalQuota: 9}", "nominalQuota: 9, borrowingLimit: 1}"),
     "spec.resourceGroups[0].flavors[0].resources[0].borrowingLimit", "must be nil when cohort is empty"),
    (CQ.replace("nominalQuota: 9}", "nominalQuota: -1}"),
     "spec.resourceGroups[0].flavors[0].resources[0].nominalQuota", "must be greater than or equal to 0"),
    (CQ.replace("nominalQuota: 36Gi}", "nominalQuota: 36Gi, lendingLimit: -1Gi}"),
     "spec.resourceGroups[0].flavors[0].resources[1].lendingLimit", "must be greater than or equal to 0"),
    (CQ.replace("nominalQuota: 9}", "nominalQuota: 9, lendingLimit: 10}"),
     "spec.resourceGroups[0].flavors[0].resources[0].lendingLimit", "less than or equal to the nominalQuota"),
    (CQ + "  preemption: {reclaimWithinCohort: Never, borrowWithinCohort: {policy: LowerPriority}}\n",
     "spec.preemption", "reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never"),
    (CQ + "  flavorFungibility: {preference: PreemptionOverBorrowing}\n",
     "spec.flavorFungibility.preference", "both whenCanBorrow and whenCanPreempt are TryNextFlavor"),
    (CQ + "  queueingStrategy: LIFO\n", "spec.queueingStrategy", "'StrictFIFO' or 'BestEffortFIFO'"),
    (CQ + "  fairSharing: {weight: -1}\n", "spec.fairSharing.weight", "must be greater than or equal to 0"),
    (CQ + "  cohort: old-name\n", "spec.cohort", 'unknown field "spec.cohort"'),
    (CQ.replace("nominalQuota: 9}", "nominalQuota: nine}"),
     "spec.resourceGroups[0].flavors[0].resources[0].nominalQuota", "quantities must match"),
])
def test_bad_cluster_queues_are_rejected_with_the_field_named(text, field, words):
    err = _error(text)
    assert err.startswith('f.yaml: document 1 (ClusterQueue/cq): ClusterQueue.kueue.x-k8s.io "cq" is invalid: ')
    assert f"{field}: " in err and words in err


def test_more_than_16_resource_groups_is_too_many():
    groups = [f"  - coveredResources: [r{i}]\n    flavors:\n" + _flavor(f"f{i}", f"{{name: r{i}, nominalQuota: 1}}")
              for i in range(17)]
    head = CQ.split("  resourceGroups:\n")[0] + "  resourceGroups:\n"
    assert "spec.resourceGroups: Too many: 17: must have at most 16 items" in _error(head + "".join(groups))
    (cq,) = _objs(head + "".join(groups[:16]))
    assert len(cq.spec.resource_groups) == 16


def test_cohort_limits_need_a_parent():
    text = ("apiVersion: kueue.x-k8s.io/v1beta2\nkind: Cohort\nmetadata: {name: root}\nspec:\n  resourceGroups:\n"
            "  - coveredResources: [cpu]\n    flavors: [{name: f, resources: [{name: cpu, nominalQuota: 4, "
            "lendingLimit: 8}]}]\n")
    err = _error(text)
    assert "spec.resourceGroups[0].flavors[0].resources[0].lendingLimit: " in err and "when parent is empty" in err
    (cohort,) = _objs(text.replace("spec:\n", "spec:\n  parentName: top\n"))  # a Cohort may lend more than nominal
    assert cohort.spec.resource_groups[0].flavors[0].resources[0].lending_limit == 8
    assert "a Cohort cannot be its own parent" in _error(text.replace("spec:\n", "spec:\n  parentName: root\n"))


@pytest.mark.parametrize("old, new, field, words", [
    ("    count: 2\n", "    count: 2\n    minCount: 3\n", "spec.podSets[0].minCount", "less or equal to count"),
    ("    count: 2\n", "    count: -1\n", "spec.podSets[0].count", "greater than or equal to 0"),
    ("    count: 2\n", "    count: 2\n    minCount: 0\n", "spec.podSets[0].minCount", "greater than or equal to 1"),
    ("  podSets:\n", "  podSets:\n  - name: main\n    template: {spec: {containers: [{name: c}]}}\n",
     "spec.podSets[1].name", "Duplicate value: 'main'"),
    ("  podSets:\n  - name: main\n    count: 2\n    template: {spec: {containers: [{name: c, resources: {requests: "
     "{cpu: \"1\"}}}], restartPolicy: Never}}\n", "  podSets: []\n", "spec.podSets", "at least 1 item"),
    ("  queueName: lq\n", "  queueName: lq\n  priorityClassRef: {group: kueue.x-k8s.io, kind: WorkloadPriorityClass, "
     "name: high}\n", "spec.priority", "priority should not be nil when priorityClassRef is set"),
    ("  queueName: lq\n", "  queueName: lq\n  priority: 1\n  priorityClassRef: {group: kueue.x-k8s.io, "
     "kind: PriorityClass, name: high}\n", "spec.priorityClassRef.kind", "only the WorkloadPriorityClass kind"),
    ("{cpu: \"1\"}", "{cpu: \"1\", pods: \"1\"}",
     "spec.podSets[0].template.spec.containers[0].resources.requests[pods]", "reserved for internal kueue use"),
    ("  queueName: lq\n", "  queueName: lq\n  maximumExecutionTimeSeconds: 0\n", "spec.maximumExecutionTimeSeconds",
     "greater than or equal to 1"),
])
def test_bad_workloads_are_rejected_with_the_field_named(old, new, field, words):
    err = _error(WL.replace(old, new, 1))
    assert 'Workload.kueue.x-k8s.io "wl" is invalid: ' in err
    assert f"{field}: " in err and words in err


def test_two_variable_pod_sets_and_admissions_that_do_not_match_the_pod_sets():
    two = WL.replace("    count: 2\n", "    count: 2\n    minCount: 1\n") + (
        "  - name: workers\n    count: 4\n    minCount: 2\n    template: {spec: {containers: [{name: c}]}}\n")
    assert "spec.podSets: Invalid value: 2: at most one podSet can use minCount" in _error(two)
    admitted = WL + ("status:\n  admission:\n    clusterQueue: cq\n    podSetAssignments: [{name: other, count: 2}]\n"
                     "  conditions: [{type: QuotaReserved, status: \"True\"}]\n")
    assert "status.admission.podSetAssignments[0].name: Not found: 'other'" in _error(admitted)


def test_resource_flavor_and_local_queue_checks():
    rf = ("apiVersion: kueue.x-k8s.io/v1beta2\nkind: ResourceFlavor\nmetadata: {name: tas}\n"
          "spec: {topologyName: default}\n")
    assert "spec.nodeLabels: Required value: at least one nodeLabel is required when topology is set" in _error(rf)
    bad_toleration = rf.replace("{topologyName: default}", "{tolerations: [{operator: Equal, value: x}]}")
    assert "spec.tolerations[0].operator" in _error(bad_toleration)
    lq = "apiVersion: kueue.x-k8s.io/v1beta2\nkind: LocalQueue\nmetadata: {name: q, namespace: a}\nspec: {}\n"
    assert "spec.clusterQueue: Required value" in _error(lq)


def test_objects_round_trip_through_the_store(store):
    rf, cq, lq, cohort, wpc, wl = _objs(V1BETA2)
    lq.metadata.namespace = wl.metadata.namespace = "default"
    for obj in (rf, cq, lq, cohort, wpc, wl):
        created = store.create(obj)
        got = store.get(type(obj), obj.metadata.namespace, obj.name)
        assert got.to_dict()["apiVersion"] == "kueue.x-k8s.io/v1beta2"
        assert getattr(got, "spec", None) == getattr(obj, "spec", None) and got == created
    assert store.get(WorkloadPriorityClass, None, "high").value == 1000
    # Status is a subresource: written on its own, not on create.
    stored = store.get(Workload, "default", "sample-job")
    assert stored.status.admission is None
    stored.status = wl.status
    store.update_status(stored)
    assert store.get(Workload, "default", "sample-job").status.admission.cluster_queue == "team-a-cq"
    by_queue = store.list(Workload, "default", field_selector="spec.queueName=team-a-queue").items
    assert [w.name for w in by_queue] == ["sample-job"]
    assert store.list(Workload, "default", field_selector="status.admission.clusterQueue=team-a-cq").items
    assert not store.list(Workload, "default", field_selector="spec.queueName=other").items
    assert [c.name for c in store.list(ClusterQueue, field_selector="spec.cohortName=team-ab").items] == ["team-a-cq"]
    # LocalQueue.spec.clusterQueue is immutable.
    q = store.get(LocalQueue, "default", "team-a-queue")
    q.spec.cluster_queue = "elsewhere"
    with pytest.raises(Invalid) as e:
        store.update(q)
    assert "spec.clusterQueue: Invalid value: field is immutable" in e.value.message


def test_kinds_resolve_by_the_names_users_type():
    for name, kind in [("cq", "ClusterQueue"), ("clusterqueues", "ClusterQueue"), ("lq", "LocalQueue"),
                       ("queues", "LocalQueue"), ("rf", "ResourceFlavor"), ("flavors", "ResourceFlavor"),
                       ("wl", "Workload"), ("workloads.kueue.x-k8s.io", "Workload"), ("cohorts", "Cohort"),
                       ("workloadpriorityclasses", "WorkloadPriorityClass")]:
        assert REGISTRY.by_name(name).kind == kind
    assert not REGISTRY.by_name("cq").namespaced and REGISTRY.by_name("wl").namespaced
    assert REGISTRY.by_name("lq").path("team-a") == "/apis/kueue.x-k8s.io/v1beta2/namespaces/team-a/localqueues"


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_tables_match_kueue_printcolumns():
    _rf, cq, lq, _cohort, wpc, wl = _objs(V1BETA2)
    cq.status.pending_workloads, cq.status.admitted_workloads = 3, 1
    # Kueue's printcolumns, plus usage and borrowing, which issue 4 asks `get clusterqueues` to show.
    assert [_cells(line) for line in print_table(REGISTRY.of(cq), [cq]).splitlines()] == [
        ["NAME", "COHORT", "PENDING WORKLOADS", "ADMITTED WORKLOADS", "USAGE", "BORROWED"],
        ["team-a-cq", "team-ab", "3", "1", "<none>", "<none>"]]
    assert [_cells(line) for line in print_table(REGISTRY.of(cq), [cq], wide=True).splitlines()] == [
        ["NAME", "COHORT", "STRATEGY", "PENDING WORKLOADS", "ADMITTED WORKLOADS", "USAGE", "BORROWED"],
        ["team-a-cq", "team-ab", "BestEffortFIFO", "3", "1", "<none>", "<none>"]]
    assert [_cells(line) for line in print_table(REGISTRY.of(lq), [lq]).splitlines()] == [
        ["NAME", "CLUSTERQUEUE", "PENDING WORKLOADS", "ADMITTED WORKLOADS"], ["team-a-queue", "team-a-cq", "0", "0"]]
    wl.metadata.creation_timestamp = "2020-01-01T00:00:00Z"
    pending = wl.model_copy(update={"status": type(wl.status)()})
    pending.metadata = wl.metadata.model_copy(update={"name": "waiting"})
    rows = [_cells(line) for line in print_table(REGISTRY.of(wl), [wl, pending]).splitlines()]
    assert rows[0] == ["NAME", "QUEUE", "RESERVED IN", "ADMITTED", "FINISHED", "AGE"]
    assert rows[1] == ["sample-job", "team-a-queue", "team-a-cq", "True", since("2020-01-01T00:00:00Z")]
    assert rows[2][:2] == ["waiting", "team-a-queue"] and len(rows[2]) == 3  # blank cells, then AGE
    assert [_cells(line) for line in print_table(REGISTRY.of(wpc), [wpc]).splitlines()] == [
        ["NAME", "VALUE"], ["high", "1000"]]


CONFIG = """
apiVersion: config.kueue.x-k8s.io/v1beta1
kind: Configuration
namespace: kueue-system
health: {healthProbeBindAddress: ":8081"}
manageJobsWithoutQueueName: false
integrations: {frameworks: [batch/job]}
fairSharing:
  enable: true
waitForPodsReady:
  enable: true
  timeout: 10m
"""


def test_kueue_configuration_loads_with_upstream_defaults():
    (cfg,) = _objs(CONFIG)
    assert isinstance(cfg, Configuration) and cfg.fair_sharing_enabled and cfg.wait_for_pods_ready_enabled
    assert cfg.fair_sharing.preemption_strategies == ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]
    w = cfg.wait_for_pods_ready
    assert duration_seconds(w.timeout) == 600 and w.block_admission is True
    r = w.requeuing_strategy
    assert (r.timestamp, r.backoff_base_seconds, r.backoff_max_seconds) == ("Eviction", 60, 3600)
    (plain,) = _objs(CONFIG.replace("  timeout: 10m\n", "").replace("  enable: true\n", "  enable: false\n"))
    assert not plain.fair_sharing_enabled and plain.wait_for_pods_ready.timeout == "5m"
    assert plain.wait_for_pods_ready.block_admission is False
    assert duration_seconds("1h30m") == 5400 and duration_seconds("1.5s") == 1.5


@pytest.mark.parametrize("old, new, field", [
    ("  enable: true\nwaitForPodsReady", "  preemptionStrategies: [LessThanInitialShare, LessThanOrEqualToFinalShare]"
     "\nwaitForPodsReady", "fairSharing.preemptionStrategies"),
    ("timeout: 10m", "timeout: ten minutes", "waitForPodsReady.timeout"),
    ("integrations:", "integration:", "integration"),
])
def test_bad_configuration_is_rejected_with_the_field_named(old, new, field):
    err = _error(CONFIG.replace(old, new))
    assert f"{field}: " in err


def test_cluster_queue_of_a_workload_is_its_admission_or_its_local_queues():
    wl = Workload.model_validate({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload", "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"queueName": "lq", "podSets": [{"name": "main", "count": 1, "template": {
            "spec": {"containers": [{"name": "c", "image": "x"}]}}}]}})
    queues = {"ns/lq": "queued-for"}
    assert not reserved(wl) and cluster_queue_of(wl, queues) == "queued-for"
    assert cluster_queue_of(wl, {"other/lq": "queued-for"}) is None
    wl.status = type(wl.status).model_validate({
        "admission": {"clusterQueue": "holding", "podSetAssignments": [{"name": "main", "count": 1}]},
        "conditions": [{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "",
                        "lastTransitionTime": "2024-01-01T00:00:00Z"}]})
    assert reserved(wl) and cluster_queue_of(wl, queues) == "holding"
