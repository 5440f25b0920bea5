"""The Kueue admission benchmark on a tiny shape: its numbers are consistent (no timing asserts)."""

from mlplane.bench import kueue
from mlplane.bench.kueue import Shape, WorkloadClass

# Two cohorts of two ClusterQueues, deep enough that queues wait, borrow and preempt.
TINY = Shape("tiny", 2, 2, (
    WorkloadClass("small", 30, 0.1, 0.2, 50, 1),
    WorkloadClass("medium", 8, 0.5, 0.5, 100, 5),
    WorkloadClass("large", 3, 1.2, 1.0, 200, 20),
))


def test_every_workload_is_admitted_once_with_its_request_and_nothing_over_admitted():
    run = kueue.replay(kueue.build(TINY))
    assert not run.truncated
    assert run.over_admitted == 0
    assert run.wrong_size == 0
    assert run.never_admitted == 0
    assert run.peak_cohort_use <= 1.0
    # every admission is one workload's, and preempted workloads are admitted again
    assert run.admissions == TINY.workloads + run.preemptions
    assert {c: len(v) for c, v in run.time_to_admit.items()} == {"small": 120, "medium": 32, "large": 12}
    assert all(t >= 0 for v in run.time_to_admit.values() for t in v)
    assert 0 <= run.percentile(50) <= run.percentile(99) <= run.virtual_s
    assert run.cycles > 0


def test_baseline_that_rebuilds_the_snapshot_every_cycle_decides_the_same():
    mine = kueue.replay(kueue.build(TINY))
    base = kueue.replay(kueue.build(TINY), rebuild=True)
    assert base.decisions == mine.decisions
    assert base.cycles == mine.cycles


def test_quota_is_contended_so_the_checks_mean_something():
    run = kueue.replay(kueue.build(TINY))
    assert run.preemptions > 0  # large workloads preempt small ones of their ClusterQueue
    assert run.peak_cohort_use == 1.0  # cohorts fill up completely at some point
    assert run.percentile(99) > 0  # some workloads had to wait for quota


def test_report_table_has_one_block_per_shape():
    results = {"tiny": kueue.measure(TINY, baseline_wall_s=5.0)}
    assert results["tiny"]["same_decisions"] is True
    lines = kueue.rows(results)
    assert lines[0].startswith("| tiny (4 CQs, 164 wl): admissions/s in the core | ")
    checks = "over-admitted / wrong size / never admitted | 0 / 0 / 0 | same decisions: yes"
    assert any(checks in line for line in lines)
