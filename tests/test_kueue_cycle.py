"""Kueue scheduling cycles (mlplane/policy/workload/kueue): admission, flavors, partial admission, preemption.

Scenarios are ported from kubernetes-sigs/kueue pkg/scheduler/scheduler_test.go (TestSchedule) and
pkg/scheduler/preemption/preemption_test.go (TestPreemption); each test names the upstream case.
Objects are built as users write them (kueue.x-k8s.io/v1beta2 manifests) and go through the
same adapter as ``mlplane queue schedule``.
"""

import pytest

from mlplane.api import kueue as api
from mlplane.policy.workload.kueue.snapshot import schedule

NOW = "2024-05-01T12:00:00Z"
T0 = 1714564800.0  # NOW as seconds


def flavor(name, labels=None, taints=None):
    spec = {}
    if labels:
        spec["nodeLabels"] = labels
    if taints:
        spec["nodeTaints"] = taints
    return api.ResourceFlavor.model_validate({"metadata": {"name": name}, "spec": spec})


def cq(name, flavors, cohort=None, covered=("cpu",), **spec):
    """flavors: {flavor: {resource: nominal | (nominal, borrowingLimit[, lendingLimit])}}."""
    fq = []
    for fname, res in flavors.items():
        quotas = []
        for r in covered:
            v = res[r]
            v = v if isinstance(v, tuple) else (v,)
            q = {"name": r, "nominalQuota": v[0]}
            if len(v) > 1 and v[1] is not None:
                q["borrowingLimit"] = v[1]
            if len(v) > 2:
                q["lendingLimit"] = v[2]
            quotas.append(q)
        fq.append({"name": fname, "resources": quotas})
    body = {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": list(covered), "flavors": fq}], **spec}
    if cohort:
        body["cohortName"] = cohort
    return api.ClusterQueue.model_validate({"metadata": {"name": name}, "spec": body})


def lq(name, cluster_queue, ns="default"):
    return api.LocalQueue.model_validate({"metadata": {"name": name, "namespace": ns},
                                          "spec": {"clusterQueue": cluster_queue}})


def wl(name, queue, requests, count=1, priority=0, created=NOW, min_count=None, admitted=None, ns="default",
       node_selector=None, tolerations=None, reserved=NOW):
    """admitted: (clusterQueue, {resource: flavor}) for a workload that already holds quota."""
    pod = {"containers": [{"name": "c", "image": "x", "resources": {"requests": dict(requests)}}]}
    if node_selector:
        pod["nodeSelector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    ps = {"name": "main", "count": count, "template": {"spec": pod}}
    if min_count is not None:
        ps["minCount"] = min_count
    body = {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": {"queueName": queue, "priority": priority, "podSets": [ps]}}
    if admitted:
        cluster_queue, flavors = admitted
        usage = {r: str(int(float(q) * count)) for r, q in requests.items()}
        body["status"] = {
            "admission": {"clusterQueue": cluster_queue, "podSetAssignments": [
                {"name": "main", "count": count, "flavors": flavors, "resourceUsage": usage}]},
            "conditions": [{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved",
                            "lastTransitionTime": reserved}]}
    return api.Workload.model_validate(body)


def run(objects, cycles=1):
    return schedule(objects, T0, cycles).to_dict()


def assigned(result, key):
    return {r: f for ps in result["admitted"][key]["podSetAssignments"] for r, f in ps["flavors"].items()}


# --- scheduler_test.go -----------------------------------------------------------------------------

def cohort_pair(alpha_cpu=50, beta_cpu=50):
    return [flavor("on-demand"),
            cq("eng-alpha", {"on-demand": {"cpu": alpha_cpu}}, cohort="eng"),
            cq("eng-beta", {"on-demand": {"cpu": beta_cpu}}, cohort="eng"),
            lq("main-a", "eng-alpha"), lq("main-b", "eng-beta")]


def test_cannot_borrow_if_cohort_was_assigned_and_would_result_in_overadmission():
    # "cannot borrow if cohort was assigned and would result in overadmission": the non-borrowing
    # entry goes first and its usage counts before the borrowing one is checked again.
    out = run(cohort_pair() + [wl("alpha", "main-a", {"cpu": "1"}, count=45),
                               wl("beta", "main-b", {"cpu": "1"}, count=56)])
    assert out["admitted"]["default/alpha"] == {"clusterQueue": "eng-alpha", "podSetAssignments": [
        {"name": "main", "count": 45, "flavors": {"cpu": "on-demand"}, "resourceUsage": {"cpu": "45"}}]}
    assert out["pending"] == {"default/beta": "Workload no longer fits after processing another workload"}


def test_can_borrow_if_cohort_was_assigned_and_will_not_result_in_overadmission():
    # "can borrow if cohort was assigned and will not result in overadmission"
    out = run(cohort_pair() + [wl("alpha", "main-a", {"cpu": "1"}, count=45),
                               wl("beta", "main-b", {"cpu": "1"}, count=55)])
    assert set(out["admitted"]) == {"default/alpha", "default/beta"}
    assert out["admitted"]["default/beta"]["podSetAssignments"][0]["resourceUsage"] == {"cpu": "55"}


def test_hierarchical_cohort_respects_lending_limit_when_borrowing():
    # "hierarchical cohort respects lending limit when borrowing"
    objects = [flavor("on-demand"),
               api.Cohort.model_validate({"metadata": {"name": "root"}}),
               api.Cohort.model_validate({"metadata": {"name": "child"}, "spec": {"parentName": "root"}}),
               cq("cq-lender", {"on-demand": {"cpu": (10, None, 3)}}, cohort="child"),
               cq("cq-borrower", {"on-demand": {"cpu": (5, 10)}}, cohort="child"),
               lq("lq-borrower", "cq-borrower"),
               wl("wl-existing", "lq-borrower", {"cpu": "5"}, admitted=("cq-borrower", {"cpu": "on-demand"})),
               wl("wl-pending", "lq-borrower", {"cpu": "4"})]
    out = run(objects)
    assert out["admitted"] == {}
    assert out["pending"] == {"default/wl-pending": "couldn't assign flavors to pod set main: insufficient unused "
                                                    "quota for cpu in flavor on-demand, 1 more needed"}


def test_borrowing_is_capped_by_borrowing_limit_and_explained_in_numbers():
    objects = [flavor("a100"),
               cq("team", {"a100": {"nvidia.com/gpu": (4, 0)}}, cohort="org", covered=("nvidia.com/gpu",)),
               cq("other", {"a100": {"nvidia.com/gpu": 8}}, cohort="org", covered=("nvidia.com/gpu",)),
               lq("q", "team"),
               wl("big", "q", {"nvidia.com/gpu": "8"})]
    state_out = schedule(objects, T0)
    pending = state_out.pending["default/big"]
    assert pending.reason == "ExceedsMaxQuota"
    assert pending.message == ("couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in "
                               "flavor a100, previously considered podsets requests (0) + current podset request (8) "
                               "> maximum capacity (4)")
    assert pending.details == ("insufficient quota for nvidia.com/gpu in flavor a100: requested 8, available 4 "
                               "(nominal 4, borrowing limit 0)",)


def test_strict_fifo_head_blocks_the_queue_while_best_effort_skips_it():
    # TestSchedule's StrictFIFO/BestEffortFIFO behaviour (cluster_queue.md "queueingStrategy"): over
    # three cycles a BestEffortFIFO queue admits the small workload behind a head that does not fit.
    def objects(strategy):
        return [flavor("default"), cq("q", {"default": {"cpu": 4}}, queueingStrategy=strategy), lq("lq", "q"),
                wl("big", "lq", {"cpu": "6"}, priority=10),
                wl("small", "lq", {"cpu": "1"}, created="2024-05-01T12:00:01Z")]
    strict = run(objects("StrictFIFO"), cycles=3)
    assert strict["admitted"] == {}
    assert strict["pending"]["default/small"] == "waiting in ClusterQueue q: 1 workload(s) ahead in the queue"
    best = run(objects("BestEffortFIFO"), cycles=3)
    assert list(best["admitted"]) == ["default/small"]
    assert "maximum capacity (4)" in best["pending"]["default/big"]


def test_one_head_per_cluster_queue_per_cycle():
    objects = [flavor("default"), cq("q", {"default": {"cpu": 10}}), lq("lq", "q")] + [
        wl(f"w{i}", "lq", {"cpu": "1"}, created=f"2024-05-01T12:00:0{i}Z") for i in range(3)]
    assert list(run(objects, cycles=1)["admitted"]) == ["default/w0"]
    assert sorted(run(objects, cycles=3)["admitted"]) == ["default/w0", "default/w1", "default/w2"]


def test_queue_order_is_priority_then_creation_time():
    objects = [flavor("default"), cq("q", {"default": {"cpu": 10}}), lq("lq", "q"),
               wl("old-low", "lq", {"cpu": "1"}, created="2024-05-01T11:00:00Z"),
               wl("new-high", "lq", {"cpu": "1"}, priority=5, created="2024-05-01T11:30:00Z")]
    assert list(run(objects)["admitted"]) == ["default/new-high"]


def test_partial_admission_finds_the_largest_count_that_fits():
    # "partial admission single variable pod set": 50 pods of 2 cpu, minCount 20, 40 cpu free -> 20.
    objects = [flavor("default"), cq("q", {"default": {"cpu": 40}}), lq("lq", "q"),
               wl("new", "lq", {"cpu": "2"}, count=50, min_count=20)]
    out = run(objects)
    assert out["admitted"]["default/new"]["podSetAssignments"][0]["count"] == 20
    assert out["admitted"]["default/new"]["podSetAssignments"][0]["resourceUsage"] == {"cpu": "40"}


def test_pods_count_as_a_quota_resource():
    objects = [flavor("default"), cq("q", {"default": {"cpu": 100, "pods": 3}}, covered=("cpu", "pods")),
               lq("lq", "q"), wl("new", "lq", {"cpu": "1"}, count=4, min_count=1)]
    ps = run(objects)["admitted"]["default/new"]["podSetAssignments"][0]
    assert ps == {"name": "main", "count": 3, "flavors": {"cpu": "default", "pods": "default"},
                  "resourceUsage": {"cpu": "3", "pods": "3"}}


def test_flavor_fungibility_borrows_in_the_first_flavor_or_tries_the_next():
    # flavorassigner_test.go flavorFungibility cases: whenCanBorrow MayStopSearch keeps the first
    # flavor that fits by borrowing; TryNextFlavor moves on to a flavor that fits without borrowing.
    def objects(when_can_borrow):
        team = cq("team", {"on-demand": {"cpu": 2}, "spot": {"cpu": 4}}, cohort="c",
                  flavorFungibility={"whenCanBorrow": when_can_borrow, "whenCanPreempt": "TryNextFlavor"})
        return [flavor("on-demand"), flavor("spot"), team,
                cq("lender", {"on-demand": {"cpu": 8}, "spot": {"cpu": 0}}, cohort="c"),
                lq("lq", "team"), wl("new", "lq", {"cpu": "3"})]
    assert assigned(run(objects("MayStopSearch")), "default/new") == {"cpu": "on-demand"}
    assert assigned(run(objects("TryNextFlavor")), "default/new") == {"cpu": "spot"}


def test_flavor_taints_and_node_labels_select_flavors():
    objects = [flavor("gpu", labels={"pool": "gpu"}, taints=[{"key": "dedicated", "value": "gpu",
                                                               "effect": "NoSchedule"}]),
               flavor("cpu-pool", labels={"pool": "cpu"}),
               cq("q", {"gpu": {"cpu": 8}, "cpu-pool": {"cpu": 8}}), lq("lq", "q"),
               wl("plain", "lq", {"cpu": "1"}),
               wl("wants-gpu", "lq", {"cpu": "1"}, node_selector={"pool": "gpu"},
                  tolerations=[{"key": "dedicated", "operator": "Exists"}], created="2024-05-01T12:00:01Z"),
               wl("wants-gpu-untolerated", "lq", {"cpu": "1"}, node_selector={"pool": "gpu"},
                  created="2024-05-01T12:00:02Z")]
    out = run(objects, cycles=3)
    assert assigned(out, "default/plain") == {"cpu": "cpu-pool"}
    assert assigned(out, "default/wants-gpu") == {"cpu": "gpu"}
    assert out["pending"]["default/wants-gpu-untolerated"] == (
        "couldn't assign flavors to pod set main: flavor cpu-pool doesn't match node affinity, "
        "untolerated taint {dedicated gpu NoSchedule <nil>} in flavor gpu")


def test_workloads_that_cannot_be_queued_say_why():
    objects = [flavor("default"), cq("q", {"default": {"cpu": 1}}), lq("lq", "q"), lq("dangling", "missing"),
               wl("no-lq", "nope", {"cpu": "1"}), wl("no-cq", "dangling", {"cpu": "1"}),
               wl("other-ns", "lq", {"cpu": "1"}, ns="team-b")]
    out = run(objects)
    assert out["pending"] == {"default/no-cq": "ClusterQueue missing doesn't exist",
                              "default/no-lq": "LocalQueue nope doesn't exist",
                              "team-b/other-ns": "LocalQueue lq doesn't exist"}


def test_cluster_queue_under_a_cohort_cycle_is_inactive():
    objects = [flavor("default"),
               api.Cohort.model_validate({"metadata": {"name": "x"}, "spec": {"parentName": "y"}}),
               api.Cohort.model_validate({"metadata": {"name": "y"}, "spec": {"parentName": "x"}}),
               cq("q", {"default": {"cpu": 4}}, cohort="x"), lq("lq", "q"), wl("w", "lq", {"cpu": "1"})]
    out = run(objects)
    assert out["pending"] == {"default/w": "ClusterQueue q is inactive: cohort x is in a cycle of parentName "
                                           "references"}


# --- preemption_test.go (defaultClusterQueues) ----------------------------------------------------------

def preemption_queues():
    """TestPreemption's defaultClusterQueues (names with "_" upstream use "-": ours must be DNS names)."""
    within = {"withinClusterQueue": "LowerPriority"}
    return [flavor("default"),
            cq("standalone", {"default": {"cpu": 6}}, preemption=within),
            cq("c1", {"default": {"cpu": (6, 6)}}, cohort="cohort",
               preemption={"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "LowerPriority"}),
            cq("c2", {"default": {"cpu": (6, 6)}}, cohort="cohort",
               preemption={"withinClusterQueue": "Never", "reclaimWithinCohort": "Any"}),
            cq("a-standard", {"default": {"cpu": (1, 12)}}, cohort="with-shared-cq",
               preemption={"withinClusterQueue": "Never", "reclaimWithinCohort": "LowerPriority",
                           "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": 0}}),
            cq("b-standard", {"default": {"cpu": (1, 12)}}, cohort="with-shared-cq",
               preemption={"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "Any",
                           "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": 0}}),
            cq("a-best-effort", {"default": {"cpu": (1, 12)}}, cohort="with-shared-cq",
               preemption={"withinClusterQueue": "Never", "reclaimWithinCohort": "LowerPriority",
                           "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": 0}}),
            cq("b-best-effort", {"default": {"cpu": (0, 13)}}, cohort="with-shared-cq",
               preemption={"withinClusterQueue": "Never", "reclaimWithinCohort": "LowerPriority",
                           "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": 0}}),
            cq("shared", {"default": {"cpu": 10}}, cohort="with-shared-cq")] + [
        lq(f"lq-{name}", name) for name in ("standalone", "c1", "c2", "a-standard", "b-standard", "a-best-effort",
                                            "b-best-effort")]


def admitted(name, cluster_queue, cpu, priority=0, reserved=NOW):
    return wl(name, f"lq-{cluster_queue}", {"cpu": str(cpu)}, priority=priority, reserved=reserved,
              admitted=(cluster_queue, {"cpu": "default"}))


def test_preempt_lowest_priority():
    # "preempt lowest priority": only the lowest-priority workload goes.
    objects = preemption_queues() + [admitted("low", "standalone", 2, -1), admitted("mid", "standalone", 2),
                                     admitted("high", "standalone", 2, 1),
                                     wl("in", "lq-standalone", {"cpu": "2"}, priority=1)]
    out = run(objects)
    assert out["preempted"] == {"default/low": "InClusterQueue"}
    assert out["pending"] == {"default/in": "couldn't assign flavors to pod set main: insufficient unused quota for "
                                            "cpu in flavor default, 2 more needed. Pending the preemption of 1 "
                                            "workload(s)"}
    # Next cycle the victim is gone and the preemptor gets its quota.
    assert "default/in" in run(objects, cycles=2)["admitted"]


def test_preempt_multiple():
    # "preempt multiple": 3 cpu needs both lower-priority workloads.
    objects = preemption_queues() + [admitted("low", "standalone", 2, -1), admitted("mid", "standalone", 2),
                                     admitted("high", "standalone", 2, 1),
                                     wl("in", "lq-standalone", {"cpu": "3"}, priority=1)]
    assert run(objects)["preempted"] == {"default/low": "InClusterQueue", "default/mid": "InClusterQueue"}


def test_minimal_victim_set_adds_back_what_is_not_needed():
    # The heuristic removes the most recently admitted first, then adds back what is not needed.
    objects = preemption_queues() + [
        admitted("older", "standalone", 4, reserved="2024-05-01T10:00:00Z"),
        admitted("newer", "standalone", 1, reserved="2024-05-01T11:00:00Z"),
        admitted("high", "standalone", 1, 5),
        wl("in", "lq-standalone", {"cpu": "4"}, priority=1)]
    assert run(objects)["preempted"] == {"default/older": "InClusterQueue"}


def test_reclaim_quota_from_borrower():
    # "reclaim quota from borrower": c1 is within nominal, so it reclaims from c2 (borrowing)
    # rather than preempting its own lower-priority workload.
    objects = preemption_queues() + [admitted("c1-low", "c1", 3, -1), admitted("c2-mid", "c2", 3),
                                     admitted("c2-high", "c2", 6, 1),
                                     wl("in", "lq-c1", {"cpu": "3"}, priority=1)]
    assert run(objects)["preempted"] == {"default/c2-mid": "InCohortReclamation"}


def test_equal_priority_borrower_is_not_reclaimed_under_lower_priority_policy():
    # c1's reclaimWithinCohort is LowerPriority, so c2's borrowing workload of equal priority is not
    # a candidate; c1 preempts its own lower-priority workload instead.
    objects = preemption_queues() + [admitted("c1-low", "c1", 3, -1), admitted("c2-high", "c2", 9, 1),
                                     wl("in", "lq-c1", {"cpu": "3"}, priority=1)]
    assert run(objects)["preempted"] == {"default/c1-low": "InClusterQueue"}


def test_borrow_within_cohort_preempts_lower_priority_while_borrowing():
    # "use BorrowWithinCohort; allow preempting a lower-priority workload from another ClusterQueue
    # while borrowing"
    objects = preemption_queues() + [admitted("a-best-effort-low", "a-best-effort", 10, -1),
                                     admitted("b-best-effort-low", "b-best-effort", 1, -1),
                                     wl("in", "lq-a-standard", {"cpu": "10"})]
    assert run(objects)["preempted"] == {"default/a-best-effort-low": "InCohortReclaimWhileBorrowing"}


def test_borrow_within_cohort_respects_max_priority_threshold():
    # "use BorrowWithinCohort; don't allow preempting a lower-priority workload with priority above
    # MaxPriorityThreshold, if borrowing is required even after the preemption"
    objects = preemption_queues() + [admitted("b-standard", "b-standard", 10, 1),
                                     wl("in", "lq-a-standard", {"cpu": "10"}, priority=2)]
    out = run(objects)
    assert out["preempted"] == {}
    assert out["pending"]["default/in"] == ("couldn't assign flavors to pod set main: insufficient unused quota "
                                            "for cpu in flavor default, 7 more needed")


def test_quota_freed_by_preemption_is_not_reused_in_the_same_cycle():
    # c1 reclaims from c2's borrower; c2-more fitted at nomination (2 cpu free in the cohort) but
    # the preemptor's usage now counts and the victim's quota is not released before the cycle
    # ends, so c2-more waits for the next cycle.
    objects = preemption_queues() + [admitted("c2-borrower", "c2", 10),
                                     wl("c1-in", "lq-c1", {"cpu": "6"}, priority=1),
                                     wl("c2-more", "lq-c2", {"cpu": "1"})]
    out = run(objects)
    assert out["preempted"] == {"default/c2-borrower": "InCohortReclamation"}
    assert out["admitted"] == {}
    assert out["pending"]["default/c2-more"] == "Workload no longer fits after processing another workload"
    assert "Pending the preemption of 1 workload(s)" in out["pending"]["default/c1-in"]
    # Cycle 2 admits c1-in; the requeued victim (lower UID) heads c2's queue in cycles 2 and 3
    # (fitting at nomination, then not after c1-in; then set aside); cycle 4 admits c2-more.
    assert run(objects, cycles=3)["pending"]["default/c2-more"] == (
        "Workload no longer fits after processing another workload")
    later = run(objects, cycles=4)
    assert sorted(later["admitted"]) == ["default/c1-in", "default/c2-more"]
    assert later["preempted"] == {"default/c2-borrower": "InCohortReclamation"}


def _incremental():
    """Two BestEffortFIFO ClusterQueues of 2 CPUs in one cohort, driven through Scheduler's API."""
    from mlplane.policy.workload.kueue.cycle import Scheduler
    from mlplane.policy.workload.kueue.model import ClusterQueue, Flavor, PodSet, ResourceGroup, Workload
    from mlplane.policy.workload.kueue.quota import Quota
    from mlplane.policy.workload.kueue.state import State

    fr = ("default", "cpu")
    queues = [ClusterQueue(name=n, cohort="ab", resource_groups=(ResourceGroup(("cpu",), ("default",)),),
                           quotas={fr: Quota(2000)}) for n in ("a", "b")]
    sched = Scheduler(State(queues, {"default": Flavor("default")}), (), T0)

    def make(name, queue, cpus, at):
        return Workload(key=f"default/{name}", uid=name, cluster_queue=queue, priority=0, timestamp=at,
                        pod_sets=(PodSet("main", 1, {"cpu": cpus * 1000}),))
    return sched, make


def test_incremental_scheduler_admits_releases_and_reoffers_set_aside_workloads():
    sched, make = _incremental()
    assert sched.add(make("big", "a", 4, T0)) is None
    assert sched.add(make("next", "b", 1, T0 + 1)) is None
    first = sched.cycle()
    # "next" is not borrowing, so it goes first; then "big" (4 of the cohort's 4) no longer fits
    assert first.heads == 2 and list(first.admitted) == ["default/next"] and first.preempted == {}
    small = first.admitted["default/next"]
    assert small.reserved_at == T0 and small.usage == {("default", "cpu"): 1000}
    assert sched.cycle().heads == 1  # "big" is tried again, does not fit and is set aside
    assert sched.cycle().heads == 0  # ... and not retried while nothing changes
    sched.advance(T0 + 10)
    sched.finish(small)  # releases its CPU and offers "big" again
    again = sched.cycle()
    assert list(again.admitted) == ["default/big"] and again.admitted["default/big"].reserved_at == T0 + 10

def test_incremental_scheduler_rejects_bad_calls_with_clear_errors():
    sched, make = _incremental()
    why = sched.add(make("lost", "missing", 1, T0))
    assert why is not None and why.message == "ClusterQueue missing doesn't exist"
    with pytest.raises(KeyError, match="default/ghost is not admitted in ClusterQueue a"):
        sched.finish(make("ghost", "a", 1, T0))
    with pytest.raises(ValueError, match="before the current time"):
        sched.advance(T0 - 1)


def test_the_result_says_which_heads_a_best_effort_queue_set_aside_and_keeps_positions_out_of_messages():
    def objects(strategy):
        return [flavor("default"), cq("q", {"default": {"cpu": 4}}, queueingStrategy=strategy), lq("lq", "q"),
                wl("big", "lq", {"cpu": "6"}, priority=10),
                wl("small", "lq", {"cpu": "1"}, created="2024-05-01T12:00:01Z"),
                wl("later", "lq", {"cpu": "1"}, created="2024-05-01T12:00:02Z")]
    assert schedule(objects("BestEffortFIFO"), T0).set_aside == {"default/big"}
    strict = schedule(objects("StrictFIFO"), T0)
    assert strict.set_aside == set()
    assert [(strict.pending[k].message, strict.pending[k].ahead) for k in ("default/small", "default/later")] == [
        ("waiting in ClusterQueue q", 1), ("waiting in ClusterQueue q", 2)]
