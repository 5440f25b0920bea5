"""The embedded store: objects in memory, every acknowledged write durable in SQLite.

Writers apply their change to the in-memory state under one lock (so conflict checks see every
earlier write), queue it, and wait. A single committer thread takes everything queued, writes it
in one SQLite transaction (WAL, synchronous=FULL), and only then publishes the events to watchers
and releases the writers. Many concurrent writers therefore share one fsync (group commit), and a
write is acknowledged only once it is on disk: ``kill -9`` loses nothing that a caller saw succeed.

Watchers see events strictly in resourceVersion order with no gaps; a bounded history lets a
watch resume from a recent resourceVersion, and an older one gets ``Gone`` (HTTP 410) so the
client re-lists, as with the Kubernetes API server.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import secrets
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from mlplane.api.errors import AlreadyExists, BadRequest, Conflict, Gone, Invalid, NotFound
from mlplane.api.meta import Object, now, set_condition
from mlplane.api.registry import REGISTRY, Kind
from mlplane.api.selectors import Selector, parse_field_selector, parse_label_selector
from mlplane.control.store.base import ListResult, WatchEvent, WatchIterMixin, merge_patch

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, data TEXT,
    PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
"""
_MAX_ROWS = 4000  # SQLite allows 32766 bound parameters per statement; 5 per row


def _upsert(rows: int) -> str:
    return "INSERT OR REPLACE INTO objects VALUES " + ",".join(["(?,?,?,?,?)"] * rows)


_UPSERT = [_upsert(n) for n in range(1, 65)]

# Kinds whose status is kept when a client creates an object (a node agent registers its Node
# with status); for the others, as in Kubernetes, create starts from an empty status.
_KEEP_STATUS_ON_CREATE = {"Node", "Event", "Namespace"}
FOREGROUND = "foregroundDeletion"  # the finalizer of an owner waiting for its dependents to go


@dataclass(eq=False, slots=True)
class _Entry:
    """One stored object: its JSON (the durable form) and what the store needs to look at quickly."""

    kind: Kind
    json: str
    rv: int
    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    fields: dict[str, str]
    owners: tuple[str, ...]
    finalizers: bool
    deleting: bool
    grace: int  # deletionGracePeriodSeconds still to wait for (a pod's node agent confirms with 0)

    @classmethod
    def of(cls, kind: Kind, obj: Object, rv: int) -> "_Entry":
        """Freeze ``obj`` at resourceVersion ``rv`` (sets it on ``obj``, which the caller then owns)."""
        meta = obj.metadata
        meta.resource_version = str(rv)
        return cls(kind, obj.to_json(), rv, meta.namespace or "", meta.name or "", meta.uid or "",
                   dict(meta.labels or {}), kind.field_values(obj),
                   tuple(r.uid for r in meta.owner_references or ()), bool(meta.finalizers),
                   bool(meta.deletion_timestamp), meta.deletion_grace_period_seconds or 0)

    def decode(self) -> Object:
        return self.kind.decode_json(self.json)


@dataclass(eq=False)
class _Change:
    type: str  # ADDED, MODIFIED, DELETED
    entry: _Entry
    old: _Entry | None  # the previous state, for selector transitions

    @property
    def rv(self) -> int:
        return self.entry.rv


