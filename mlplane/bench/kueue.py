"""Kueue admission benchmark, in process, in the shape of Kueue's scheduler performance tests.

    python -m mlplane.bench.kueue [--quick]

Kueue's test/performance/scheduler runner (configs/baseline and configs/large-scale
generator.yaml) creates Workloads over time in every ClusterQueue, marks each one Finished
``runtimeMs`` after it is admitted, and measures time-to-admission. This benchmark replays the
same shapes around mlplane's admission core (``mlplane.policy.workload.kueue``) as a
discrete-event loop in virtual time:

1. at each instant, finished workloads leave the snapshot (``Scheduler.finish``, which also
   offers the set-aside (inadmissible) workloads of their cohort again, as Kueue's queue
   manager does when quota is freed); arrivals join their ClusterQueue's queue
   (``Scheduler.add``);
2. scheduling cycles run (``Scheduler.cycle``, taking no virtual time) until no ClusterQueue
   has a head to offer;
3. virtual time jumps to the next arrival or finish (``Scheduler.advance``).

Reported per shape: admissions per second of wall time spent in the core, p50/p99
time-to-admit in virtual time (arrival to the admission the workload ran under), the number of
cycles, and consistency checks kept by a ledger independent of the core (every admission got
the quota it asked for, no ClusterQueue or cohort over its quota). The baseline runs the same
loop with the same core but rebuilds the snapshot before every cycle, as Kueue's scheduler
takes a snapshot of its cache each cycle (pkg/scheduler/scheduler.go, cache.Snapshot); its
decisions must be the same. Kueue's own published end-to-end figures are quoted as a row of
their own, labelled published, not measured here.
"""

from __future__ import annotations

import heapq
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from mlplane.bench import print_report
from mlplane.policy.workload.kueue.cycle import Scheduler
from mlplane.policy.workload.kueue.model import (ANY, BEST_EFFORT_FIFO, LOWER_PRIORITY, ClusterQueue, Flavor,
                                                 PodSet, Preemption, ResourceGroup, Workload)
from mlplane.policy.workload.kueue.quota import Quota
from mlplane.policy.workload.kueue.state import State

FLAVOR = "default"
RESOURCE = "cpu"
FR = (FLAVOR, RESOURCE)
GOAL_ADMISSIONS_PER_S = 1_000  # on the 1,000-queue shape (issue #4)

# Kueue's published minimalkueue results (test/performance/scheduler, see
# shared/reference/workload.md section 2.1): workloads / wall time, end to end, capacity-bound.
PUBLISHED_KUEUE = {"baseline": ("15,000 wl in 351 s", 43), "large-scale": ("50,000 wl in 1,179 s", 42)}


@dataclass(frozen=True)
class WorkloadClass:
    """One workloadsSet of Kueue's generator.yaml: ``count`` per ClusterQueue."""

    name: str
    count: int
    interval: float  # seconds between creations, per ClusterQueue
    runtime: float  # seconds from admission to Finished
    priority: int
    request: int  # cpu cores


