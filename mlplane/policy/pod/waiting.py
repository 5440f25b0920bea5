"""Pods held at Permit: each waits until every plugin that asked it to wait allows it, one rejects
it, or the caller (who owns the clock) reports that a plugin's timeout has passed.

Mirrors kube-scheduler's pkg/scheduler/framework/runtime/waiting_pods_map.go, without timers.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from mlplane.policy.pod.interface import SUCCESS, Code, ScheduleResult, Status
from mlplane.policy.pod.snapshot import PodInfo


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it ("500ms", "10s", "1m30s"), for upstream messages."""
    ns = int(round(seconds * 1e9))
    if ns < 1000:
        return f"{ns}ns"
    if ns < 10**6:
        return _decimal(ns, 1000) + "µs"
    if ns < 10**9:
        return _decimal(ns, 10**6) + "ms"
    hours, ns = divmod(ns, 3600 * 10**9)
    minutes, ns = divmod(ns, 60 * 10**9)
    secs = _decimal(ns, 10**9) + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def _decimal(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    if not rest:
        return str(whole)
    digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


class WaitingPod:
    """A pod assumed on a node and held at Permit until every waiting plugin allows it.

    Plugins (a gang's Permit, say) find it through ``WaitingPods`` and call ``allow`` or
    ``reject``; the caller, who owns the clock, calls ``expire(plugin)`` when that plugin's
    ``timeouts[plugin]`` seconds have passed. Once decided, ``Framework.take_decided`` hands it back.
    """

    def __init__(self, result: ScheduleResult, timeouts: Mapping[str, float]):
        self.result = result
        self.timeouts = dict(timeouts)
        self._pending = set(timeouts)
        self.status: Status | None = None
        self._registry: WaitingPods | None = None

    @property
    def key(self) -> str:
        return self.result.pod.key

    @property
    def pod(self) -> PodInfo:
        return self.result.pod

    @property
    def node(self) -> str:
        assert self.result.node is not None
        return self.result.node

    @property
    def pending_plugins(self) -> list[str]:
        return sorted(self._pending)

    @property
    def decided(self) -> bool:
        return self.status is not None

    def allow(self, plugin: str) -> None:
        if self.status is not None:
            return
        self._pending.discard(plugin)
        if not self._pending:
            self._decide(SUCCESS)

    def reject(self, plugin: str, message: str) -> None:
        if self.status is None:
            self._decide(Status(Code.UNSCHEDULABLE, (message,), plugin))

    def expire(self, plugin: str) -> None:
        if plugin in self._pending:
            self.reject(plugin, f"rejected due to timeout after waiting {go_duration(self.timeouts[plugin])} "
                                f"at plugin {plugin}")

    def _decide(self, status: Status) -> None:
        self.status = status
        if self._registry is not None:
            self._registry._decided.add(self.key)


class WaitingPods:
    """The pods currently held at Permit, by pod key."""

    def __init__(self) -> None:
        self._pods: dict[str, WaitingPod] = {}
        self._decided: set[str] = set()

    def add(self, waiting: WaitingPod) -> None:
        self.remove(waiting.key)
        waiting._registry = self
        self._pods[waiting.key] = waiting
        if waiting.decided:
            self._decided.add(waiting.key)

    def get(self, key: str) -> WaitingPod | None:
        return self._pods.get(key)

    def remove(self, key: str) -> WaitingPod | None:
        waiting = self._pods.pop(key, None)
        if waiting is not None:
            waiting._registry = None
            self._decided.discard(key)
        return waiting

    def pop_decided(self) -> list[WaitingPod]:
        """Remove and return the pods that have been allowed or rejected, by key."""
        return [w for w in (self.remove(k) for k in sorted(self._decided)) if w is not None]

    def __iter__(self) -> Iterator[WaitingPod]:
        return iter([self._pods[k] for k in sorted(self._pods)])

    def __len__(self) -> int:
        return len(self._pods)