class _Ticket:
    """Released by the committer once the writes it covers are durable (a bare lock is the cheapest)."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.error: BaseException | None = None


class _Watcher(WatchIterMixin):
    """One watch: filters changes and hands them over through a bounded buffer."""

    _END = object()
    MAX_BUFFERED = 20_000  # a reader this far behind is cut off with Gone, as the API server does

    def __init__(self, store: "EmbeddedStore", kind: Kind, namespace: str | None, labels: Selector,
                 fields, from_rv: int):
        self.store, self.kind, self.namespace = store, kind, namespace or None
        self.labels, self.fields, self.from_rv = labels, fields, from_rv
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stopped = False
        self.error: Gone | None = None

    def _matches(self, entry: _Entry | None) -> bool:
        return (entry is not None and (self.namespace is None or entry.namespace == self.namespace)
                and self.labels.matches(entry.labels) and self.fields.matches(entry.fields))

    def offer(self, change: _Change) -> None:
        if change.entry.kind is not self.kind or change.rv <= self.from_rv or self.error is not None:
            return
        now_match = self._matches(change.entry)
        if change.type == "DELETED":
            type_ = "DELETED" if now_match else None
        else:
            was_match = change.old is not None and self._matches(change.old)
            # An object that leaves the selector is, to this watcher, deleted.
            type_ = ("MODIFIED" if was_match else "ADDED") if now_match else "DELETED" if was_match else None
        if type_ is None:
            return
        if self.queue.qsize() >= self.MAX_BUFFERED:
            self.fail(Gone(f"watch of {self.kind.resource} fell {self.MAX_BUFFERED} events behind; "
                           "list again and watch from the list's resourceVersion"))
            return
        self.queue.put((type_, change.entry))

    def fail(self, error: Gone) -> None:
        """End the watch with an error its reader raises (the store drops failed watchers)."""
        self.error = error
        self.queue.put(self._END)

    def end(self) -> None:
        self.queue.put(self._END)

    def _take(self, timeout: float | None) -> tuple[str, _Entry] | None | bool:
        """The next (type, entry); False after a timeout; None once the watch has ended."""
        if self._stopped:
            return None
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return False
        if item is self._END:
            self._stopped = True
            if self.error is not None:
                raise self.error
            return None
        return item

    # -- the Watch protocol ------------------------------------------------------------------
    def next(self, timeout: float | None = None) -> WatchEvent | None:
        item = self._take(timeout)
        return WatchEvent(item[0], item[1].decode()) if item else None

    def next_raw(self, timeout: float | None = None) -> tuple[str, str] | None:
        """(type, object JSON) without decoding, for the HTTP watch stream; ("", "") after a timeout."""
        item = self._take(timeout)
        return None if item is None else ("", "") if item is False else (item[0], item[1].json)

    def stop(self) -> None:
        if not self._stopped:
            self.store._remove_watcher(self)
            self.end()  # wakes a reader blocked in next()
            self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped


def _empty_status(kind: Kind):
    return kind.model.model_fields["status"].default_factory()


class EmbeddedStore:
    """The Store interface in memory, persisted to ``path`` (SQLite) when one is given."""

    def __init__(self, path: str | os.PathLike | None = None, *, history: int = 50_000):
        self.path = str(path) if path else None
        self._lock = threading.RLock()
        self._objects: dict[Kind, dict[tuple[str, str], _Entry]] = {k: {} for k in REGISTRY.kinds}
        self._dependents: dict[str, set[tuple[Kind, str, str]]] = collections.defaultdict(set)
        self._by_uid: dict[str, _Entry] = {}
        self._rv = 0
        self._pending: list[tuple[_Change, _Ticket | None]] = []
        self._cv = threading.Condition(threading.Lock())
        self._watch_lock = threading.Lock()
        self._watchers: list[_Watcher] = []
        self._history: collections.deque[_Change] = collections.deque(maxlen=history)
        self._closed = False
        self._failed: BaseException | None = None
        self._db: sqlite3.Connection | None = None
        if self.path:
            self._open()
        self._floor = self._rv  # the oldest resourceVersion a watch can resume from
        self._committer = threading.Thread(target=self._commit_loop, name="store-committer", daemon=True)
        self._committer.start()

    # -- persistence -----------------------------------------------------------------------------
    def _open(self) -> None:
        assert self.path
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._rv = db.execute("SELECT coalesce(max(rv), 0) FROM objects").fetchone()[0]
        # Keep the newest row (tombstone or not) so the resourceVersion never goes back.
        db.execute("DELETE FROM objects WHERE data IS NULL AND rv < ?", (self._rv,))
        by_resource = {k.resource: k for k in REGISTRY.kinds}
        for resource, rv, data in db.execute("SELECT resource, rv, data FROM objects WHERE data IS NOT NULL"):
            kind = by_resource.get(resource)
            if kind is None:
                log.warning("store: skipping %s objects: kind not registered in this build", resource)
                continue
            entry = _Entry.of(kind, kind.decode_json(data), rv)
            self._objects.setdefault(kind, {})[(entry.namespace, entry.name)] = entry
            self._by_uid[entry.uid] = entry
            self._index_owners(entry, add=True)
            self._rv = max(self._rv, rv)
        self._db = db

    def _commit_loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                batch, self._pending = self._pending, []
                if not batch and self._closed:
                    return
            error: BaseException | None = None
            if self._db is not None:
                try:
                    self._persist([c for c, _ in batch])
                except BaseException as e:  # disk full, I/O error: the store stops serving (fail-stop)
                    log.exception("store: commit failed; refusing further reads and writes")
                    self._failed = error = e
                    with self._watch_lock:
                        for w in self._watchers:
                            w.fail(Gone(f"the store failed to commit ({e}); restart it"))
                        self._watchers.clear()
            if error is None:
                self._publish([c for c, _ in batch])
            for _, ticket in batch:
                if ticket is not None:
                    ticket.error = error
                    ticket.done.release()

    def _persist(self, changes: list[_Change]) -> None:
        # One multi-row statement per batch: every extra call into SQLite hands the GIL back and
        # forth, and under load each hand-back can cost a thread-switch interval. A deleted object
        # is written as a tombstone (data NULL) that keeps its resourceVersion; tombstones are
        # dropped when the store opens.
        final: dict[tuple[str, str, str], _Change] = {}
        for c in changes:
            final[(c.entry.kind.resource, c.entry.namespace, c.entry.name)] = c
        rows = [v for key, c in final.items()
                for v in (*key, c.rv, None if c.type == "DELETED" else c.entry.json)]
        db = self._db
        assert db is not None
        step = _MAX_ROWS * 5
        if len(rows) <= step:
            db.execute(_UPSERT[len(rows) // 5 - 1] if len(rows) // 5 <= len(_UPSERT) else
                       _upsert(len(rows) // 5), rows)
            return
        db.execute("BEGIN")
        try:
            for i in range(0, len(rows), step):
                chunk = rows[i:i + step]
                db.execute(_upsert(len(chunk) // 5), chunk)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _publish(self, changes: list[_Change]) -> None:
        with self._watch_lock:
            for c in changes:
                if len(self._history) == self._history.maxlen:
                    self._floor = self._history[0].rv
                self._history.append(c)
                for w in self._watchers:
                    w.offer(c)
            if any(w.error is not None for w in self._watchers):
                self._watchers = [w for w in self._watchers if w.error is None]

    # -- write helpers (call with self._lock held) ---------------------------------------------
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _queue(self, changes: list[_Change]) -> _Ticket:
        ticket = _Ticket()
        with self._cv:
            for c in changes[:-1]:
                self._pending.append((c, None))
            self._pending.append((changes[-1], ticket))
            self._cv.notify()
        return ticket

    def _wait(self, ticket: _Ticket) -> None:
        ticket.done.acquire()
        if ticket.error is not None:
            raise OSError(f"store write failed: {ticket.error}")

    def _index_owners(self, entry: _Entry, add: bool) -> None:
        for uid in entry.owners:
            keyset = self._dependents[uid]
            item = (entry.kind, entry.namespace, entry.name)
            if add:
                keyset.add(item)
            else:
                keyset.discard(item)
                if not keyset:
                    del self._dependents[uid]

    def _put(self, kind: Kind, obj: Object, old: _Entry | None, changes: list[_Change]) -> _Entry:
        entry = _Entry.of(kind, obj, self._next_rv())
        if old is not None:
            self._index_owners(old, add=False)
        self._objects[kind][(entry.namespace, entry.name)] = entry
        self._by_uid[entry.uid] = entry
        self._index_owners(entry, add=True)
        changes.append(_Change("ADDED" if old is None else "MODIFIED", entry, old))
        return entry

    def _remove(self, entry: _Entry, changes: list[_Change]) -> _Entry:
        """Remove the object now; its dependents are deleted in turn (background propagation)."""
        del self._objects[entry.kind][(entry.namespace, entry.name)]
        self._by_uid.pop(entry.uid, None)
        self._index_owners(entry, add=False)
        final = _Entry.of(entry.kind, entry.decode(), self._next_rv())
        changes.append(_Change("DELETED", final, entry))
        for dep in self._dependents_of(entry):
            self._delete_entry(dep, changes, "Background")
        if entry.kind.kind == "Namespace":
            for kind, objects in self._objects.items():
                if kind.namespaced:
                    for (ns, _), dep in sorted(objects.items()):
                        if ns == entry.name:
                            self._delete_entry(dep, changes, "Background")
        for uid in entry.owners:  # an owner deleted in the foreground waits for its last dependent
            owner = self._by_uid.get(uid)
            if owner is not None and owner.deleting and not self._dependents.get(uid):
                obj = owner.decode()
                if FOREGROUND in (obj.metadata.finalizers or []):
                    obj.metadata.finalizers = [f for f in obj.metadata.finalizers if f != FOREGROUND] or None
                    self._replace(owner.kind, owner, obj, changes)
        return final

    def _dependents_of(self, entry: _Entry) -> list[_Entry]:
        keys = sorted(self._dependents.get(entry.uid, ()), key=lambda t: (t[0].resource, t[1], t[2]))
        return [e for kind, ns, name in keys if (e := self._objects[kind].get((ns, name))) is not None]

    def _grace(self, entry: _Entry, requested: int | None) -> int:
        """Seconds a delete waits for the object's processes to stop (pods on a node), else 0."""
        if entry.kind.graceful is None:
            return 0
        default = entry.kind.graceful(entry.decode())
        if default is None:
            return 0
        if requested is None:
            return default
        return 1 if requested < 0 else requested  # as the API server: a negative grace means 1 s

    def _delete_entry(self, entry: _Entry, changes: list[_Change], propagation: str,
                      grace: int | None = None) -> None:
        """Delete as the Kubernetes API server does.

        The object goes at once unless something must happen first: finalizers to be removed, a
        graceful stop to be confirmed (a pod's node agent deletes again with grace 0), or, in the
        foreground, dependents to go first. Meanwhile it carries deletionTimestamp.
        """
        current = self._objects[entry.kind].get((entry.namespace, entry.name))
        if current is None:
            return
        if propagation == "Orphan":  # dependents lose this owner now, whatever else has to wait
            for dep in self._dependents_of(current):
                obj = dep.decode()
                obj.metadata.owner_references = [r for r in obj.metadata.owner_references or []
                                                 if r.uid != current.uid] or None
                self._put(dep.kind, obj, dep, changes)
        wait = self._grace(current, grace)
        foreground = propagation == "Foreground" and bool(self._dependents.get(current.uid))
        if current.deleting:
            if wait == 0 and current.grace > 0:  # the graceful stop is confirmed (or forced)
                obj = current.decode()
                obj.metadata.deletion_grace_period_seconds = 0
                if obj.metadata.finalizers:
                    self._put(current.kind, obj, current, changes)
                else:
                    self._remove(_Entry.of(current.kind, obj, current.rv), changes)
            return
        if not current.finalizers and not wait and not foreground:
            self._remove(current, changes)
            return
        obj = current.decode()
        obj.metadata.deletion_timestamp = now()
        obj.metadata.deletion_grace_period_seconds = wait
        if foreground:
            obj.metadata.finalizers = [*(obj.metadata.finalizers or []), FOREGROUND]
        self._put(current.kind, obj, current, changes)
        if foreground:
            for dep in self._dependents_of(current):
                self._delete_entry(dep, changes, "Background")

    def _entry(self, kind: Kind, namespace: str | None, name: str) -> _Entry:
        entry = self._objects[kind].get((namespace or "" if kind.namespaced else "", name))
        if entry is None:
            raise NotFound(f'{kind.resource} "{name}" not found', kind=kind.plural, name=name)
        return entry

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")
        if self._failed is not None:
            raise OSError(f"store is read-only after a failed commit: {self._failed}")

    @staticmethod
    def _validated(kind: Kind, obj: Object) -> Object:
        """Re-validate an object built in code, so nothing invalid is ever stored."""
        return kind.decode(obj.to_dict())

    def _check_rv(self, kind: Kind, obj: Object, entry: _Entry) -> None:
        rv = obj.metadata.resource_version
        if rv and rv != str(entry.rv):
            raise Conflict(f'Operation cannot be fulfilled on {kind.resource} "{entry.name}": the object has '
                           "been modified; please apply your changes to the latest version and try again",
                           kind=kind.plural, name=entry.name)
        if obj.metadata.uid and obj.metadata.uid != entry.uid:
            raise Conflict(f'Precondition failed for {kind.resource} "{entry.name}": UID in object meta '
                           f"({obj.metadata.uid}) does not match the stored object", kind=kind.plural,
                           name=entry.name)

    def _replace(self, kind: Kind, entry: _Entry, new: Object, changes: list[_Change]) -> _Entry:
        """Store ``new`` in place of ``entry``: bump generation on spec changes, finish pending deletes."""
        old = entry.decode()
        new.metadata.uid = old.metadata.uid
        new.metadata.creation_timestamp = old.metadata.creation_timestamp
        new.metadata.deletion_timestamp = old.metadata.deletion_timestamp
        new.metadata.deletion_grace_period_seconds = old.metadata.deletion_grace_period_seconds
        new.metadata.namespace = old.metadata.namespace
        new.metadata.generation = old.metadata.generation
        new.metadata.resource_version = old.metadata.resource_version
        if getattr(new, "spec", None) != getattr(old, "spec", None):
            new.metadata.generation = (old.metadata.generation or 1) + 1
        if new.to_json() == entry.json:
            return entry  # a no-op write does not bump the resourceVersion, as in Kubernetes
        if new.metadata.deletion_timestamp and not new.metadata.finalizers and not entry.grace:
            # The last finalizer is gone from an object being deleted: the delete completes now.
            return self._remove(_Entry.of(kind, new, entry.rv), changes)
        return self._put(kind, new, entry, changes)

    def _finish(self, changes: list[_Change]) -> None:
        if changes:
            self._wait(self._queue(changes))

    # -- the Store interface -----------------------------------------------------------------
    def create(self, obj):
        return self.create_many([obj])[0]

    def create_many(self, objs):
        """Create several objects in one durable commit: all of them or, on any error, none."""
        prepared = []
        for obj in objs:
            kind = REGISTRY.of(obj)
            obj = self._validated(kind, obj)  # a fresh object of our own: the caller may keep it
            if kind.namespaced and not obj.metadata.namespace:
                raise BadRequest(f"{kind.kind} {obj.metadata.name!r}: metadata.namespace is required",
                                 kind=kind.plural)
            if not kind.namespaced:
                obj.metadata.namespace = None
            prepared.append((kind, obj))
        if not prepared:
            return []
        changes: list[_Change] = []
        with self._lock:
            self._check_open()
            taken: set[tuple[Kind, str, str]] = set()
            for kind, obj in prepared:  # check everything before changing anything
                self._check_create(kind, obj.metadata, taken)
            for kind, obj in prepared:
                meta = obj.metadata
                meta.uid = str(uuid.uuid4())
                meta.creation_timestamp = now()
                meta.generation = 1
                meta.deletion_timestamp = None
                if kind.has_status and kind.kind not in _KEEP_STATUS_ON_CREATE:
                    obj.status = _empty_status(kind)
                self._put(kind, obj, None, changes)
            ticket = self._queue(changes)
        self._wait(ticket)
        return [obj for _, obj in prepared]

    def _check_create(self, kind: Kind, meta, taken: set[tuple[Kind, str, str]]) -> None:
        """Name the object (generateName) and check it may be created; call with the lock held."""
        namespace = meta.namespace or ""
        if not meta.name:
            if not meta.generate_name:
                raise Invalid(f"{kind.kind}: metadata.name: Required value: name or generateName is required",
                              kind=kind.plural, causes=[("metadata.name", "Required value")])
            while True:
                meta.name = meta.generate_name + secrets.token_hex(3)[:5]
                if (namespace, meta.name) not in self._objects[kind] and (kind, namespace, meta.name) not in taken:
                    break
        if kind.namespaced:
            ns = self._objects[REGISTRY.by_name("namespaces")].get(("", namespace))
            if ns is None:
                raise NotFound(f'namespaces "{namespace}" not found', kind="namespaces", name=namespace)
            if ns.deleting:
                raise Conflict(f'{kind.resource} "{meta.name}" is forbidden: unable to create new content '
                               f"in namespace {namespace} because it is being terminated")
        if (namespace, meta.name) in self._objects[kind] or (kind, namespace, meta.name) in taken:
            raise AlreadyExists(f'{kind.resource} "{meta.name}" already exists', kind=kind.plural, name=meta.name)
        taken.add((kind, namespace, meta.name))

    def get(self, model, namespace, name):
        kind = REGISTRY.of(model)
        with self._lock:
            self._check_open()
            entry = self._entry(kind, namespace, name)
        return entry.decode()

    def _select(self, model, namespace, label_selector, field_selector) -> tuple[list[_Entry], str]:
        kind = REGISTRY.of(model)
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, kind.selectable())
        with self._lock:
            self._check_open()
            entries = [e for (ns, _), e in self._objects[kind].items()
                       if (not namespace or ns == namespace) and labels.matches(e.labels)
                       and fields.matches(e.fields)]
            rv = self._rv
        entries.sort(key=lambda e: (e.namespace, e.name))
        return entries, str(rv)

    def list(self, model, namespace=None, label_selector=None, field_selector=None):
        entries, rv = self._select(model, namespace, label_selector, field_selector)
        return ListResult([e.decode() for e in entries], rv)

    def list_raw(self, model, namespace=None, label_selector=None, field_selector=None) -> tuple[list[str], str]:
        """Like list, but the objects' JSON text: what the HTTP server writes without decoding."""
        entries, rv = self._select(model, namespace, label_selector, field_selector)
        return [e.json for e in entries], rv

    def update(self, obj):
        return self._update(obj, status=False)

    def update_status(self, obj):
        return self._update(obj, status=True)

    def _update(self, obj, *, status: bool):
        kind = REGISTRY.of(obj)
        obj = self._validated(kind, obj)
        changes: list[_Change] = []
        with self._lock:
            self._check_open()
            entry = self._entry(kind, obj.metadata.namespace, obj.metadata.name or "")
            self._check_rv(kind, obj, entry)
            new = self._merge(kind, entry, obj, status)
            result = self._replace(kind, entry, new, changes)
            ticket = self._queue(changes) if changes else None
        if ticket:
            self._wait(ticket)
        return kind.decode_json(result.json)

    def _merge(self, kind: Kind, entry: _Entry, obj: Object, status: bool) -> Object:
        """The object to store for an update of the main resource or of the status subresource."""
        current = kind.decode_json(entry.json)
        if status:
            if not kind.has_status:
                raise BadRequest(f"{kind.resource} has no status subresource")
            current.status = obj.status
            return current
        if kind.has_status:
            obj.status = current.status
        if kind.prepare_update:
            kind.prepare_update(current, obj)
        if kind.update_errors:
            errors = kind.update_errors(current, obj)
            if errors:
                raise kind.invalid(entry.name, errors)
        return obj

    def patch(self, model, namespace, name, patch, subresource=None):
        kind = REGISTRY.of(model)
        if not isinstance(patch, dict):
            raise BadRequest("a merge patch must be a JSON object")
        changes: list[_Change] = []
        with self._lock:
            self._check_open()
            entry = self._entry(kind, namespace, name)
            patched = merge_patch(json.loads(entry.json), patch)
            for path, value in (("metadata.name", name), ("metadata.namespace", entry.namespace or None)):
                field_ = path.split(".")[1]
                if (patched.get("metadata") or {}).get(field_) != value:
                    raise Invalid(f'{kind.kind} "{name}": {path}: Invalid value: may not be changed by a patch',
                                  kind=kind.plural, name=name, causes=[(path, "may not be changed")])
            new = kind.decode(patched)
            self._check_rv(kind, new, entry)
            new = self._merge(kind, entry, new, subresource == "status")
            result = self._replace(kind, entry, new, changes)
            ticket = self._queue(changes) if changes else None
        if ticket:
            self._wait(ticket)
        return kind.decode_json(result.json)

    def delete(self, model, namespace, name, propagation="Background", grace_period_seconds=None):
        kind = REGISTRY.of(model)
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise BadRequest(f"propagationPolicy: Unsupported value: {propagation!r}: supported values: "
                             '"Orphan", "Background", "Foreground"')
        changes: list[_Change] = []
        with self._lock:
            self._check_open()
            entry = self._entry(kind, namespace, name)
            self._delete_entry(entry, changes, propagation, grace_period_seconds)
            # The object as it is now: still there while it waits (finalizers, a graceful stop), else
            # its last state.
            result = self._objects[kind].get((entry.namespace, entry.name)) or next(
                c.entry for c in changes if c.type == "DELETED" and c.entry.uid == entry.uid)
            ticket = self._queue(changes) if changes else None
        if ticket:
            self._wait(ticket)
        return result.decode()

    def bind(self, namespace, name, node_name):
        kind = REGISTRY.by_name("pods")
        changes: list[_Change] = []
        with self._lock:
            self._check_open()
            entry = self._entry(kind, namespace, name)
            pod = kind.decode_json(entry.json)
            if pod.metadata.deletion_timestamp:
                raise Conflict(f'pod "{name}" is being deleted, cannot be assigned to a host')
            if pod.spec.node_name:
                raise Conflict(f'pod {name} is already assigned to node "{pod.spec.node_name}"',
                               kind="pods", name=name)
            pod.spec.node_name = node_name
            pod.status.conditions = set_condition(pod.status.conditions, "PodScheduled", "True")
            entry = self._put(kind, pod, entry, changes)
            ticket = self._queue(changes)
        self._wait(ticket)
        return kind.decode_json(entry.json)

    def watch(self, model, namespace=None, resource_version=None, label_selector=None, field_selector=None):
        kind = REGISTRY.of(model)
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, kind.selectable())
        with self._lock:
            self._check_open()
            if resource_version in (None, "", "0"):
                watcher = _Watcher(self, kind, namespace, labels, fields, self._rv)
                for (ns, _), e in sorted(self._objects[kind].items()):
                    if watcher._matches(e):
                        watcher.queue.put(("ADDED", e))
                with self._watch_lock:
                    # Pending (unpublished) changes are already in the snapshot: skip them.
                    self._watchers.append(watcher)
                return watcher
            try:
                from_rv = int(resource_version)
            except ValueError:
                raise BadRequest(f"invalid resourceVersion {resource_version!r}") from None
            with self._watch_lock:
                if from_rv < self._floor:
                    raise Gone(f"too old resource version: {from_rv} ({self._floor})")
                watcher = _Watcher(self, kind, namespace, labels, fields, from_rv)
                for change in self._history:
                    watcher.offer(change)
                if watcher.error is None:  # one that overflowed while catching up only raises Gone
                    self._watchers.append(watcher)
            return watcher

    def _remove_watcher(self, watcher: _Watcher) -> None:
        with self._watch_lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    @property
    def resource_version(self) -> int:
        return self._rv

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            with self._cv:
                self._closed = True
                self._cv.notify()
        self._committer.join()
        with self._watch_lock:
            for w in self._watchers:
                w.end()
            self._watchers.clear()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
