"""Kueue's quota tree: ClusterQueues and (hierarchical) Cohorts, their quotas and their usage.

Every ClusterQueue and Cohort is a ``QuotaNode`` holding, per ``(flavor, resource)`` pair (an
"fr"), its own quota (nominal, borrowingLimit, lendingLimit), its ``subtree`` quota and its
``usage``. The arithmetic is Kueue's, from pkg/cache/scheduler/resource_node.go:

- ``local_quota(n)`` = subtree - lendingLimit (at least 0) when a lendingLimit is set, else 0:
  capacity only n's own subtree can use; it is never lent to the parent.
- ``subtree(cq)`` = nominal; ``subtree(cohort)`` = nominal + sum over children of
  (subtree(child) - local_quota(child)).
- usage spills upward only above a node's local quota: ``add_usage`` charges the parent with the
  part of the amount that does not fit in the node's remaining local quota; ``remove_usage``
  gives back at most what the node was storing in its parent.
- ``available(n)`` = local available + what the parent can give, capped by n's borrowingLimit;
  ``potential_available(n)`` is the same ignoring every usage (the most n could ever get).

Quantities are integers in thousandths of the resource's unit (milli-units), so CPU "500m" is 500
and memory "1Ki" is 1,024,000. Python integers do not overflow, so Kueue's saturating int64
arithmetic needs no counterpart here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

FlavorResource = tuple[str, str]  # (flavor, resource)


class QuotaError(ValueError):
    """A quota tree that cannot be built (a cycle in cohort parents, a negative quantity)."""


class Quota:
    """The quota one ClusterQueue or Cohort declares for one flavor and resource."""

    __slots__ = ("nominal", "borrowing_limit", "lending_limit")

    def __init__(self, nominal: int = 0, borrowing_limit: int | None = None, lending_limit: int | None = None):
        self.nominal = nominal
        self.borrowing_limit = borrowing_limit
        self.lending_limit = lending_limit

    def __repr__(self) -> str:
        return f"Quota({self.nominal}, borrowing_limit={self.borrowing_limit}, lending_limit={self.lending_limit})"


_NO_QUOTA = Quota()


class QuotaNode:
    """One ClusterQueue (``is_cohort`` False) or Cohort in the tree, with its quotas and usage."""

    __slots__ = ("name", "is_cohort", "parent", "child_cohorts", "child_queues", "quotas", "subtree", "usage",
                 "over", "over_children")

    def __init__(self, name: str, is_cohort: bool, quotas: Mapping[FlavorResource, Quota] | None = None):
        self.name = name
        self.is_cohort = is_cohort
        self.parent: QuotaNode | None = None
        self.child_cohorts: list[QuotaNode] = []
        self.child_queues: list[QuotaNode] = []
        self.quotas: dict[FlavorResource, Quota] = dict(quotas or {})
        self.subtree: dict[FlavorResource, int] = {}
        self.usage: dict[FlavorResource, int] = {}
        # Kept by add_usage/remove_usage (and QuotaTree.build): the frs whose usage is above the
        # subtree quota, and the children that have at least one such fr, so that preemption
        # visits only the over-quota parts of a cohort instead of every child.
        self.over: set[FlavorResource] = set()
        self.over_children: set[QuotaNode] = set()

    def __repr__(self) -> str:
        kind = "Cohort" if self.is_cohort else "ClusterQueue"
        return f"<{kind} {self.name}>"

    # --- read-only arithmetic (resource_node.go) ----------------------------------------------

    def quota(self, fr: FlavorResource) -> Quota:
        return self.quotas.get(fr, _NO_QUOTA)

    def local_quota(self, fr: FlavorResource) -> int:
        """Capacity kept inside this subtree because of its lendingLimit."""
        q = self.quotas.get(fr)
        if q is None or q.lending_limit is None:
            return 0
        return max(0, self.subtree.get(fr, 0) - q.lending_limit)

    def local_available(self, fr: FlavorResource) -> int:
        return max(0, self.local_quota(fr) - self.usage.get(fr, 0))

    def available(self, fr: FlavorResource) -> int:
        """What this node may still take of ``fr`` (negative after an over-admission)."""
        parent = self.parent
        if parent is None:
            return self.subtree.get(fr, 0) - self.usage.get(fr, 0)
        from_parent = parent.available(fr)
        q = self.quotas.get(fr)
        if q is not None and q.borrowing_limit is not None:
            local = self.local_quota(fr)
            stored_in_parent = self.subtree.get(fr, 0) - local
            used_in_parent = max(0, self.usage.get(fr, 0) - local)
            from_parent = min(stored_in_parent - used_in_parent + q.borrowing_limit, from_parent)
        return self.local_available(fr) + from_parent

    def potential_available(self, fr: FlavorResource) -> int:
        """The most this node could get of ``fr`` if nothing were used anywhere."""
        parent = self.parent
        if parent is None:
            return self.subtree.get(fr, 0)
        value = self.local_quota(fr) + parent.potential_available(fr)
        q = self.quotas.get(fr)
        if q is not None and q.borrowing_limit is not None:
            value = min(self.subtree.get(fr, 0) + q.borrowing_limit, value)
        return value

    def borrowing(self, fr: FlavorResource) -> bool:
        """Kueue's Borrowing: usage above the node's subtree quota."""
        return self.usage.get(fr, 0) > self.subtree.get(fr, 0)

    def borrowing_with(self, fr: FlavorResource, amount: int) -> bool:
        return self.usage.get(fr, 0) + amount > self.subtree.get(fr, 0)

    def within_nominal(self, frs: Iterable[FlavorResource]) -> bool:
        """Kueue's IsWithinNominalInResources: usage <= subtree quota on every fr."""
        return self.over.isdisjoint(frs)

    def children_over_quota(self) -> list[QuotaNode]:
        """The children above their subtree quota for some fr: child cohorts, then ClusterQueues,
        each by name (the order of ``child_cohorts`` and ``child_queues``)."""
        return sorted(self.over_children, key=_child_order)

    def quantities_fit(self, requests: Mapping[FlavorResource, int]) -> tuple[bool, dict[FlavorResource, int]]:
        """Kueue's QuantitiesFitInQuota: whether ``requests`` fit in this subtree's quota, and
        what is left of them after this node's local available quota (to ask the parent)."""
        fits = True
        remaining = {}
        for fr, v in requests.items():
            if self.usage.get(fr, 0) + v > self.subtree.get(fr, 0):
                fits = False
            remaining[fr] = max(0, v - self.local_available(fr))
        return fits, remaining

    def ancestors(self) -> Iterator[QuotaNode]:
        """The parent, its parent, ... up to the root (Kueue's PathParentToRoot)."""
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def root(self) -> QuotaNode:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def height(self) -> int:
        """Distance to the furthest leaf below this cohort (Kueue's getNodeHeight)."""
        h = min(len(self.child_cohorts) + len(self.child_queues), 1)
        for child in self.child_cohorts:
            h = max(h, child.height() + 1)
        return h

    # --- mutation -------------------------------------------------------------------------------

    def add_usage(self, fr: FlavorResource, amount: int) -> None:
        """Charge ``amount`` to this node; the part above its local quota spills to the parent."""
        node = self
        while True:
            local_available = node.local_available(fr)
            node.usage[fr] = node.usage.get(fr, 0) + amount
            node._mark(fr)
            if node.parent is None or amount <= local_available:
                return
            amount -= local_available
            node = node.parent

    def remove_usage(self, fr: FlavorResource, amount: int) -> None:
        """Release ``amount``; the parent gets back at most what this node stored in it."""
        node = self
        while True:
            stored_in_parent = node.usage.get(fr, 0) - node.local_quota(fr)
            node.usage[fr] = node.usage.get(fr, 0) - amount
            node._mark(fr)
            if stored_in_parent <= 0 or node.parent is None:
                return
            amount = min(amount, stored_in_parent)
            node = node.parent

    def _mark(self, fr: FlavorResource) -> None:
        """Bring ``over`` (and the parent's ``over_children``) up to date for ``fr``."""
        over = self.over
        if self.usage.get(fr, 0) > self.subtree.get(fr, 0):
            if fr in over:
                return
            over.add(fr)
            if len(over) == 1 and self.parent is not None:
                self.parent.over_children.add(self)
        elif fr in over:
            over.discard(fr)
            if not over and self.parent is not None:
                self.parent.over_children.discard(self)

    def refresh_over(self) -> None:
        """Recompute ``over`` from scratch and register this node with its parent."""
        self.over = {fr for fr, v in self.usage.items() if v > self.subtree.get(fr, 0)}
        if self.over and self.parent is not None:
            self.parent.over_children.add(self)

    def add_usages(self, usage: Mapping[FlavorResource, int]) -> None:
        for fr, v in usage.items():
            self.add_usage(fr, v)

    def remove_usages(self, usage: Mapping[FlavorResource, int]) -> None:
        for fr, v in usage.items():
            self.remove_usage(fr, v)

    def fits(self, usage: Mapping[FlavorResource, int]) -> bool:
        """Kueue's ClusterQueueSnapshot.Fits: every amount is within what is available."""
        return all(v <= self.available(fr) for fr, v in usage.items())


