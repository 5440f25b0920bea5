"""The pod plane's policy: where each pod goes (the scheduling framework, its plugins, the
snapshot it decides over, and the queue that orders the attempts)."""

from mlplane.policy.pod.framework import Framework
from mlplane.policy.pod.interface import (
    Code, CycleState, Diagnosis, PostFilterResult, PreFilterResult, ScheduleResult, Status,
)
from mlplane.policy.pod.plugins import default_framework, default_plugins
from mlplane.policy.pod.queue import SchedulingQueue
from mlplane.policy.pod.snapshot import NodeInfo, PodInfo, Resources, Snapshot
from mlplane.policy.pod.waiting import WaitingPod, WaitingPods

__all__ = ["Code", "CycleState", "Diagnosis", "Framework", "PostFilterResult", "PreFilterResult", "ScheduleResult",
           "Status", "WaitingPod", "WaitingPods", "default_framework", "default_plugins", "SchedulingQueue",
           "NodeInfo", "PodInfo", "Resources", "Snapshot"]
