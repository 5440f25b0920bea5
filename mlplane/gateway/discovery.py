"""An InferencePool's endpoints from the store: its Ready pods, one endpoint per ``podIP:targetPort``.

``pool_endpoints`` is the pure rule (GIE: the pool selects pods by label in its own namespace; every
target port of a selected pod is a distinct endpoint). ``PoolWatcher`` keeps it current: informers
on the namespace's Pods, the pool and the InferenceObjectives, and a controller that recomputes after
any event and calls ``on_change(endpoints, pool, objectives)`` when the result differs from the last one.
It works over any Store, so ``mlplane gateway --server URL --pool NS/NAME`` follows a remote plane.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable

from mlplane.api.core import Pod
from mlplane.api.inference import InferenceObjective, InferencePool
from mlplane.api.meta import is_true
from mlplane.control.runtime import Controller, Informer, Requeue
from mlplane.control.store.base import Store
from mlplane.policy.traffic.types import Endpoint

log = logging.getLogger(__name__)

# on_change(endpoints, pool or None when it does not exist, {objective name: priority})
OnChange = Callable[[list[Endpoint], InferencePool | None, dict[str, int]], None]


def selects(pool: InferencePool, pod: Pod, namespace: str | None = None) -> bool:
    """The pool's selector matches the pod, in the pool's namespace (``namespace`` when the pool has none)."""
    if (pod.metadata.namespace or "default") != (pool.metadata.namespace or namespace or "default"):
        return False
    labels = pod.labels
    return all(labels.get(k) == v for k, v in pool.spec.selector.match_labels.items())


def serving(pod: Pod) -> bool:
    """The pod can take traffic: Ready, not being deleted, not finished, and it has an IP."""
    return (not pod.metadata.deletion_timestamp and not pod.terminal and bool(pod.status.pod_ip)
            and is_true(pod.status.conditions, "Ready"))


def pool_endpoints(pool: InferencePool | None, pods: Iterable[Pod], namespace: str | None = None) -> list[Endpoint]:
    """The endpoints of ``pool`` among ``pods``, ordered by pod name then target port.

    Each is named "namespace/pod:port", addressed "podIP:port", labelled with the pod's labels.
    ``namespace`` stands in for a pool read from a file without one (else "default")."""
    if pool is None:
        return []
    ns = pool.metadata.namespace or namespace or "default"
    members = sorted((p for p in pods if selects(pool, p, ns) and serving(p)), key=lambda p: p.name)
    return [Endpoint(name=f"{ns}/{p.name}:{port}", address=f"{p.status.pod_ip}:{port}", pool=pool.name,
                     labels=dict(p.labels))
            for p in members for port in pool.ports]


def pool_objectives(pool: InferencePool | None, objectives: Iterable[InferenceObjective]) -> dict[str, int]:
    """Priority by name of the InferenceObjectives that apply to ``pool`` (unset priority reads 0)."""
    if pool is None:
        return {}
    return {o.name: o.priority for o in sorted(objectives, key=lambda o: o.name)
            if not o.metadata.deletion_timestamp and o.applies_to(pool)}


def _signature(endpoints: list[Endpoint]) -> list[tuple]:
    return [(e.name, e.address, tuple(sorted(e.labels.items()))) for e in endpoints]


class PoolWatcher:
    """Follows the InferencePool ``namespace/name`` and calls ``on_change`` from a controller thread.

    The first call comes once the informers have listed everything (even when the pool does not
    exist yet: then ``([], None, {})``); later calls only when the endpoints (name, address, labels),
    the pool object or the objectives' priorities changed. Each call gets fresh ``Endpoint`` objects:
    a caller that keeps per-endpoint state matches them by ``name``.
    """

    KEY = "pool"  # every event recomputes the one view

    def __init__(self, store: Store, namespace: str, name: str, on_change: OnChange):
        self.namespace, self.name, self.on_change = namespace, name, on_change
        self._pods = Informer(store, Pod, namespace=namespace)
        self._pools = Informer(store, InferencePool, namespace=namespace, field_selector=f"metadata.name={name}")
        self._objectives = Informer(store, InferenceObjective, namespace=namespace)
        self._informers = (self._pods, self._pools, self._objectives)
        self._controller = Controller(f"pool-watcher-{namespace}/{name}", self._reconcile)
        for inf in self._informers:
            self._controller.watch(inf, lambda _obj: self.KEY)
        self._synced = threading.Event()
        self._started = False
        self._last: tuple | None = None

    def start(self) -> "PoolWatcher":
        if not self._started:
            self._started = True
            for inf in self._informers:
                inf.start()
            self._controller.start()
            self._controller.queue.add(self.KEY)  # the first call comes even if nothing exists yet
        return self

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once ``on_change`` has been called the first time."""
        return self._synced.wait(timeout)

    def stop(self) -> None:
        self._controller.stop()
        for inf in self._informers:
            inf.stop()

    def __enter__(self) -> "PoolWatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def current(self) -> tuple[list[Endpoint], InferencePool | None, dict[str, int]]:
        """The view now, from the informers' caches."""
        pool = self._pools.get(f"{self.namespace}/{self.name}")
        assert pool is None or isinstance(pool, InferencePool)
        return (pool_endpoints(pool, self._pods.list()), pool, pool_objectives(pool, self._objectives.list()))

    def _reconcile(self, _key: str) -> Requeue | None:
        if not all(inf.wait_synced(0) for inf in self._informers):
            return Requeue(after=0.05)
        endpoints, pool, objectives = self.current()
        key = (_signature(endpoints), pool.metadata.resource_version if pool else None, objectives)
        if key != self._last:
            self._last = key
            try:
                self.on_change(endpoints, pool, objectives)
            except Exception:
                log.exception("pool watcher %s/%s: on_change failed", self.namespace, self.name)
        self._synced.set()
        return None
