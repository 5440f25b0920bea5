"""Prometheus metrics of the workload plane, with Kueue's names, computed from the store on request.

Names, labels and help texts follow ``kubernetes-sigs/kueue:pkg/metrics/metrics.go``; values come
from what the store holds when ``/metrics`` is scraped (ClusterQueue spec and status, Workloads,
ResourceFlavors), as Kueue's cache reports them (``pkg/cache/scheduler/clusterqueue.go``
reportResourceMetrics): quantities in base units (CPU in cores, memory in bytes), an unset
borrowing or lending limit as ``+Inf``.

``kueue_pending_workloads`` splits a ClusterQueue's pending workloads by ``status``: ``inadmissible``
are those that wait for the cluster to change (the heads a BestEffortFIFO queue set aside after a
failed admission attempt, or a requeue backoff that has not run out), ``active`` the others; a
workload with ``spec.active: false`` is in no queue and not counted (Kueue deactivates it). As in
Kueue, where the queue manager keeps them in memory (pkg/cache/queue/cluster_queue.go
inadmissibleWorkloads), the set-aside heads are not in the store: the Kueue controller registers
itself as their source with ``register_inadmissible`` while it runs, and ``scrape`` asks it.

``render`` writes the Prometheus text exposition format, version 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from mlplane.api.kueue import ClusterQueue, Cohort, LocalQueue, ResourceFlavor, Workload, cluster_queue_of, reserved
from mlplane.api.meta import is_true, parse_time
from mlplane.api.quantity import parse_quantity
from mlplane.control.store.base import Store
from mlplane.policy.workload.kueue import snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# ClusterQueue statuses of kueue_cluster_queue_status (metrics.go CQStatuses).
CQ_STATUSES = ("pending", "active", "terminating")

# The source of the set-aside workload keys of each store's Kueue controller.
_sources: "weakref.WeakKeyDictionary[Store, Callable[[], Container[str]]]" = weakref.WeakKeyDictionary()
_sources_lock = threading.Lock()


def register_inadmissible(store: Store, source: Callable[[], Container[str]] | None) -> None:
    """Make ``source()`` (the keys of the workloads set aside as inadmissible) what ``scrape(store)``
    reads; None removes it."""
    with _sources_lock:
        if source is None:
            _sources.pop(store, None)
        else:
            _sources[store] = source


@dataclass
class Family:
    """One metric: its name, type, help text and samples (label pairs, value)."""

    name: str
    help: str
    type: str = "gauge"
    samples: list[tuple[tuple[tuple[str, str], ...], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((tuple(labels.items()), value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if value == int(value) else repr(value)


def render(families: Iterable[Family]) -> str:
    """The text exposition format 0.0.4: ``# HELP``, ``# TYPE``, then one line per sample."""
    lines: list[str] = []
    for f in families:
        lines.append(f"# HELP {f.name} {_escape_help(f.help)}")
        lines.append(f"# TYPE {f.name} {f.type}")
        for labels, value in f.samples:
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            lines.append(f"{f.name}{{{text}}} {_number(value)}" if labels else f"{f.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _inadmissible(wl: Workload, set_aside: Container[str], now: float) -> bool:
    if wl.key in set_aside:
        return True
    state = wl.status.requeue_state
    at = parse_time(state.requeue_at if state else None)
    return at is not None and at.timestamp() > now


def _cq_status(active: tuple[str, str, str]) -> str:
    """Kueue's CQ status from the ``Active`` condition: terminating while deleted, pending while
    inactive (stopped, a flavor missing, ...), active otherwise."""
    status, reason, _ = active
    if reason == snapshot.TERMINATING:
        return "terminating"
    return "active" if status == "True" else "pending"


def _base_units(value: str | None) -> float:
    return math.inf if value is None else float(parse_quantity(value))


def kueue_families(cluster_queues: list[ClusterQueue], local_queues: list[LocalQueue], workloads: list[Workload],
                   flavors: list[ResourceFlavor], cohorts: list[Cohort], now: float,
                   set_aside: Container[str] = frozenset()) -> list[Family]:
    """Kueue's ClusterQueue metrics for these objects, ClusterQueues and their flavors in name and spec
    order; ``set_aside``: keys of the pending workloads set aside as inadmissible."""
    pending = Family("kueue_pending_workloads",
                     "The number of pending workloads, per 'cluster_queue' and 'status'.\n'status' can have the "
                     "following values:\n- \"active\" means that the workloads are in the admission queue.\n- "
                     "\"inadmissible\" means there was a failed admission attempt for these workloads and they won't "
                     "be retried until cluster conditions, which could make this workload admissible, change")
    reserving = Family("kueue_reserving_active_workloads",
                       "The number of Workloads that are reserving quota, per 'cluster_queue'")
    admitted = Family("kueue_admitted_active_workloads",
                      "The number of admitted Workloads that are active (unsuspended and not finished), per "
                      "'cluster_queue'")
    by_status = Family("kueue_cluster_queue_status",
                       "Reports 'cluster_queue' with its 'status' (with possible values 'pending', 'active' or "
                       "'terminated').\nFor a ClusterQueue, the metric only reports a value of 1 for one of the "
                       "statuses.")
    reservation = Family("kueue_cluster_queue_resource_reservation",
                         "Reports the cluster_queue's total resource reservation within all the flavors")
    usage = Family("kueue_cluster_queue_resource_usage",
                   "Reports the cluster_queue's total resource usage within all the flavors")
    nominal = Family("kueue_cluster_queue_nominal_quota",
                     "Reports the cluster_queue's resource nominal quota within all the flavors")
    borrowing = Family("kueue_cluster_queue_borrowing_limit",
                       "Reports the cluster_queue's resource borrowing limit within all the flavors")
    lending = Family("kueue_cluster_queue_lending_limit",
                     "Reports the cluster_queue's resource lending limit within all the flavors")
    weighted = Family("kueue_cluster_queue_weighted_share",
                      "Reports a value that representing the maximum of the ratios of usage above nominal quota to "
                      "the lendable resources in the cohort, among all the resources provided by the ClusterQueue, "
                      "and divided by the weight.\nIf zero, it means that the usage of the ClusterQueue is below the "
                      "nominal quota.")

    cq_of_lq = {lq.key: lq.spec.cluster_queue for lq in local_queues}
    activity = snapshot.queue_activity([*flavors, *cohorts, *cluster_queues])
    live = [wl for wl in workloads if not is_true(wl.status.conditions, "Finished")]
    for cq in sorted(cluster_queues, key=lambda q: q.name):
        name, cohort = cq.name, cq.spec.cohort_name or ""
        mine = [wl for wl in live if cluster_queue_of(wl, cq_of_lq) == name]
        waiting = [wl for wl in mine if not reserved(wl) and wl.spec.active]
        blocked = sum(1 for wl in waiting if _inadmissible(wl, set_aside, now))
        pending.add(len(waiting) - blocked, cluster_queue=name, status="active")
        pending.add(blocked, cluster_queue=name, status="inadmissible")
        reserving.add(sum(1 for wl in mine if reserved(wl)), cluster_queue=name)
        admitted.add(sum(1 for wl in mine if reserved(wl) and is_true(wl.status.conditions, "Admitted")),
                     cluster_queue=name)
        current = _cq_status(activity[name])
        for status in CQ_STATUSES:
            by_status.add(1 if status == current else 0, cluster_queue=name, status=status)
        for group in cq.spec.resource_groups or []:
            for fq in group.flavors:
                for quota in fq.resources:
                    labels = {"cohort": cohort, "cluster_queue": name, "flavor": fq.name, "resource": quota.name}
                    nominal.add(_base_units(quota.nominal_quota), **labels)
                    borrowing.add(_base_units(quota.borrowing_limit), **labels)
                    lending.add(_base_units(quota.lending_limit), **labels)
        for family, flavors_status in ((reservation, cq.status.flavors_reservation), (usage, cq.status.flavors_usage)):
            for fu in flavors_status or []:
                for r in fu.resources:
                    family.add(float(parse_quantity(r.total)), cohort=cohort, cluster_queue=name, flavor=fu.name,
                               resource=r.name)
        if cq.status.fair_sharing is not None:
            weighted.add(cq.status.fair_sharing.weighted_share, cluster_queue=name)
    return [pending, reserving, admitted, by_status, reservation, usage, nominal, borrowing, lending, weighted]


def scrape(store: Store, now: float | None = None) -> str:
    """Read the Kueue objects from ``store`` and render their metrics."""
    if now is None:
        now = datetime.now(timezone.utc).timestamp()
    with _sources_lock:
        source = _sources.get(store)
    set_aside = source() if source is not None else frozenset()
    return render(kueue_families(store.list(ClusterQueue).items, store.list(LocalQueue).items,
                                 store.list(Workload).items, store.list(ResourceFlavor).items,
                                 store.list(Cohort).items, now, set_aside))


__all__ = ["Family", "render", "kueue_families", "scrape", "register_inadmissible", "CONTENT_TYPE"]
