"""The node agent (mlplane's kubelet): registers this machine as a Node and runs its pods' containers.

It watches the pods bound to its node and, for each, keeps a record (``process.PodRecord``) of
every container: the running process, how earlier attempts ended, and the crash-loop backoff.
One sync per pod key, on the controller runtime's work queue, compares the pod with that record,
starts or restarts what the restart policy asks for, kills what must stop, and writes the pod's
status. Process exits arrive from a waiter thread per own process, or from a slow poll for
processes adopted from an earlier agent on the same data dir; both only record the exit and
queue the pod. Stopping the agent leaves containers running, as stopping a kubelet does; the
next agent on the data dir adopts them (see ``process``).

Upstream behaviour followed here, by source:
- phase: pkg/kubelet/kubelet_pods.go getPhase (a terminated container that will be restarted
  keeps the pod Running; all exited 0 -> Succeeded; otherwise Failed), generalised to the
  per-container restartPolicy;
- conditions: pkg/kubelet/status/generate.go (ContainersReady/Ready with ContainersNotReady,
  PodCompleted, PodFailed; Initialized with PodCompleted once the pod succeeded);
- restarts: the kubelet's CrashLoopBackOff, base * 2^(n-1) capped at 5 minutes and reset after
  a container ran 10 minutes (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/
  #container-restarts); messages as in pkg/kubelet/kuberuntime/kuberuntime_container.go;
- activeDeadlineSeconds: pkg/kubelet/active_deadline.go (reason DeadlineExceeded);
- graceful deletion (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/
  #pod-termination): a pod with deletionTimestamp gets SIGTERM, SIGKILL after its
  deletionGracePeriodSeconds, a last status, and then a delete with grace period 0 that removes it
  (pkg/kubelet/status/status_manager.go); its logs stay readable until then. A pod removed
  outright (a forced delete) has its processes killed at once.

Pod IPs (``podips``): each pod gets its own loopback address (127.a.b.c) as status.podIP, the
value of a ``fieldRef: status.podIP`` variable; status.hostIP stays the node's 127.0.0.1. The address
is kept in the pod's record, so an agent that restarts gives an adopted pod the same one, and goes
back to the pool when the pod ends.

Devices (``devices``): the agent publishes this node's ResourceSlices at start and re-checks them
at every heartbeat (a changed node configuration file, a GPU that came or went), and gives each
container the environment that names its allocated devices; a container whose claims are not
allocated yet waits in ContainerCreating, as the kubelet's PrepareDynamicResources makes it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from mlplane.api.core import (Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
                              ContainerStateWaiting, ContainerStatus, Node, NodeAddress, NodeStatus, Pod,
                              PodStatus)
from mlplane.api.errors import AlreadyExists, Conflict, NotFound
from mlplane.api.meta import Condition, ObjectMeta, find_condition, now, parse_time, set_condition
from mlplane.control.node import devices, logs, resources
from mlplane.control.node.podips import PodIPs
from mlplane.control.node.process import (HOST_IP, STATE_FILE, Attempt, ConfigError, ContainerRecord, PodRecord,
                                          StartError, argv_of, declared_env, find_executable, process_env, spawn,
                                          terminated, working_dir)
from mlplane.control.runtime import Controller, EventRecorder, Informer, Requeue
from mlplane.control.store.base import Store

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0  # seconds: the kubelet's cap on CrashLoopBackOff
BACKOFF_RESET = 600.0  # a container that ran this long starts a fresh crash loop
GRACE_CAP = 60  # longest wait between SIGTERM and SIGKILL, whatever terminationGracePeriodSeconds says
ADOPTED_POLL = 0.2  # seconds between checks on processes adopted from an earlier agent
READY_MESSAGE = "mlplane node agent is posting ready status"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
CLAIM_RETRY = 1.0  # seconds between looks at a container whose claims are not allocated yet


def go_duration(seconds: float) -> str:
    """A duration as Go prints one (10s, 1m20s, 5m0s, 50ms): the kubelet's back-off messages use it."""
    seconds = round(seconds, 6)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def _pod_ref(pod: Pod) -> str:
    return f"{pod.name}_{pod.namespace}({pod.uid})"  # the kubelet's format.Pod