@dataclass(frozen=True)
class Shape:
    name: str
    cohorts: int
    queues_per_cohort: int
    classes: tuple[WorkloadClass, ...]
    nominal: int = 20
    borrowing_limit: int = 100

    @property
    def queues(self) -> int:
        return self.cohorts * self.queues_per_cohort

    @property
    def workloads(self) -> int:
        return self.queues * sum(c.count for c in self.classes)

    def scaled(self, factor: int) -> Shape:
        """The same topology with ``factor`` times fewer workloads per ClusterQueue."""
        classes = tuple(WorkloadClass(c.name, max(1, c.count // factor), c.interval, c.runtime, c.priority, c.request)
                        for c in self.classes)
        return Shape(self.name, self.cohorts, self.queues_per_cohort, classes, self.nominal, self.borrowing_limit)


# configs/baseline/generator.yaml: 5 cohorts x 6 ClusterQueues, 500 workloads per ClusterQueue.
BASELINE = Shape("baseline", 5, 6, (
    WorkloadClass("small", 350, 0.100, 0.200, 50, 1),
    WorkloadClass("medium", 100, 0.500, 0.500, 100, 5),
    WorkloadClass("large", 50, 1.200, 1.000, 200, 20),
))
# configs/large-scale/generator.yaml: 10 cohorts x 100 ClusterQueues, 50 workloads per ClusterQueue.
LARGE_SCALE = Shape("large-scale", 10, 100, (
    WorkloadClass("small", 35, 0.060, 0.150, 50, 1),
    WorkloadClass("medium", 11, 0.300, 0.350, 100, 5),
    WorkloadClass("large", 4, 0.700, 0.700, 200, 20),
))


@dataclass
class Cluster:
    """The ClusterQueues, cohorts and workloads of one shape, as the admission core's plain data."""

    shape: Shape
    queues: list[ClusterQueue]
    cohort_of: dict[str, str]
    arrivals: list[tuple[float, str, Workload]]  # (time, key, workload), in time order
    klass: dict[str, WorkloadClass]  # workload key -> its class
    queue_of: dict[str, str]  # workload key -> its ClusterQueue
    flavors: dict[str, Flavor]

    def state(self) -> State:
        return State(self.queues, self.flavors)


def build(shape: Shape) -> Cluster:
    queues, cohort_of, arrivals, klass, queue_of = [], {}, [], {}, {}
    milli = 1000
    for c in range(shape.cohorts):
        cohort = f"cohort-{c}"
        for q in range(shape.queues_per_cohort):
            name = f"cq-{c}-{q}"
            cohort_of[name] = cohort
            queues.append(ClusterQueue(
                name=name, cohort=cohort,
                resource_groups=(ResourceGroup((RESOURCE,), (FLAVOR,)),),
                quotas={FR: Quota(shape.nominal * milli, shape.borrowing_limit * milli)},
                queueing_strategy=BEST_EFFORT_FIFO,
                preemption=Preemption(within_cluster_queue=LOWER_PRIORITY, reclaim_within_cohort=ANY)))
            for wc in shape.classes:
                for i in range(wc.count):
                    at = round(i * wc.interval, 6)
                    key = f"bench/{name}-{wc.name}-{i:05d}"
                    wl = Workload(key=key, uid=key, cluster_queue=name, priority=wc.priority, timestamp=at,
                                  pod_sets=(PodSet("main", 1, {RESOURCE: wc.request * milli}),))
                    arrivals.append((at, key, wl))
                    klass[key] = wc
                    queue_of[key] = name
    arrivals.sort(key=lambda a: (a[0], a[1]))
    return Cluster(shape, queues, cohort_of, arrivals, klass, queue_of, {FLAVOR: Flavor(FLAVOR)})


class Ledger:
    """Quota in use per ClusterQueue and cohort, kept from admission records alone (not from the
    core's tree), to check that the core never over-admits."""

    def __init__(self, cluster: Cluster):
        self.shape = cluster.shape
        self.cohort_of = cluster.cohort_of
        self.queue_used: dict[str, int] = {q.name: 0 for q in cluster.queues}
        self.cohort_used: dict[str, int] = dict.fromkeys(cluster.cohort_of.values(), 0)
        self.violations = 0
        self.peak_cohort_use = 0.0

    def add(self, cq: str, amount: int) -> None:
        self.queue_used[cq] += amount
        self.cohort_used[self.cohort_of[cq]] += amount

    def check(self, cqs: set[str]) -> None:
        """ClusterQueue usage within nominal + borrowingLimit; cohort usage within its quota."""
        s = self.shape
        queue_max = (s.nominal + s.borrowing_limit) * 1000
        cohort_max = s.nominal * s.queues_per_cohort * 1000
        for cq in cqs:
            cohort = self.cohort_used[self.cohort_of[cq]]
            if self.queue_used[cq] > queue_max or cohort > cohort_max:
                self.violations += 1
            self.peak_cohort_use = max(self.peak_cohort_use, cohort / cohort_max)


@dataclass
class Run:
    """What one replay measured."""

    admissions: int = 0
    preemptions: int = 0
    cycles: int = 0
    core_s: float = 0.0
    wall_s: float = 0.0
    virtual_s: float = 0.0
    wrong_size: int = 0  # admissions whose usage is not exactly the workload's request
    over_admitted: int = 0  # ledger checks that found a ClusterQueue or cohort over its quota
    never_admitted: int = 0
    peak_cohort_use: float = 0.0
    time_to_admit: dict[str, list[float]] | None = None  # class -> seconds, one per workload
    decisions: list[tuple[float, str]] | None = None  # (virtual time, key) of every admission
    truncated: bool = False  # stopped at the wall-time cap before every workload finished
    progress: list[tuple[int, float]] | None = None  # (admissions, core seconds) after each cycle

    def rate_over_first(self, admissions: int) -> float:
        """Admissions per core second over the cycles that made the first ``admissions``."""
        for done, core_s in self.progress or ():
            if done >= admissions:
                return done / core_s if core_s else 0.0
        return self.admissions_per_s

    @property
    def admissions_per_s(self) -> float:
        return self.admissions / self.core_s if self.core_s else 0.0

    def percentile(self, p: float) -> float:
        values = sorted(v for vs in (self.time_to_admit or {}).values() for v in vs)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(p / 100 * len(values)))]


