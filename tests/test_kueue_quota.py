"""Kueue's quota tree (mlplane/policy/workload/kueue/quota.py): borrowing, lending and hierarchical cohorts.

Figures come from Kueue's docs (site/content/en/docs/concepts/cluster_queue.md, "Borrowing limit"
and "Lending limit") and the tree arithmetic of pkg/cache/scheduler/resource_node.go.
"""

import pytest

from mlplane.policy.workload.kueue.quota import Quota, QuotaError, QuotaTree, lowest_fitting_subtree
from mlplane.policy.workload.kueue.units import format_quantity

CPU = ("default", "cpu")


def tree(queues, cohorts=()):
    """queues: (name, cohort, nominal, borrowingLimit, lendingLimit) in whole CPUs."""
    t = QuotaTree()
    for name, parent, nominal in cohorts:
        t.add_cohort(name, parent, {CPU: Quota(nominal * 1000)} if nominal else {})
    for name, cohort, nominal, bl, ll in queues:
        t.add_queue(name, cohort, {CPU: Quota(nominal * 1000, None if bl is None else bl * 1000,
                                              None if ll is None else ll * 1000)})
    t.build()
    return t


def avail(t, cq):
    return t.queues[cq].available(CPU) // 1000


def test_borrowing_without_limits_takes_the_whole_cohort():
    # cluster_queue.md: team-a (9) and team-b (12) in one cohort; team-a may use 21 while team-b is idle.
    t = tree([("a", "ab", 9, None, None), ("b", "ab", 12, None, None)])
    assert avail(t, "a") == 21
    assert t.queues["a"].potential_available(CPU) == 21_000


def test_borrowing_limit_caps_what_a_queue_takes_from_the_cohort():
    # cluster_queue.md: borrowingLimit 1 on team-a -> at most 10.
    t = tree([("a", "ab", 9, 1, None), ("b", "ab", 12, None, None)])
    assert avail(t, "a") == 10
    t.queues["a"].add_usage(CPU, 9_000)
    assert avail(t, "a") == 1
    assert not t.queues["a"].borrowing(CPU)
    t.queues["a"].add_usage(CPU, 1_000)
    assert t.queues["a"].borrowing(CPU)
    assert avail(t, "a") == 0


def test_lending_limit_keeps_quota_private():
    # cluster_queue.md: lendingLimit 1 on team-b -> team-b keeps 11 to itself, team-a gets at most 10.
    t = tree([("a", "ab", 9, None, None), ("b", "ab", 12, None, 1)])
    assert t.cohorts["ab"].subtree[CPU] == 10_000
    assert avail(t, "a") == 10
    assert avail(t, "b") == 21


def test_usage_spills_to_the_cohort_only_above_local_quota():
    t = tree([("a", "ab", 9, None, None), ("b", "ab", 12, None, 1)])
    b = t.queues["b"]
    b.add_usage(CPU, 11_000)  # all inside b's private 11
    assert t.cohorts["ab"].usage.get(CPU, 0) == 0
    assert avail(t, "a") == 10
    b.add_usage(CPU, 3_000)  # 2 above the private part: 1 lent by b, 1 of a's
    assert t.cohorts["ab"].usage[CPU] == 3_000
    assert avail(t, "a") == 7
    b.remove_usage(CPU, 3_000)
    assert t.cohorts["ab"].usage[CPU] == 0
    assert b.usage[CPU] == 11_000


def test_hierarchical_cohort_respects_lending_limit():
    # scheduler_test.go "hierarchical cohort respects lending limit when borrowing": lender(10, lendingLimit 3)
    # and borrower(5, borrowingLimit 10, using 5) under CHILD under ROOT: only 3 more for the borrower.
    t = tree([("lender", "child", 10, None, 3), ("borrower", "child", 5, 10, None)],
             cohorts=[("root", None, 0), ("child", "root", 0)])
    t.queues["borrower"].add_usage(CPU, 5_000)
    assert t.cohorts["child"].subtree[CPU] == 8_000
    assert t.cohorts["root"].subtree[CPU] == 8_000
    assert avail(t, "borrower") == 3
    assert avail(t, "lender") == 10  # its 7 private + the 3 it lends, all unused
    assert t.queues["borrower"].potential_available(CPU) == 8_000


