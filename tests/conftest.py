"""Fixtures and helpers shared by the tests: a store with the "default" namespace, waiting for a
condition, and reading Events. Test modules import the helpers with ``from conftest import ...``."""

import os
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mlplane.api import Event, Namespace, Pod  # noqa: E402
from mlplane.api.meta import ObjectMeta  # noqa: E402
from mlplane.control.store.embedded import EmbeddedStore  # noqa: E402


@pytest.fixture
def store(tmp_path):
    """An embedded store persisted under tmp_path, with the "default" namespace."""
    s = EmbeddedStore(tmp_path / "store.db")
    s.create(Namespace(metadata=ObjectMeta(name="default")))
    yield s
    s.close()


def wait_for(check, *, what: str = "condition", timeout: float = 10.0):
    """Call ``check`` until it returns something truthy, and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def get_pod(store, name: str, namespace: str = "default") -> Pod:
    return store.get(Pod, namespace, name)


def events_about(store, name: str, namespace: str = "default") -> list[Event]:
    """The Events whose involvedObject is ``name``."""
    return store.list(Event, namespace, field_selector=f"involvedObject.name={name}").items


def events(store, name: str, namespace: str = "default") -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about ``name``."""
    return [(e.type, e.reason, e.message) for e in events_about(store, name, namespace)]
