"""The store interface shared by every implementation, and the merge-patch helper they use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal, Protocol, TypeVar

from mlplane.api.meta import Object

T = TypeVar("T", bound=Object)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass
class WatchEvent:
    type: EventType
    object: Object


@dataclass
class ListResult:
    items: list = field(default_factory=list)
    resource_version: str = "0"


class WatchIterMixin:
    """``for event in watch`` until the watch ends, for any class with ``next()``."""

    def __iter__(self) -> Iterator[WatchEvent]:
        while True:
            event = self.next()  # type: ignore[attr-defined]
            if event is None:
                return
            yield event


class Watch(Protocol):
    """A stream of events in resourceVersion order. Iterating blocks; ``stop()`` ends it from any thread.

    Iteration raises ``Gone`` when the requested resourceVersion is older than the retained history:
    the caller re-lists and watches again from the list's resourceVersion.
    """

    def __iter__(self) -> Iterator[WatchEvent]: ...

    def next(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, or None after ``timeout`` seconds or once the watch has ended."""

    def stop(self) -> None: ...

    @property
    def stopped(self) -> bool: ...


class Store(Protocol):
    """Kubernetes API semantics over typed objects. Every returned object is the caller's own copy."""

    def create(self, obj: T) -> T: ...

    def create_many(self, objs: list[T]) -> list[T]:
        """Create several objects; the embedded store commits them together (all or none)."""

    def get(self, model: type[T], namespace: str | None, name: str) -> T: ...

    def list(self, model: type[T], namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> ListResult: ...

    def update(self, obj: T) -> T:
        """Replace spec and metadata. A set metadata.resourceVersion that is not current raises Conflict."""

    def update_status(self, obj: T) -> T:
        """Replace status alone (the status subresource), with the same resourceVersion check."""

    def patch(self, model: type[T], namespace: str | None, name: str, patch: dict,
              subresource: str | None = None) -> T:
        """Apply a JSON merge patch (RFC 7386) to the object, or to its status with subresource="status"."""

    def delete(self, model: type[T], namespace: str | None, name: str,
               propagation: str = "Background", grace_period_seconds: int | None = None) -> T:
        """Delete as Kubernetes does; returns the object as it is now.

        Finalizers are honoured; dependents (ownerReferences) are deleted too ("Background", or
        before the owner with "Foreground"), or keep running without it ("Orphan"). A pod bound to
        a node is deleted gracefully: it gets deletionTimestamp and stays until its node agent has
        stopped it and deletes it again with grace_period_seconds=0 (0 at once forces it).
        """

    def bind(self, namespace: str, name: str, node_name: str) -> Object:
        """Assign a pod to a node (the pods/binding subresource): sets spec.nodeName and PodScheduled."""

    def watch(self, model: type[T], namespace: str | None = None, resource_version: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None) -> Watch:
        """Watch from resource_version (exclusive). None starts with ADDED events for what exists now."""

    def close(self) -> None: ...


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