def test_cohort_quota_is_shared_by_its_subtree_and_limited_by_its_lending_limit():
    t = QuotaTree()
    t.add_cohort("root")
    t.add_cohort("org", "root", {CPU: Quota(12_000, lending_limit=4_000)})
    t.add_queue("team", "org", {CPU: Quota(2_000)})
    t.add_queue("other", "root", {CPU: Quota(0)})
    t.build()
    assert t.queues["team"].available(CPU) == 14_000
    assert t.queues["other"].available(CPU) == 4_000  # only what org lends
    t.queues["team"].add_usage(CPU, 13_000)  # 10 stay in org's private part, 3 spill to root
    assert t.cohorts["root"].usage[CPU] == 3_000
    assert t.queues["other"].available(CPU) == 1_000


def test_lowest_fitting_subtree_is_the_borrowing_level():
    t = tree([("a", "child", 2, None, None), ("b", "child", 2, None, None), ("c", "root", 4, None, None)],
             cohorts=[("root", None, 0), ("child", "root", 0)])
    a = t.queues["a"]
    assert lowest_fitting_subtree(a, CPU, 2_000) == (0, True)    # within its own nominal
    assert lowest_fitting_subtree(a, CPU, 4_000) == (1, True)    # fits in CHILD, which has a parent
    assert lowest_fitting_subtree(a, CPU, 6_000) == (2, False)   # needs ROOT


def test_cycle_in_cohort_parents_is_detected():
    t = QuotaTree()
    t.add_cohort("x", "y")
    t.add_cohort("y", "x")
    t.add_cohort("z", "x")
    t.add_queue("q", "z", {CPU: Quota(1_000)})
    t.add_queue("ok", "w", {CPU: Quota(1_000)})
    t.build()
    assert t.cyclic == {"x", "y", "z"}
    assert t.in_cycle(t.queues["q"]) == "z"
    assert t.in_cycle(t.queues["ok"]) is None


@pytest.mark.parametrize("quota, has_cohort, message", [
    (Quota(-1), True, "nominalQuota must be non-negative"),
    (Quota(1_000, borrowing_limit=1_000), False, "borrowingLimit must be nil when cohort is empty"),
])
def test_bad_quotas_are_rejected_with_the_field(quota, has_cohort, message):
    t = QuotaTree()
    with pytest.raises(QuotaError, match=message):
        t.add_queue("q", "c" if has_cohort else None, {CPU: quota})


@pytest.mark.parametrize("resource, amount, text", [
    ("cpu", 3_000, "3"), ("cpu", 1_500, "1500m"), ("memory", 600 * 2**20 * 1000, "600Mi"),
    ("memory", 1_000_000, "1k"), ("nvidia.com/gpu", 8_000, "8"), ("cpu", 45_000, "45"), ("pods", 0, "0"),
])
def test_quantities_are_written_as_kubernetes_canonicalises_them(resource, amount, text):
    assert format_quantity(resource, amount) == text


def test_cohort_tracks_which_children_are_above_their_quota():
    # Preemption visits only these children; the set follows usage as it crosses the quota.
    t = tree([("a", "left", 2, None, None), ("b", "left", 2, None, None), ("c", "root", 2, None, None)],
             cohorts=[("left", "root", 0), ("root", None, 0)])
    root, left, a, b = t.cohorts["root"], t.cohorts["left"], t.queues["a"], t.queues["b"]
    assert root.children_over_quota() == [] and a.within_nominal({CPU})
    a.add_usage(CPU, 3000)  # a borrows 1 from b inside "left": left itself is still within 4
    assert left.children_over_quota() == [a] and root.children_over_quota() == []
    assert not a.within_nominal({CPU}) and a.within_nominal({("other", "cpu")})
    b.add_usage(CPU, 2000)  # left now uses 5 of its 4: it borrows from c
    assert root.children_over_quota() == [left] and left.children_over_quota() == [a]
    t.queues["c"].add_usage(CPU, 1000)
    b.add_usage(CPU, 1000)
    assert left.children_over_quota() == [a, b]
    a.remove_usage(CPU, 3000)
    b.remove_usage(CPU, 1000)
    assert left.children_over_quota() == [] and root.children_over_quota() == []
    assert left.within_nominal({CPU})


def test_rebuilding_the_tree_recomputes_the_over_quota_children():
    t = tree([("a", "ab", 1, None, None), ("b", "ab", 1, None, None)])
    t.queues["b"].add_usage(CPU, 2000)
    t.build()  # usage survives a rebuild (cohort usage is summed again from the queues)
    assert t.cohorts["ab"].children_over_quota() == [t.queues["b"]]
    assert t.cohorts["ab"].usage[CPU] == 2000 and t.cohorts["ab"].within_nominal({CPU})