def replay(cluster: Cluster, *, rebuild: bool = False, max_wall_s: float | None = None,
           max_cycles_per_instant: int = 100_000) -> Run:
    """Drive the admission core through the shape's arrivals and finishes in virtual time.

    ``rebuild``: rebuild the snapshot before every cycle (the baseline). ``max_wall_s``: stop
    early (``Run.truncated``) once this much wall time has passed."""
    run = Run(time_to_admit={c.name: [] for c in cluster.shape.classes}, decisions=[], progress=[])
    ledger = Ledger(cluster)
    state = cluster.state()
    sched = Scheduler(state, (), 0.0)
    running: dict[str, Workload] = {}  # key -> the admitted workload
    arrived_at: dict[str, float] = {}
    finishes: list[tuple[float, str, int]] = []  # (time, key, generation)
    generation: dict[str, int] = {}  # bumped on preemption, so a stale finish is ignored
    arrivals, next_arrival = cluster.arrivals, 0
    core = 0.0
    started = time.perf_counter()
    now = 0.0
    clock = time.perf_counter

    def timed(fn: Callable[[], object]) -> object:
        nonlocal core
        t0 = clock()
        value = fn()
        core += clock() - t0
        return value

    while True:
        # 1. finishes and arrivals due now
        released: list[Workload] = []
        while finishes and finishes[0][0] <= now:
            _, key, gen = heapq.heappop(finishes)
            if generation.get(key) != gen:
                continue
            released.append(running.pop(key))
        due: list[Workload] = []
        while next_arrival < len(arrivals) and arrivals[next_arrival][0] <= now:
            _, key, wl = arrivals[next_arrival]
            arrived_at[key] = now
            due.append(wl)
            next_arrival += 1

        def apply_events() -> None:
            sched.advance(now)
            for wl in released:
                sched.finish(wl)
            for wl in due:
                if sched.add(wl) is not None:
                    raise AssertionError(f"{wl.key} could not be queued")

        timed(apply_events)
        for wl in released:
            ledger.add(wl.cluster_queue, -wl.usage[FR])
            generation.pop(wl.key)

        # 2. cycles until no ClusterQueue offers a head
        for _ in range(max_cycles_per_instant):
            if rebuild:
                timed(lambda: _rebuild(sched, cluster))
            done = timed(sched.cycle)
            if not done.heads:
                break
            run.cycles += 1
            touched: set[str] = set()
            for key, wl in done.admitted.items():
                cq = wl.cluster_queue
                running[key] = wl
                request = cluster.klass[key].request * 1000
                if wl.usage != {FR: request}:
                    run.wrong_size += 1
                ledger.add(cq, wl.usage.get(FR, 0))
                touched.add(cq)
                gen = generation[key] = generation.get(key, 0) + 1
                heapq.heappush(finishes, (round(now + cluster.klass[key].runtime, 6), key, gen))
                run.admissions += 1
                run.decisions.append((now, key))
            ledger.check(touched)
            for key in done.preempted:
                wl_class = cluster.klass[key]
                ledger.add(cluster.queue_of[key], -wl_class.request * 1000)
                del running[key]
                generation[key] += 1  # its pending finish no longer counts
                run.preemptions += 1
            run.progress.append((run.admissions, core))
        if max_wall_s is not None and time.perf_counter() - started > max_wall_s:
            run.truncated = True
            break
        # 3. the next event
        upcoming = [t for t in ((arrivals[next_arrival][0] if next_arrival < len(arrivals) else None),
                                (finishes[0][0] if finishes else None)) if t is not None]
        if not upcoming:
            break
        now = min(upcoming)

    run.core_s = core
    run.wall_s = time.perf_counter() - started
    run.virtual_s = now
    # time-to-admit: arrival to the last admission (the one the workload ran under)
    last_admit: dict[str, float] = {}
    for t, key in run.decisions:
        last_admit[key] = t
    for key, t in last_admit.items():
        run.time_to_admit[cluster.klass[key].name].append(t - arrived_at[key])
    run.never_admitted = len(arrived_at) - len(last_admit) if not run.truncated else 0
    run.over_admitted = ledger.violations
    run.peak_cohort_use = ledger.peak_cohort_use
    return run


