"""Deletion as the Kubernetes API server does it: graceful pods, finalizers, foreground and orphan
propagation (https://kubernetes.io/docs/concepts/architecture/garbage-collection/)."""

import pytest

from mlplane.api import AlreadyExists, Gone, Invalid, Job, NotFound, Pod
from mlplane.api.meta import owner_reference
from mlplane.control.store.embedded import EmbeddedStore


def _pod(name, **meta):
    return Pod.model_validate({"metadata": {"name": name, "namespace": "default", **meta},
                               "spec": {"containers": [{"name": "c", "command": ["sleep", "9"]}],
                                        "terminationGracePeriodSeconds": 5}})


def _job(name, **meta):
    return Job.model_validate({"metadata": {"name": name, "namespace": "default", **meta}, "spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "command": ["true"]}]}}}})


def _owned_pod(store, owner, name, **meta):
    pod = _pod(name, **meta)
    pod.metadata.owner_references = [owner_reference(owner)]
    return store.create(pod)


def test_a_running_pod_waits_for_its_node_to_confirm(store):
    store.create(_pod("p"))
    store.bind("default", "p", "node-1")
    deleting = store.delete(Pod, "default", "p")
    assert deleting.metadata.deletion_timestamp and deleting.metadata.deletion_grace_period_seconds == 5
    assert store.get(Pod, "default", "p").metadata.deletion_timestamp  # still there: "Terminating"
    running = store.get(Pod, "default", "p")
    running.status.phase = "Running"
    store.update_status(running)  # the agent reports while stopping: the pod stays
    store.get(Pod, "default", "p")
    store.delete(Pod, "default", "p", grace_period_seconds=0)  # the agent confirms
    with pytest.raises(NotFound):
        store.get(Pod, "default", "p")


def test_unbound_or_finished_pods_and_forced_deletes_go_at_once(store):
    store.create(_pod("unbound"))
    store.delete(Pod, "default", "unbound")
    store.create(_pod("forced"))
    store.bind("default", "forced", "n")
    store.delete(Pod, "default", "forced", grace_period_seconds=0)
    store.create(_pod("done"))
    store.bind("default", "done", "n")
    store.patch(Pod, "default", "done", {"status": {"phase": "Succeeded"}}, subresource="status")
    store.delete(Pod, "default", "done")
    assert store.list(Pod, "default").items == []


def test_graceful_pod_with_a_finalizer_needs_both(store):
    store.create(_pod("p", finalizers=["batch.kubernetes.io/job-tracking"]))
    store.bind("default", "p", "n")
    store.delete(Pod, "default", "p")
    store.patch(Pod, "default", "p", {"metadata": {"finalizers": None}})
    assert store.get(Pod, "default", "p")  # the node has not confirmed yet
    store.delete(Pod, "default", "p", grace_period_seconds=0)
    with pytest.raises(NotFound):
        store.get(Pod, "default", "p")


def test_foreground_deletion_removes_the_owner_after_its_dependents(store):
    job = store.create(_job("j"))
    _owned_pod(store, job, "a", finalizers=["example.com/hold"])
    _owned_pod(store, job, "b")
    store.delete(Job, "default", "j", propagation="Foreground")
    owner = store.get(Job, "default", "j")
    assert owner.metadata.deletion_timestamp and "foregroundDeletion" in owner.metadata.finalizers
    assert [p.name for p in store.list(Pod, "default").items] == ["a"]  # b gone, a held by its finalizer
    store.patch(Pod, "default", "a", {"metadata": {"finalizers": None}})
    with pytest.raises(NotFound):
        store.get(Job, "default", "j")


def test_orphan_keeps_dependents_even_when_the_owner_waits_on_finalizers(store):
    job = store.create(_job("j", finalizers=["example.com/hold"]))
    _owned_pod(store, job, "a")
    store.delete(Job, "default", "j", propagation="Orphan")
    store.patch(Job, "default", "j", {"metadata": {"finalizers": None}})
    with pytest.raises(NotFound):
        store.get(Job, "default", "j")
    assert store.get(Pod, "default", "a").metadata.owner_references is None


def test_a_pod_update_may_not_drop_its_node(store):
    store.create(_pod("p"))
    bound = store.bind("default", "p", "n")
    bound.spec.node_name = None
    with pytest.raises(Invalid, match="Forbidden"):
        store.update(bound)
    assert store.get(Pod, "default", "p").spec.node_name == "n"


def test_a_watcher_that_falls_behind_is_cut_off_with_gone(store, monkeypatch):
    from mlplane.control.store import embedded

    monkeypatch.setattr(embedded._Watcher, "MAX_BUFFERED", 5)
    w = store.watch(Pod, "default", store.list(Pod).resource_version)
    for i in range(8):
        store.create(_pod(f"p{i}"))
    events = []
    with pytest.raises(Gone, match="fell 5 events behind"):
        for ev in w:
            events.append(ev.object.name)
    assert events == [f"p{i}" for i in range(5)]


def test_a_failed_commit_stops_the_store_instead_of_serving_unsaved_writes(tmp_path, monkeypatch):
    from mlplane.api import Namespace

    s = EmbeddedStore(tmp_path / "s.db")
    try:
        s.create(Namespace.model_validate({"metadata": {"name": "default"}}))
        w = s.watch(Pod, "default")
        monkeypatch.setattr(s, "_persist", lambda changes: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            s.create(_pod("p"))
        with pytest.raises(OSError, match="read-only after a failed commit"):
            s.list(Pod)
        with pytest.raises(Gone, match="failed to commit"):
            w.next(timeout=1)
    finally:
        monkeypatch.undo()
        s.close()
    reopened = EmbeddedStore(tmp_path / "s.db")
    assert reopened.list(Pod).items == []  # the failed write was never acknowledged, and is not there
    reopened.close()



def test_create_many_is_all_or_nothing(store):
    generated = _pod("x")
    generated.metadata.name, generated.metadata.generate_name = None, "gen-"
    created = store.create_many([_pod("a"), _pod("b"), generated])
    assert [p.name for p in created][:2] == ["a", "b"] and created[2].name.startswith("gen-")
    assert len({p.metadata.resource_version for p in created}) == 3
    with pytest.raises(AlreadyExists):
        store.create_many([_pod("c"), _pod("a")])
    with pytest.raises(AlreadyExists):
        store.create_many([_pod("d"), _pod("d")])
    assert sorted(p.name for p in store.list(Pod, "default").items if not p.name.startswith("gen-")) == ["a", "b"]
