"""Kueue fair sharing (mlplane/policy/workload/kueue/fairsharing.py): share, admission order, preemption.

Scenarios are ported from kubernetes-sigs/kueue pkg/cache/scheduler/fair_sharing_test.go
(TestDominantResourceShare), pkg/scheduler/scheduler_test.go (fair sharing cases) and
pkg/scheduler/preemption/preemption_fair_test.go (TestFairPreemptions); each test names the
upstream case it follows. Objects are Kueue manifests through the ``mlplane queue schedule`` path.
"""

import math

import pytest

from mlplane.api import kueue as api
from mlplane.policy.workload.kueue.fairsharing import MAX_INT64, FairSharing, compare_drs
from mlplane.policy.workload.kueue.quota import Quota, QuotaTree
from mlplane.policy.workload.kueue.snapshot import schedule

NOW = "2024-05-01T12:00:00Z"
T0 = 1714564800.0


def flavor(name):
    return api.ResourceFlavor.model_validate({"metadata": {"name": name}, "spec": {}})


def cq(name, cpu, cohort="all", weight=None, within="Never", reclaim="Any"):
    spec = {"namespaceSelector": {}, "cohortName": cohort,
            "resourceGroups": [{"coveredResources": ["cpu"],
                                "flavors": [{"name": "default", "resources": [{"name": "cpu", "nominalQuota": cpu}]}]}],
            "preemption": {"withinClusterQueue": within, "reclaimWithinCohort": reclaim}}
    if weight is not None:
        spec["fairSharing"] = {"weight": weight}
    return api.ClusterQueue.model_validate({"metadata": {"name": name}, "spec": spec})


def lq(name):
    return api.LocalQueue.model_validate({"metadata": {"name": name, "namespace": "default"},
                                          "spec": {"clusterQueue": name}})


def wl(name, queue, cpu, priority=0, created=NOW, admitted=False, reserved=NOW):
    pod = {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": str(cpu)}}}]}
    body = {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": {"queueName": queue, "priority": priority,
                     "podSets": [{"name": "main", "count": 1, "template": {"spec": pod}}]}}
    if admitted:
        body["status"] = {
            "admission": {"clusterQueue": queue, "podSetAssignments": [
                {"name": "main", "count": 1, "flavors": {"cpu": "default"}, "resourceUsage": {"cpu": str(cpu)}}]},
            "conditions": [{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved",
                            "lastTransitionTime": reserved}]}
    return api.Workload.model_validate(body)


def config(*strategies):
    fs = {"enable": True}
    if strategies:
        fs["preemptionStrategies"] = list(strategies)
    return api.Configuration.model_validate({"fairSharing": fs})


def run(objects, cycles=1):
    return schedule(objects, T0, cycles).to_dict()


def base(**weights):
    """Cohort "all": ClusterQueues a, b, c with 3 CPUs each (TestFairPreemptions' baseline shape)."""
    return [flavor("default"), config()] + [cq(n, 3, weight=weights.get(n)) for n in "abc"] + [lq(n) for n in "abc"]


# --- fair_sharing_test.go TestDominantResourceShare ------------------------------------------------------

def tree_with_usage(cpu_used, gpu_used):
    t = QuotaTree()
    t.add_queue("cq", "cohort", {("default", "cpu"): Quota(2000), ("default", "gpu"): Quota(5000)})
    t.add_queue("lender", "cohort", {("default", "cpu"): Quota(8000), ("default", "gpu"): Quota(5000)})
    t.build()
    t.queues["cq"].add_usages({("default", "cpu"): cpu_used, ("default", "gpu"): gpu_used})
    return t


def test_drs_usage_above_nominal_gpu_dominates():
    # "usage above nominal": cpu (3-2)*1000/10 = 100, gpu (7-5)*1000/10 = 200: gpu dominates.
    t = tree_with_usage(3000, 7000)
    drs = FairSharing().drs(t.queues["cq"])
    assert (drs.unweighted, drs.resource, drs.weighted_share) == (200, "gpu", 200)
    assert FairSharing().drs(t.queues["lender"]).weighted_share == 0
    assert FairSharing().drs(t.cohorts["cohort"]).weighted_share == 0  # the root has no parent