def _rebuild(sched: Scheduler, cluster: Cluster) -> None:
    """The baseline's per-cycle snapshot: a fresh quota tree holding every admitted workload,
    swapped in as the scheduler's ``state``."""
    running = [wl for per_queue in sched.state.admitted.values() for wl in per_queue.values()]
    state = cluster.state()
    for wl in running:
        state.add_workload(wl)
    sched.state = state


def measure(shape: Shape, baseline_wall_s: float) -> dict:
    cluster = build(shape)
    mine = replay(cluster)
    base = replay(build(shape), rebuild=True, max_wall_s=baseline_wall_s)
    same = base.decisions == mine.decisions[:len(base.decisions)]
    return {"shape": shape.name, "queues": shape.queues, "workloads": shape.workloads,
            "mlplane": _summary(mine), "baseline": _summary(base), "same_decisions": same,
            "mlplane_admissions_per_s_over_baseline_prefix": mine.rate_over_first(base.admissions),
            "published_kueue": PUBLISHED_KUEUE.get(shape.name)}


def _summary(run: Run) -> dict:
    return {"admissions": run.admissions, "admissions_per_s": run.admissions_per_s, "core_s": run.core_s,
            "wall_s": run.wall_s, "cycles": run.cycles, "preemptions": run.preemptions,
            "virtual_s": run.virtual_s, "p50_time_to_admit_s": run.percentile(50),
            "p99_time_to_admit_s": run.percentile(99),
            "mean_time_to_admit_s": {c: statistics.fmean(v) if v else 0.0 for c, v in run.time_to_admit.items()},
            "wrong_size": run.wrong_size, "over_admitted": run.over_admitted,
            "never_admitted": run.never_admitted, "peak_cohort_use": run.peak_cohort_use,
            "truncated": run.truncated}


def run(quick: bool = False) -> dict:
    """Both shapes (``quick``: 10 times fewer workloads per ClusterQueue); a dict per shape."""
    factor = 10 if quick else 1
    cap = 2.0 if quick else 5.0
    return {s.name: measure(s.scaled(factor), cap) for s in (BASELINE, LARGE_SCALE)}


def rows(results: dict) -> list[str]:
    out = []
    for name, r in results.items():
        m, b = r["mlplane"], r["baseline"]
        goal = f">= {GOAL_ADMISSIONS_PER_S:,}" if r["queues"] >= 1000 else ""
        label = f"{name} ({r['queues']:,} CQs, {r['workloads']:,} wl)"
        partial = f" (first {b['admissions']:,} admissions)" if b["truncated"] else ""
        out.append(f"| {label}: admissions/s in the core | {m['admissions_per_s']:,.0f} | "
                   f"{b['admissions_per_s']:,.0f}{partial} | {goal} |")
        if b["truncated"]:
            out.append(f"| {label}: admissions/s over the baseline's first {b['admissions']:,} admissions | "
                       f"{r['mlplane_admissions_per_s_over_baseline_prefix']:,.0f} | "
                       f"{b['admissions_per_s']:,.0f} | |")
        pub = r["published_kueue"]
        if pub:
            out.append(f"| {label}: Kueue end to end, wl/s (published, not measured) | | ~{pub[1]} ({pub[0]}) | |")
        out.append(f"| {label}: time-to-admit p50 / p99 (virtual s) | {m['p50_time_to_admit_s']:.2f} / "
                   f"{m['p99_time_to_admit_s']:.2f} | {b['p50_time_to_admit_s']:.2f} / "
                   f"{b['p99_time_to_admit_s']:.2f}{partial} | |")
        out.append(f"| {label}: cycles / admissions / preemptions | {m['cycles']:,} / {m['admissions']:,} / "
                   f"{m['preemptions']:,} | {b['cycles']:,} / {b['admissions']:,} / {b['preemptions']:,} | |")
        out.append(f"| {label}: over-admitted / wrong size / never admitted | {m['over_admitted']} / "
                   f"{m['wrong_size']} / {m['never_admitted']} | same decisions: "
                   f"{'yes' if r['same_decisions'] else 'NO'} | 0 / 0 / 0 |")
    return out


def main() -> int:
    return print_report(run, rows)


if __name__ == "__main__":
    sys.exit(main())