def _child_order(node: QuotaNode) -> tuple[bool, str]:
    return (not node.is_cohort, node.name)


def lowest_fitting_subtree(cq: QuotaNode, fr: FlavorResource, amount: int) -> tuple[int, bool]:
    """Kueue's FindHeightOfLowestSubtreeThatFits (classical/hierarchical_preemption.go).

    Returns the height of the lowest subtree around ``cq`` whose quota holds ``amount`` more of
    ``fr`` (0: the ClusterQueue itself, no borrowing), and whether that subtree is smaller than
    the whole cohort tree (so its members have a claim over the rest of the tree)."""
    if cq.parent is None or not cq.borrowing_with(fr, amount):
        return 0, cq.parent is not None
    remaining = amount - cq.local_available(fr)
    node = cq
    for node in cq.ancestors():
        if not node.borrowing_with(fr, remaining):
            return node.height(), node.parent is not None
        remaining -= node.local_available(fr)
    return node.height(), node.parent is not None


class QuotaTree:
    """All ClusterQueues and Cohorts. Cohorts named by a ClusterQueue or as a parent but not
    declared are created empty ("implicit" cohorts, as Kueue does)."""

    def __init__(self) -> None:
        self.cohorts: dict[str, QuotaNode] = {}
        self.queues: dict[str, QuotaNode] = {}
        self._parent_names: dict[str, str | None] = {}
        self.cyclic: set[str] = set()

    def add_cohort(self, name: str, parent: str | None = None,
                   quotas: Mapping[FlavorResource, Quota] | None = None) -> QuotaNode:
        _check_quotas(f"Cohort {name}", quotas or {}, has_parent=parent is not None)
        node = self.cohorts.get(name)
        if node is None:
            node = self.cohorts[name] = QuotaNode(name, True)
        node.quotas = dict(quotas or {})
        self._parent_names[name] = parent or None
        if parent and parent not in self.cohorts:
            self.cohorts[parent] = QuotaNode(parent, True)
            self._parent_names.setdefault(parent, None)
        return node

    def add_queue(self, name: str, cohort: str | None = None,
                  quotas: Mapping[FlavorResource, Quota] | None = None) -> QuotaNode:
        _check_quotas(f"ClusterQueue {name}", quotas or {}, has_parent=cohort is not None)
        node = QuotaNode(name, False, quotas)
        self.queues[name] = node
        if cohort:
            if cohort not in self.cohorts:
                self.cohorts[cohort] = QuotaNode(cohort, True)
                self._parent_names.setdefault(cohort, None)
            node.parent = self.cohorts[cohort]
        return node

    def build(self) -> None:
        """Link cohorts to their parents, find cycles and compute every subtree quota."""
        for node in self.cohorts.values():
            node.child_cohorts.clear()
            node.child_queues.clear()
            node.parent = None
        self.cyclic = self._find_cycles()
        for node in self.queues.values():
            node.subtree = {fr: q.nominal for fr, q in node.quotas.items()}
        for name, node in sorted(self.cohorts.items()):
            parent = self._parent_names.get(name)
            if parent and name not in self.cyclic:
                node.parent = self.cohorts[parent]
                node.parent.child_cohorts.append(node)
        for name, node in sorted(self.queues.items()):
            if node.parent is not None:
                node.parent.child_queues.append(node)
        for node in self.cohorts.values():
            if node.parent is None and node.name not in self.cyclic:
                _accumulate(node)
        for node in self.cohorts.values():
            node.over_children = set()
        for node in (*self.cohorts.values(), *self.queues.values()):
            node.refresh_over()

    def in_cycle(self, cq: QuotaNode) -> str | None:
        """The cohort of ``cq``'s chain that is part of a parent cycle, if any."""
        node = cq.parent
        return node.name if node is not None and node.name in self.cyclic else None

    def _find_cycles(self) -> set[str]:
        """Cohorts on, or below, a cycle of parentName references."""
        state: dict[str, int] = {}  # 1: visiting, 2: done
        cyclic: set[str] = set()

        for start in sorted(self.cohorts):
            path: list[str] = []
            name: str | None = start
            while name is not None and state.get(name) is None:
                state[name] = 1
                path.append(name)
                name = self._parent_names.get(name)
            bad = name is not None and (state.get(name) == 1 or name in cyclic)
            for n in path:
                state[n] = 2
                if bad:
                    cyclic.add(n)
        return cyclic


