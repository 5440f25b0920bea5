"""The scheduling framework's vocabulary: statuses, cycle state, the extension points and results.

Mirrors kube-scheduler's staging/src/k8s.io/kube-scheduler/framework/interface.go and the
Diagnosis/FitError types of pkg/scheduler/framework/types.go. ``framework.py`` runs the plugins.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mlplane.policy.pod.snapshot import NodeInfo, PodInfo, Snapshot

if TYPE_CHECKING:
    from mlplane.policy.pod.waiting import WaitingPod

MAX_NODE_SCORE = 100
MIN_NODE_SCORE = 0
MAX_PERMIT_TIMEOUT = 15 * 60.0  # seconds; a longer Wait is cut to this (runtime/framework.go maxTimeout)
NO_NODES_AVAILABLE = "no nodes available to schedule pods"


class Code(str, enum.Enum):
    """A plugin's verdict, with upstream's names (framework/interface.go)."""

    SUCCESS = "Success"
    ERROR = "Error"
    UNSCHEDULABLE = "Unschedulable"  # may fit once something changes (or by preemption)
    UNSCHEDULABLE_AND_UNRESOLVABLE = "UnschedulableAndUnresolvable"  # preemption would not help
    WAIT = "Wait"  # Permit only
    SKIP = "Skip"  # PreFilter: skip my Filter; Bind: not mine to bind


@dataclass(frozen=True, slots=True)
class Status:
    """A plugin's answer: a code, reasons (joined, the message) and the plugin that gave it."""

    code: Code = Code.SUCCESS
    reasons: tuple[str, ...] = ()
    plugin: str = ""  # the plugin that returned it, set by the framework
    timeout: float | None = None  # Wait only: seconds to wait at most

    @classmethod
    def unschedulable(cls, *reasons: str) -> "Status":
        return cls(Code.UNSCHEDULABLE, reasons)

    @classmethod
    def unresolvable(cls, *reasons: str) -> "Status":
        return cls(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons)

    @classmethod
    def error(cls, message: str) -> "Status":
        return cls(Code.ERROR, (message,))

    @classmethod
    def wait(cls, timeout: float, message: str = "") -> "Status":
        if timeout < 0:
            raise ValueError(f"permit wait timeout must not be negative, got {timeout}")
        return cls(Code.WAIT, (message,) if message else (), timeout=timeout)

    @classmethod
    def skip(cls) -> "Status":
        return cls(Code.SKIP)

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)

    @property
    def is_success(self) -> bool:
        return self.code is Code.SUCCESS

    @property
    def is_rejected(self) -> bool:
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE)

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}" if self.reasons else self.code.value


SUCCESS = Status()


def status_of(returned: Status | None, plugin: str) -> Status:
    """What a plugin returned as a Status naming the plugin (None is Success)."""
    if returned is None:
        return SUCCESS
    if not isinstance(returned, Status):
        raise TypeError(f"plugin {plugin!r} returned {returned!r}, not a Status")
    if returned.is_success:
        return SUCCESS
    return returned if returned.plugin else replace(returned, plugin=plugin)


class CycleState:
    """Data plugins share within one scheduling cycle (and its binding cycle), keyed by name."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self.skip_filter: set[str] = set()  # plugins whose PreFilter returned Skip
        self.skip_score: set[str] = set()  # plugins with nothing to score for this pod (upstream PreScore Skip)

    def write(self, key: str, value: Any) -> None:
        self._data[key] = value

    def read(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(f"{key!r} not found in the cycle state (did its PreFilter run?)") from None

    def __contains__(self, key: str) -> bool:
        return key in self._data


@dataclass(frozen=True)
class PreFilterResult:
    """A PreFilter verdict that only these nodes can fit (``None``: all nodes)."""

    node_names: frozenset[str] | None = None


@dataclass(frozen=True)
class PostFilterResult:
    """A PostFilter verdict; a Success may name the node the pod is nominated to (preemption)."""

    status: Status = SUCCESS
    nominated_node: str | None = None


# --- extension points ----------------------------------------------------------------------------

@runtime_checkable
class PreEnqueuePlugin(Protocol):
    name: str

    def pre_enqueue(self, pod: PodInfo) -> Status | None: ...


@runtime_checkable
class PreFilterPlugin(Protocol):
    name: str

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | PreFilterResult | None:
        ...


@runtime_checkable
class FilterPlugin(Protocol):
    name: str

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None: ...


@runtime_checkable
class PostFilterPlugin(Protocol):
    name: str

    def post_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot,
                    diagnosis: "Diagnosis") -> PostFilterResult: ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int: ...


@runtime_checkable
class ReservePlugin(Protocol):
    name: str

    def reserve(self, state: CycleState, pod: PodInfo, node: str) -> Status | None: ...

    def unreserve(self, state: CycleState, pod: PodInfo, node: str) -> None: ...


@runtime_checkable
class PermitPlugin(Protocol):
    name: str

    def permit(self, state: CycleState, pod: PodInfo, node: str) -> Status | None: ...


@runtime_checkable
class PreBindPlugin(Protocol):
    name: str

    def pre_bind(self, state: CycleState, pod: PodInfo, node: str) -> Status | None: ...


@runtime_checkable
class BindPlugin(Protocol):
    name: str

    def bind(self, state: CycleState, pod: PodInfo, node: str) -> Status | None: ...


# --- results -------------------------------------------------------------------------------------

@dataclass
class Diagnosis:
    """Why no node fits, per node, and the message kube-scheduler would write for it."""

    num_all_nodes: int
    node_to_status: dict[str, Status] = field(default_factory=dict)
    absent_status: Status | None = None  # the status of nodes not in node_to_status
    unschedulable_plugins: set[str] = field(default_factory=set)
    pre_filter_msg: str = ""
    post_filter_msg: str = ""

    def message(self) -> str:
        """``0/N nodes are available: <counted reasons>.``, reasons sorted as strings as upstream
        (FitError.Error in pkg/scheduler/framework/types.go)."""
        text = f"0/{self.num_all_nodes} nodes are available:"
        if self.pre_filter_msg:
            text += f" {self.pre_filter_msg}."
        else:
            counts: Counter[str] = Counter()
            for status in self.node_to_status.values():
                counts.update(status.reasons)
            absent = self.num_all_nodes - len(self.node_to_status)
            if absent > 0 and self.absent_status is not None:
                for reason in self.absent_status.reasons:
                    counts[reason] += absent
            reasons = sorted(f"{n} {reason}" for reason, n in counts.items())
            if reasons:
                text += " " + ", ".join(reasons) + "."
        if self.post_filter_msg:
            text += f" {self.post_filter_msg}"
        return text


@dataclass
class ScheduleResult:
    """The outcome of one scheduling cycle for one pod.

    ``status`` is Success (``node`` chosen and assumed: bind it), Wait (``node`` assumed, a
    Permit plugin holds the pod: see ``waiting``), a rejection (``message`` says why, like
    kube-scheduler's FailedScheduling), or Error. ``gated`` is set when a PreEnqueue plugin
    kept the pod from being tried at all.
    """

    pod: PodInfo
    status: Status
    node: str | None = None
    diagnosis: Diagnosis | None = None
    state: CycleState | None = None
    gated: bool = False
    nominated_node: str | None = None
    waiting: "WaitingPod | None" = None

    @property
    def message(self) -> str:
        return self.diagnosis.message() if self.diagnosis is not None else self.status.message