def test_drs_usage_below_nominal_is_zero():
    # "usage below nominal": no borrowing, share 0.
    drs = FairSharing().drs(tree_with_usage(1000, 5000).queues["cq"])
    assert drs.weighted_share == 0 and not drs.borrowing


def test_drs_weights_divide_and_zero_weight_is_infinite():
    # "usage above nominal, weight 2" and "zero weight, borrowing" (weightedShare MaxInt64).
    t = tree_with_usage(3000, 7000)
    assert FairSharing({"cq": 2.0}).drs(t.queues["cq"]).weighted_share == 100
    inf = FairSharing({"cq": 0.0}).drs(t.queues["cq"])
    assert inf.precise == math.inf and inf.weighted_share == MAX_INT64
    assert compare_drs(inf, FairSharing().drs(t.queues["cq"])) == 1
    idle = FairSharing({"cq": 0.0}).drs(tree_with_usage(0, 0).queues["cq"])
    assert idle.weighted_share == 0  # weight 0 but not borrowing


def test_unsupported_strategy_list_is_rejected():
    with pytest.raises(ValueError, match="preemptionStrategies"):
        FairSharing(strategies=["LessThanInitialShare", "LessThanOrEqualToFinalShare"])


# --- scheduler_test.go, fair sharing ---------------------------------------------------------------------

def contested():
    """a uses 4 of 3, b 3 of 3: 2 CPUs free, and each queue's 2-CPU head would borrow."""
    return [wl("a-running", "a", 4, admitted=True), wl("b-running", "b", 3, admitted=True),
            wl("a-next", "a", 2, created="2024-05-01T10:00:00Z"), wl("b-next", "b", 2, created="2024-05-01T11:00:00Z")]


def test_lower_share_after_admission_is_admitted_first():
    # After scheduler_test.go "fair sharing schedule workload with lowest drf after admission":
    # both heads would borrow; a's is older (classical order would take it), but b's share after
    # admission (2 borrowed: 222) is below a's (3 borrowed: 333), so b gets the last 2 CPUs.
    out = run(base() + contested())
    assert list(out["admitted"]) == ["default/b-next"]
    assert "default/a-next" in out["pending"]


def test_without_fair_sharing_the_older_head_wins():
    # The same objects without fairSharing.enable: classical order (both borrow; older first).
    objs = [o for o in base() if not isinstance(o, api.Configuration)] + contested()
    assert list(run(objs)["admitted"]) == ["default/a-next"]


def test_weight_favours_the_heavier_queue():
    # "fair sharing schedule workload with lowest drf after admission" with weights: b weighs 3,
    # so its share after admission (3 borrowed / 3) is below a's (2 borrowed / 1).
    objs = base(b="3") + [wl("a-running", "a", 3, admitted=True), wl("b-running", "b", 4, admitted=True),
                          wl("a-next", "a", 2), wl("b-next", "b", 2, created="2024-05-01T13:00:00Z")]
    assert list(run(objs)["admitted"]) == ["default/b-next"]


# --- preemption_fair_test.go TestFairPreemptions ----------------------------------------------------------

def test_reclaim_nominal_from_queue_with_highest_share():
    # "reclaim nominal quota from user with the highest share" (FairSharingPreemptWithinNominal):
    # a is within nominal even with the incoming workload, so it reclaims from b without share checks.
    objs = base() + [wl("b1", "b", 3, admitted=True, reserved="2024-05-01T10:00:00Z"),
                     wl("b2", "b", 3, admitted=True, reserved="2024-05-01T11:00:00Z"),
                     wl("c1", "c", 3, admitted=True), wl("a-in", "a", 3)]
    out = run(objs)
    assert out["preempted"] == {"default/b2": "InCohortReclamation"}