def _accumulate(cohort: QuotaNode) -> None:
    """Kueue's updateCohortResourceNode: subtree quota and spilled usage, bottom up."""
    subtree = {fr: q.nominal for fr, q in cohort.quotas.items()}
    usage: dict[FlavorResource, int] = {}
    for child in cohort.child_cohorts:
        _accumulate(child)
    for child in (*cohort.child_cohorts, *cohort.child_queues):
        for fr, v in child.subtree.items():
            subtree[fr] = subtree.get(fr, 0) + v - child.local_quota(fr)
        for fr, v in child.usage.items():
            usage[fr] = usage.get(fr, 0) + max(0, v - child.local_quota(fr))
    cohort.subtree = subtree
    cohort.usage = usage


def _check_quotas(owner: str, quotas: Mapping[FlavorResource, Quota], has_parent: bool) -> None:
    for (flavor, resource), q in quotas.items():
        where = f"{owner}: flavor {flavor}, resource {resource}"
        for field, value in (("nominalQuota", q.nominal), ("borrowingLimit", q.borrowing_limit),
                             ("lendingLimit", q.lending_limit)):
            if value is not None and value < 0:
                raise QuotaError(f"{where}: {field} must be non-negative")
        if q.borrowing_limit is not None and not has_parent:
            raise QuotaError(f"{where}: borrowingLimit must be nil when cohort is empty")
