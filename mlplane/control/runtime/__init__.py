"""The controller runtime shared by every controller: informers, work queues, controllers, events."""

from mlplane.control.runtime.controller import Controller, Requeue
from mlplane.control.runtime.events import EventRecorder
from mlplane.control.runtime.informer import Informer
from mlplane.control.runtime.workqueue import WorkQueue

__all__ = ["Controller", "Requeue", "EventRecorder", "Informer", "WorkQueue"]