def _restarts(pod: Pod, container: Container, exit_code: int) -> bool:
    policy = container.restart_policy or pod.spec.restart_policy
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def _ran_for(t: ContainerStateTerminated) -> float:
    start, end = parse_time(t.started_at), parse_time(t.finished_at)
    return (end - start).total_seconds() if start and end else 0.0


class NodeAgent:
    """Runs the pods bound to ``node_name`` as local processes; see the module docstring."""

    def __init__(self, store: Store, data_dir: str | Path, node_name: str | None = None, *, cpu: str | None = None,
                 memory: str | None = None, max_pods: int = 110, labels: dict | None = None,
                 crash_backoff: float = 10.0, heartbeat: float = 10.0, node_config: str | Path | None = None):
        self.node_name = node_name or resources.default_node_name()
        for what, meta in (("node name", {"name": self.node_name}),
                           ("node labels", {"labels": resources.labels(self.node_name, labels)})):
            try:
                ObjectMeta.model_validate(meta)
            except ValidationError as e:
                raise ValueError(f"invalid {what}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        if crash_backoff < 0:
            raise ValueError(f"invalid --crash-backoff {crash_backoff!r}: must not be negative")
        if heartbeat <= 0:
            raise ValueError(f"invalid heartbeat {heartbeat!r}: must be greater than zero")
        # A bad node configuration file fails here (NodeConfigError is a ValueError), before anything runs.
        self.node_config = Path(node_config) if node_config is not None else None
        self._config_stamp = self._stamp()
        self._config_devices = devices.load_node_config(self.node_config) if self.node_config else None
        self.capacity = resources.capacity(cpu, memory, max_pods)
        self.labels = resources.labels(self.node_name, labels)
        self.store = store
        self.data_dir = Path(data_dir).resolve()
        self.crash_backoff, self.heartbeat = crash_backoff, heartbeat
        self.recorder = EventRecorder(store, "kubelet", host=self.node_name)
        self.informer = Informer(store, Pod, field_selector=f"spec.nodeName={self.node_name}")
        self.controller = Controller(f"node-agent/{self.node_name}", self._sync, workers=4)
        self._node_info = resources.node_info()
        self._base_env = dict(os.environ)
        self._pods: dict[str, PodRecord] = {}  # by pod uid
        self._ips = PodIPs()  # each live pod's own loopback address (guarded by _lock)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._adopted: list[tuple[PodRecord, str, Attempt]] = []
        self._adopted_cv = threading.Condition()
        self._threads: list[threading.Thread] = []  # heartbeat and adoption poller
        self._helpers: set[threading.Thread] = set()  # process waiters and killers
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "NodeAgent":
        """Register the Node, adopt what an earlier agent left running, and start running pods."""
        if self._started:
            return self
        self._started = True
        self._register_node()
        self.publish_devices()
        self.informer.start()
        if not self.informer.wait_synced(30):
            self.informer.stop()
            raise RuntimeError(f"node agent {self.node_name}: could not list pods from the store")
        self._adopt_all()
        self.controller.watch(self.informer)
        self.controller.start()
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._poll_adopted, "adopted-poll")):
            t = threading.Thread(target=target, name=f"node-agent-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("node agent %s: running pods (capacity %s)", self.node_name, self.capacity)
        return self

    def stop(self) -> None:
        """Stop watching and reporting. Containers keep running for the next agent on this data dir."""
        if not self._started or self._stop.is_set():
            return
        self._stop.set()
        with self._adopted_cv:
            self._adopted_cv.notify_all()
        self.controller.stop()
        self.informer.stop()
        for t in self._threads:
            t.join(timeout=5)

    def kill_all(self, timeout: float = 5.0) -> None:
        """Stop the agent and SIGKILL every container process group it runs (tests, demo shutdown)."""
        self.stop()
        with self._lock:
            records = list(self._pods.values())
        attempts = [c.attempt for r in records for c in r.containers.values()
                    if c.attempt is not None and c.terminated is None]
        for a in attempts:
            a.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + timeout
        for a in attempts:
            if a.popen is not None:
                try:
                    a.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass  # reported below
            while a.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if a.alive():
                log.warning("node agent %s: process %d survived SIGKILL", self.node_name, a.pid)
        for t in list(self._helpers):
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _helper(self, target, *args, name: str) -> threading.Thread:
        def run():
            try:
                target(*args)
            finally:
                self._helpers.discard(threading.current_thread())
        t = threading.Thread(target=run, name=name, daemon=True)
        self._helpers.add(t)
        t.start()
        return t

    # -- the Node --------------------------------------------------------------------------------
    def _node_status(self, old: NodeStatus | None) -> NodeStatus:
        ts = now()
        prev = find_condition(old.conditions if old else None, "Ready")
        since = prev.last_transition_time if prev is not None and prev.status == "True" else None
        ready = Condition(type="Ready", status="True", reason="KubeletReady", message=READY_MESSAGE,
                          last_heartbeat_time=ts, last_transition_time=since or ts)
        others = [c for c in (old.conditions if old else None) or [] if c.type != "Ready"]
        return NodeStatus(capacity=dict(self.capacity), allocatable=dict(self.capacity),
                          conditions=[*others, ready],
                          addresses=[NodeAddress(type="InternalIP", address=HOST_IP),
                                     NodeAddress(type="Hostname", address=socket.gethostname())],
                          node_info=self._node_info)

    def _register_node(self) -> None:
        node = Node(metadata=ObjectMeta(name=self.node_name, labels=self.labels), status=self._node_status(None))
        try:
            self.store.create(node)
            return
        except AlreadyExists:
            pass
        for _ in range(10):
            node = self.store.get(Node, None, self.node_name)
            merged = {**(node.metadata.labels or {}), **self.labels}
            try:
                if merged != node.metadata.labels:
                    node.metadata.labels = merged
                    node = self.store.update(node)
                node.status = self._node_status(node.status)
                self.store.update_status(node)
                return
            except Conflict:
                continue
        raise Conflict(f"node agent: could not update node {self.node_name!r}: it keeps changing")

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self._post_heartbeat()
                self.publish_devices()
            except Exception as e:  # the store may be restarting: try again at the next beat
                log.warning("node agent: heartbeat for node %s failed: %s", self.node_name, e)

    def _post_heartbeat(self) -> None:
        for _ in range(5):
            try:
                node = self.store.get(Node, None, self.node_name)
            except NotFound:
                log.warning("node agent: node %s was deleted; registering it again", self.node_name)
                self._register_node()
                return
            node.status = self._node_status(node.status)
            try:
                self.store.update_status(node)
                return
            except Conflict:
                continue

    # -- devices ---------------------------------------------------------------------------------
    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.node_config.stat() if self.node_config else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def _inventory(self) -> list[devices.DriverDevices]:
        """The node configuration's devices (re-read when the file changed), else NVIDIA GPUs by NVML."""
        if self.node_config is None:
            return devices.nvml_devices()
        stamp = self._stamp()
        if stamp != self._config_stamp:
            try:
                self._config_devices = devices.load_node_config(self.node_config)
                log.info("node agent %s: node config %s changed; publishing its devices", self.node_name,
                         self.node_config)
            except devices.NodeConfigError as e:
                log.warning("node agent %s: keeping the devices published before: %s", self.node_name, e)
            self._config_stamp = stamp
        return self._config_devices or []

    def publish_devices(self) -> bool:
        """Make this node's ResourceSlices match its devices now; returns whether any slice was written."""
        node = self.store.get(Node, None, self.node_name)
        return devices.publish_slices(self.store, node, self._inventory())

    # -- process exits ---------------------------------------------------------------------------
    def _adopt_all(self) -> None:
        """Load every pod record on the data dir; watch its still-running processes; queue its pod."""
        root = self.data_dir / "pods"
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            if not (folder / STATE_FILE).is_file():
                continue
            try:
                rec = PodRecord.load(folder)
            except (OSError, ValueError, KeyError, TypeError, ValidationError) as e:
                log.warning("node agent: ignoring unreadable pod record %s: %s", folder / STATE_FILE, e)
                continue
            with self._lock:
                self._pods[rec.uid] = rec
                if rec.pod_ip and not rec.pod_ip_released:
                    rec.pod_ip = self._ips.assign(rec.uid, rec.pod_ip)  # the same address as before
            for name, c in rec.containers.items():
                if c.running:
                    assert c.attempt is not None
                    log.info("node agent: adopting %s container %s (pid %d)", rec.key, name, c.attempt.pid)
                    with self._adopted_cv:
                        self._adopted.append((rec, name, c.attempt))
                        self._adopted_cv.notify()
            self.controller.queue.add(rec.key)

    def _poll_adopted(self) -> None:
        while not self._stop.is_set():
            with self._adopted_cv:
                if not self._adopted:
                    self._adopted_cv.wait()
                    continue
                self._adopted_cv.wait(ADOPTED_POLL)
                watched = list(self._adopted)
            ended = [e for e in watched if not e[2].alive()]
            if ended:
                with self._adopted_cv:
                    self._adopted = [e for e in self._adopted if e not in ended]
                for rec, name, attempt in ended:
                    self._exited(rec, name, attempt)

    def _wait_own(self, rec: PodRecord, name: str, attempt: Attempt) -> None:
        assert attempt.popen is not None
        attempt.popen.wait()
        self._exited(rec, name, attempt)

    def _exited(self, rec: PodRecord, name: str, attempt: Attempt) -> None:
        """Record how a container process ended and queue its pod."""
        try:
            if self._stop.is_set():
                return  # the next agent reads the exit file
            result = attempt.result()
            # The container's other processes end with it, as they do in a pod's PID namespace.
            attempt.signal_group(signal.SIGKILL, record=False)
            with rec.lock:
                c = rec.containers.get(name)
                if c is None or c.attempt is not attempt or c.terminated is not None:
                    return
                c.terminated = result
                rec.save()
            log.info("node agent: %s container %s (pid %d) exited with %d", rec.key, name, attempt.pid,
                     result.exit_code)
            self.controller.queue.add(rec.key)
        except Exception:
            log.exception("node agent: recording the exit of %s container %s failed", rec.key, name)
        finally:
            attempt.exited.set()

    # -- syncing one pod -------------------------------------------------------------------------
    def _sync(self, key: str) -> Requeue | None:
        pod = self.informer.get(key)
        with self._lock:
            records = [r for r in self._pods.values() if r.key == key]
        for rec in records:
            if pod is None or rec.uid != pod.uid:
                self._retire(rec)
        if pod is None:
            return None
        rec = self._record_for(pod)
        if rec is None:
            if pod.metadata.deletion_timestamp:
                self._confirm_deletion(pod)  # nothing of it runs here
            return None
        rec.last_seen = pod
        self._ensure_ip(pod, rec)
        requeue = self._sync_pod(pod, rec)
        if pod.metadata.deletion_timestamp:
            with rec.lock:
                stopped = not rec.live()
            if stopped:
                self._write_final_status(rec)
                self._release_ip(rec)
                self._confirm_deletion(pod)
            return None
        self._write_status(rec)
        with rec.lock:
            ended = not rec.live() and self._phase(pod, rec) in ("Succeeded", "Failed")
        if ended or pod.terminal:
            self._release_ip(rec)
        return requeue

    def _ensure_ip(self, pod: Pod, rec: PodRecord) -> None:
        """Give the pod its own loopback address (the one its record or status names, when free)."""
        with self._lock:
            if rec.pod_ip_released or rec.removed:
                return
            ip = self._ips.assign(rec.uid, rec.pod_ip or pod.status.pod_ip)
        if ip != rec.pod_ip:
            with rec.lock:
                rec.pod_ip = ip
                rec.save()

    def _release_ip(self, rec: PodRecord) -> None:
        """The pod has ended: its address may go to another pod (its status keeps naming it)."""
        with self._lock:
            if rec.pod_ip_released:
                return
            self._ips.release(rec.uid)
        with rec.lock:
            rec.pod_ip_released = True
            rec.save()

    def _record_for(self, pod: Pod) -> PodRecord | None:
        with self._lock:
            rec = self._pods.get(pod.uid)
            if rec is None and not pod.terminal and not pod.metadata.deletion_timestamp:
                grace = pod.spec.termination_grace_period_seconds
                rec = PodRecord(pod.namespace, pod.name, pod.uid,
                                folder=logs.pod_dir(self.data_dir, pod.namespace, pod.name, pod.uid),
                                grace=min(GRACE_CAP, 30 if grace is None else grace))
                self._pods[pod.uid] = rec
            return rec

    def _retire(self, rec: PodRecord) -> None:
        """The pod is gone from the store (deleted with no grace period, or while no agent ran): kill
        its processes at once, then forget it and remove its files."""
        with rec.lock:
            if rec.live():
                self._terminate(rec, rec.last_seen, 0)
                return
            rec.removed = True
        shutil.rmtree(rec.folder, ignore_errors=True)
        with self._lock:
            self._pods.pop(rec.uid, None)
            self._ips.release(rec.uid)
        log.info("node agent: %s (uid %s) is gone; removed its records", rec.key, rec.uid)

    def _deadline(self, pod: Pod, rec: PodRecord) -> float | None:
        if pod.spec.active_deadline_seconds is None:
            return None
        start = parse_time(pod.status.start_time or rec.accepted_at)
        return start.timestamp() + pod.spec.active_deadline_seconds if start else None

    def _sync_pod(self, pod: Pod, rec: PodRecord) -> Requeue | None:
        if pod.metadata.deletion_timestamp:
            grace = pod.metadata.deletion_grace_period_seconds
            self._terminate(rec, pod, rec.grace if grace is None else min(GRACE_CAP, grace))
            return None
        if pod.terminal or rec.terminating or rec.deadline_exceeded:
            self._terminate(rec, pod, rec.grace)
            return None
        deadline = self._deadline(pod, rec)
        if deadline is not None and time.time() >= deadline:
            with rec.lock:
                rec.deadline_exceeded = True
                rec.save()
            self.recorder.normal(pod, "DeadlineExceeded", DEADLINE_MESSAGE)
            self._terminate(rec, pod, rec.grace)
            return None
        wake = [deadline] if deadline is not None else []
        for container in pod.spec.containers:
            at = self._sync_container(pod, rec, container)
            if at is not None:
                wake.append(at)
        return Requeue(max(0.0, min(wake) - time.time())) if wake else None

    def _sync_container(self, pod: Pod, rec: PodRecord, container: Container) -> float | None:
        """Start, restart or leave one container; returns when to look again (a pending restart)."""
        with rec.lock:
            c = rec.container(container.name)
            if c.running or c.config_error:
                return None
            if c.terminated is not None:
                if not _restarts(pod, container, c.terminated.exit_code):
                    return None
                t = time.time()
                if c.restart_at is None:
                    if _ran_for(c.terminated) >= BACKOFF_RESET:
                        c.backoff = 0
                    c.backoff += 1
                    c.restart_at = t + self._backoff_delay(c)
                    rec.save()
                    self.recorder.warning(pod, "BackOff", f"Back-off restarting failed container "
                                                          f"{container.name} in pod {_pod_ref(pod)}")
                if t < c.restart_at:
                    return c.restart_at
                c.last_terminated, c.terminated, c.attempt = c.terminated, None, None
                c.restart_count += 1
                c.restart_at = None
            self._start(pod, rec, container, c)
            if c.attempt is None and c.terminated is None and not c.config_error:
                return time.time() + CLAIM_RETRY  # its devices are not ready yet
            # A start that failed is a terminated attempt too: look again now to apply the restart policy.
            return time.time() if c.terminated is not None else None

    def _backoff_delay(self, c: ContainerRecord) -> float:
        return min(MAX_BACKOFF, self.crash_backoff * 2 ** (max(c.backoff, 1) - 1))

    def _start(self, pod: Pod, rec: PodRecord, container: Container, c: ContainerRecord) -> None:
        """Start the container's current attempt (call with rec.lock held)."""
        name = container.name
        try:
            declared = declared_env(pod, container, rec.pod_ip)
        except ConfigError as e:
            c.config_error = str(e)
            self.recorder.warning(pod, "Failed", f"Error: {e}")
            return
        try:
            device_env = devices.container_device_env(self.store, pod, container)
        except devices.ClaimNotReady as e:
            self.recorder.warning(pod, "FailedPrepareDynamicResources",
                                  f"Failed to prepare dynamic resources: {e}")
            return
        try:
            # Device variables come last, as a runtime applies CDI edits after the container's env.
            env = {**process_env(self._base_env, pod, declared), **device_env}
            argv = argv_of(container, declared)
            cwd = working_dir(container)
            find_executable(argv[0], env.get("PATH"), cwd)
            log_path = logs.container_log(self.data_dir, pod.namespace, pod.name, pod.uid, name, c.restart_count)
            attempt = spawn(argv, env, cwd, log_path, log_path.with_suffix(".exit"))
        except StartError as e:
            self._start_failed(pod, rec, c, name, str(e))
            return
        except Exception as e:  # a weird pod must never take the agent down
            log.exception("node agent: starting %s container %s failed", rec.key, name)
            self._start_failed(pod, rec, c, name, f"failed to start container process: {e}")
            return
        c.attempt = attempt
        try:
            rec.save()  # before the command runs: an agent killed from here on leaves a record to adopt
        except BaseException:
            c.attempt = None
            attempt.abandon()
            raise
        attempt.release()
        self._helper(self._wait_own, rec, name, attempt, name=f"wait-{attempt.pid}")
        log.info("node agent: started %s container %s (pid %d)", rec.key, name, attempt.pid)
        self.recorder.normal(pod, "Created", f"Created container: {name}")
        self.recorder.normal(pod, "Started", f"Started container {name}")

    def _start_failed(self, pod: Pod, rec: PodRecord, c: ContainerRecord, name: str, message: str) -> None:
        ts = now()
        c.terminated = terminated(128, reason="StartError", message=message, started_at=ts, finished_at=ts,
                                  container_id=None)
        rec.save()
        log.info("node agent: %s container %s cannot start: %s", rec.key, name, message)
        self.recorder.warning(pod, "Failed", f"Error: {message}")

    def _terminate(self, rec: PodRecord, pod: Pod | None, grace: float) -> None:
        """Stop every running container of the pod: SIGTERM, then SIGKILL after ``grace`` seconds
        (at once when 0, even while an earlier, longer grace period runs)."""
        with rec.lock:
            rec.terminating = True
            live = [(name, c.attempt) for name, c in rec.containers.items() if c.running]
            if not live:
                return
            if grace <= 0:
                for _, a in live:
                    a.signal_group(signal.SIGKILL)
            if rec.killer is not None and rec.killer.is_alive():
                return
            rec.killer = self._helper(self._kill, rec, [a for _, a in live], grace, name=f"kill-{rec.name}")
        if pod is not None:
            for name, _ in live:
                self.recorder.normal(pod, "Killing", f"Stopping container {name}")

    def _kill(self, rec: PodRecord, attempts: list[Attempt], grace: float) -> None:
        if grace > 0:
            for a in attempts:
                a.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for a in attempts:
                a.exited.wait(max(0.0, deadline - time.monotonic()))
        for a in attempts:
            if not a.exited.is_set():
                a.signal_group(signal.SIGKILL)
        for a in attempts:
            a.exited.wait(5)
        self.controller.queue.add(rec.key)

    def _confirm_deletion(self, pod: Pod) -> None:
        """Every process of the deleted pod has stopped: finish its graceful deletion, as the kubelet's
        status manager does (pkg/kubelet/status/status_manager.go: delete with grace period 0)."""
        try:
            if self.store.get(Pod, pod.namespace, pod.name).uid != pod.uid:
                return  # gone already, and the name taken again
            self.store.delete(Pod, pod.namespace, pod.name, grace_period_seconds=0)
        except NotFound:
            return
        log.info("node agent: %s (uid %s) stopped; confirmed its deletion", pod.key, pod.uid)

    # -- status ----------------------------------------------------------------------------------
    def _write_final_status(self, rec: PodRecord) -> None:
        """The last status of a deleted pod; best effort, as the pod is about to go."""
        try:
            self._write_status(rec)
        except Exception as e:
            log.warning("node agent: could not write the final status of %s: %s", rec.key, e)

    def _write_status(self, rec: PodRecord) -> None:
        """Write the pod's status from the record, re-reading the pod after a Conflict."""
        for _ in range(10):
            try:
                pod = self.store.get(Pod, rec.namespace, rec.name)
            except NotFound:
                return
            if pod.uid != rec.uid:
                return
            status = self._pod_status(pod, rec)
            if status == pod.status:
                return
            pod.status = status
            try:
                self.store.update_status(pod)
                return
            except Conflict:
                continue
        raise Conflict(f"pod {rec.key}: status kept changing under the node agent")

    def _pod_status(self, pod: Pod, rec: PodRecord) -> PodStatus:
        status = pod.status.model_copy(deep=True)
        with rec.lock:
            statuses = [self._container_status(pod, rec, ctr) for ctr in pod.spec.containers]
            phase = self._phase(pod, rec)
        if not pod.terminal:  # a terminal phase is final (the kubelet never leaves one)
            status.phase = phase
            if rec.deadline_exceeded:
                status.reason, status.message = "DeadlineExceeded", DEADLINE_MESSAGE
        status.container_statuses = sorted(statuses, key=lambda s: s.name)
        status.start_time = status.start_time or rec.accepted_at
        status.host_ip = HOST_IP
        status.pod_ip = rec.pod_ip or status.pod_ip
        phase = status.phase
        conditions = set_condition(status.conditions, "PodReadyToStartContainers",
                                   "False" if phase in ("Succeeded", "Failed") else "True")
        conditions = set_condition(conditions, "Initialized", "True",
                                   "PodCompleted" if phase == "Succeeded" else None)
        if phase in ("Succeeded", "Failed"):
            ready, reason, message = "False", "PodCompleted" if phase == "Succeeded" else "PodFailed", None
        else:
            unready = [s.name for s in statuses if not s.ready]
            ready, reason, message = ("False", "ContainersNotReady",
                                      f"containers with unready status: [{' '.join(unready)}]") if unready \
                else ("True", None, None)
        conditions = set_condition(conditions, "ContainersReady", ready, reason, message)
        status.conditions = set_condition(conditions, "Ready", ready, reason, message)
        return status

    def _container_status(self, pod: Pod, rec: PodRecord, ctr: Container) -> ContainerStatus:
        c = rec.containers.get(ctr.name) or ContainerRecord()
        last = ContainerState(terminated=c.last_terminated) if c.last_terminated else ContainerState()
        if c.config_error:
            state = ContainerState(waiting=ContainerStateWaiting(reason="CreateContainerConfigError",
                                                                 message=c.config_error))
        elif c.running:
            assert c.attempt is not None
            state = ContainerState(running=ContainerStateRunning(started_at=c.attempt.started_at))
        elif c.terminated is not None and c.restart_at is not None and not rec.terminating:
            delay = go_duration(self._backoff_delay(c))
            state = ContainerState(waiting=ContainerStateWaiting(
                reason="CrashLoopBackOff",
                message=f"back-off {delay} restarting failed container={ctr.name} pod={_pod_ref(pod)}"))
            last = ContainerState(terminated=c.terminated)
        elif c.terminated is not None:
            state = ContainerState(terminated=c.terminated)
        else:
            state = ContainerState(waiting=ContainerStateWaiting(reason="ContainerCreating"))
        return ContainerStatus(name=ctr.name, state=state, last_state=last, ready=c.running,
                               restart_count=c.restart_count, image=ctr.image or "",
                               container_id=c.attempt.container_id if c.attempt else None, started=c.running)

    def _phase(self, pod: Pod, rec: PodRecord) -> str:
        if rec.deadline_exceeded:
            return "Failed"
        waiting = running = stopped = succeeded = 0
        restarting = False
        for ctr in pod.spec.containers:
            c = rec.containers.get(ctr.name)
            if c is None or c.terminated is None and not c.running:
                waiting += 1
            elif c.running:
                running += 1
            else:
                assert c.terminated is not None
                stopped += 1
                succeeded += c.terminated.exit_code == 0
                restarting |= not rec.terminating and _restarts(pod, ctr, c.terminated.exit_code)
        if waiting:
            return "Pending"
        if running or restarting:
            return "Running"
        return "Succeeded" if stopped == succeeded else "Failed"