def test_preempt_from_higher_share_with_less_than_or_equal_to_final_share():
    # "can preempt from a more unfair user": a would borrow 1 (share 111), b borrows 3 (333) and
    # keeps 222 after losing one workload, so S2-a holds: InCohortFairSharing.
    objs = base() + [wl("a1", "a", 3, admitted=True)] + [
        wl(f"b{i}", "b", 1, admitted=True, reserved=f"2024-05-01T11:0{i}:00Z") for i in range(6)] + [wl("a-in", "a", 1)]
    out = run(objs, cycles=3)
    # the most recently admitted of b's workloads goes (CandidatesOrdering)
    assert out["preempted"] == {"default/b5": "InCohortFairSharing"}
    assert "default/a-in" in out["admitted"]
    # no flapping: b's requeued workload (share 333 after admission) is tried in the later cycles
    # and cannot take the quota back from a (111, 0 without a's workload): nothing else is preempted.
    assert "default/b5" not in out["admitted"] and len(out["preempted"]) == 1


def test_no_preemption_when_shares_would_swap():
    # "can't preempt workloads when the preemptor would end up with a higher share": a has 4
    # (borrows 1), b 5 (borrows 2); a +1 would make a 222 vs b's 222 before and 111 after: S2-a
    # fails, S2-b (222 < 222) fails.
    objs = base() + [wl("a1", "a", 4, admitted=True)] + [
        wl(f"b{i}", "b", 1, admitted=True) for i in range(5)] + [wl("a-in", "a", 1)]
    out = run(objs, cycles=2)
    assert out["preempted"] == {} and out["admitted"] == {}
    assert "default/a-in" in out["pending"]


def test_less_than_initial_share_rule_s2b():
    # "preempt when rule S2-b holds": a would borrow 2 (200); b borrows 4 (400) and any removal
    # leaves it at 100 or 0, so S2-a fails for every candidate; S2-b (200 < 400) preempts one.
    def objs(*strategies):
        cfg = config(*strategies)
        return [flavor("default"), cfg, cq("a", 3), cq("b", 3), cq("c", 4)] + [lq(n) for n in "abc"] + [
            wl("a1", "a", 3, admitted=True), wl("b-big", "b", 4, admitted=True, reserved="2024-05-01T10:00:00Z"),
            wl("b-small", "b", 3, admitted=True, reserved="2024-05-01T11:00:00Z"), wl("a-in", "a", 2)]
    assert run(objs("LessThanOrEqualToFinalShare"))["preempted"] == {}
    both = run(objs())
    assert both["preempted"] == {"default/b-small": "InCohortFairSharing"}
    assert run(objs("LessThanInitialShare"))["preempted"] == {"default/b-small": "InCohortFairSharing"}


def test_zero_weight_preemptor_cannot_preempt_while_borrowing():
    # "preemptor with zero weight can't preempt": its share after admission is infinite.
    objs = base(a="0") + [wl("a1", "a", 3, admitted=True)] + [
        wl(f"b{i}", "b", 1, admitted=True) for i in range(6)] + [wl("a-in", "a", 1)]
    assert run(objs)["preempted"] == {}


def test_within_cluster_queue_preemption_in_fair_mode():
    # "preempt lower priority in own ClusterQueue": the preemptor's own candidates come first.
    objs = [flavor("default"), config(), cq("a", 3, within="LowerPriority", reclaim="Never"),
            cq("b", 3, reclaim="Never"), lq("a"), lq("b"),
            wl("a-low", "a", 3, priority=-1, admitted=True), wl("b1", "b", 3, admitted=True),
            wl("a-high", "a", 3, priority=5)]
    assert run(objs)["preempted"] == {"default/a-low": "InClusterQueue"}


def test_hierarchical_almost_lca_shares():
    # After the hierarchical cases of TestFairPreemptions: root has cohort "left" (a, b) and the
    # ClusterQueue c. The shares compared are those of the children of the least common ancestor:
    # a vs c compares cohort "left" with c. left borrows 3 (of 9) so c (within nominal) reclaims.
    objs = [flavor("default"), config(),
            api.Cohort.model_validate({"metadata": {"name": "left"}, "spec": {"parentName": "root"}}),
            cq("a", 3, cohort="left"), cq("b", 3, cohort="left"), cq("c", 3, cohort="root"),
            lq("a"), lq("b"), lq("c"),
            wl("a1", "a", 5, admitted=True), wl("b1", "b", 4, admitted=True), wl("c-in", "c", 3)]
    # inside "left", a (borrows 2: 222) is above b (borrows 1: 111), so a's workload goes.
    out = run(objs)
    assert out["preempted"] == {"default/a1": "InCohortReclamation"}
