"""Recording v1 Events about objects, aggregated as kubectl shows them (count, first/last seen)."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading

from mlplane.api.core import Event, EventSource, ObjectReference
from mlplane.api.errors import ApiError, NotFound
from mlplane.api.meta import ObjectMeta, Object, now
from mlplane.control.store.base import Store

log = logging.getLogger(__name__)


class EventRecorder:
    """Writes Events best-effort: a failure to record never fails the caller's reconcile."""

    def __init__(self, store: Store, component: str, host: str | None = None):
        self.store, self.component = store, component
        self.host = host or socket.gethostname()
        self._lock = threading.Lock()

    def normal(self, obj: Object, reason: str, message: str) -> None:
        self.record(obj, "Normal", reason, message)

    def warning(self, obj: Object, reason: str, message: str) -> None:
        self.record(obj, "Warning", reason, message)

    def record(self, obj: Object, type_: str, reason: str, message: str) -> None:
        namespace = obj.metadata.namespace or "default"
        digest = hashlib.sha1(f"{obj.uid}/{type_}/{reason}/{message}/{self.component}".encode()).hexdigest()[:10]
        name = f"{obj.name}.{digest}"
        ts = now()
        try:
            with self._lock:
                try:
                    ev = self.store.get(Event, namespace, name)
                    ev.count = (ev.count or 1) + 1
                    ev.last_timestamp = ts
                    self.store.update(ev)
                    return
                except NotFound:
                    pass
                self.store.create(Event(
                    metadata=ObjectMeta(name=name, namespace=namespace),
                    involved_object=ObjectReference(api_version=obj.api_version, kind=obj.kind, namespace=namespace
                                                    if obj.metadata.namespace else None, name=obj.name,
                                                    uid=obj.uid, resource_version=obj.metadata.resource_version),
                    reason=reason, message=message, type=type_, count=1, first_timestamp=ts, last_timestamp=ts,
                    source=EventSource(component=self.component, host=self.host),
                    reporting_component=self.component, reporting_instance=self.host))
        except ApiError as e:
            log.debug("event %s %s on %s not recorded: %s", type_, reason, obj.key, e)
        except Exception:
            log.debug("event %s %s on %s not recorded", type_, reason, obj.key, exc_info=True)
