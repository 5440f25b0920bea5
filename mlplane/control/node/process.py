"""Containers as local processes: argv and environment, the exit-status shim, and adoption records.

How a container becomes a process
    argv is ``command + args`` with Kubernetes ``$(VAR)`` expansion, never a shell string (a user
    who wants a shell writes ``sh -c ...``). The environment is the agent's own (so PATH, HOME and
    the Python environment work in local mode), then ``HOSTNAME``, then the container's ``env``.
    The executable is looked up on the container's PATH before anything starts, so a missing one
    is reported with the container runtime's wording instead of a shell's.

The shim
    Each container runs under ``/bin/sh -c SHIM mlplane-shim EXIT_FILE ARGV...``, in a session of
    its own (so the process group is the container). The shim first waits for "go" on its stdin,
    which the agent sends once the process's pid is saved in the pod's record: an agent killed in
    between closes the pipe by dying, and the shim then exits without running anything, so no
    container ever runs unrecorded. The shim then runs ``(exec "$@")`` and writes the
    exit status to EXIT_FILE, so the status survives an agent that is not there to ``wait()`` for
    it. Safe with any argv: the script is a constant and every user string arrives as a
    positional parameter; ``"$@"`` hands each one to ``exec`` as one argument, never re-parsed
    (no splitting, globbing, or expansion). ``exec`` in the subshell makes the user's program
    the shim's direct child with its argv[0] as written, the shell's own stderr goes to
    /dev/null (no "Killed" lines in the container log), and the shim traps HUP/INT/QUIT/TERM so
    that a group-wide SIGTERM reaches the program while the shim stays to record how it ended.
    Shells report death by signal N as 128+N, as Kubernetes does; the signal field is derived from
    that (a program that itself exits with 129..159 reads the same).

Adoption
    A per-pod ``state.json`` under the pod's log directory records each container's restart
    count, terminations, backoff, and the current process's pid with its start time (field 22 of
    ``/proc/PID/stat``). A new agent on the same data dir adopts a process only if that pid still
    runs with the same start time, and reads the exit file of one that ended while it was down.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlplane.api.core import Container, ContainerStateTerminated, Pod
from mlplane.api.meta import now

SHELL = "/bin/sh"
SHIM = ('exit_file=$1; shift; IFS= read -r go && [ "$go" = go ] || exit 0; exec </dev/null; '
        'trap : HUP INT QUIT TERM; exec 3>&2 2>/dev/null; (exec "$@" 2>&3 3>&-); echo $? > "$exit_file"')
HOST_IP = "127.0.0.1"  # the node's address (status.hostIP); each pod has its own (``podips``)
STATE_FILE = "state.json"

# Kubernetes' wording for a container whose process is gone without an exit status
# (pkg/kubelet/kubelet_pods.go, convertToAPIContainerStatuses).
STATUS_UNKNOWN = "ContainerStatusUnknown"
STATUS_UNKNOWN_MESSAGE = "The container could not be located when the pod was terminated"


class ConfigError(Exception):
    """The container's configuration cannot be turned into a process (CreateContainerConfigError)."""


class StartError(Exception):
    """The process could not be started (StartError, exit code 128)."""


# --- argv and environment ------------------------------------------------------------------

def expand(text: str, mapping: dict[str, str]) -> str:
    """Kubernetes variable expansion: ``$(VAR)`` from mapping (left as written when undefined),
    ``$$`` is a literal ``$``; any other ``$`` stays (third_party/forked/golang/expansion)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 == n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2:close]
                out.append(mapping[name] if name in mapping else f"$({name})")
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def _format_map(values: dict[str, str] | None) -> str:
    # The downward API's form of a whole map: sorted key="value" lines (pkg/fieldpath FormatMap).
    return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted((values or {}).items()))


def field_value(pod: Pod, path: str, pod_ip: str | None = None) -> str:
    """The value of a ``valueFrom.fieldRef`` (the paths pkg/fieldpath and the kubelet support);
    ``pod_ip`` is the address the agent gave the pod (its status may not say it yet)."""
    meta = pod.metadata
    for prefix, values in (("metadata.labels", meta.labels), ("metadata.annotations", meta.annotations)):
        if path == prefix:
            return _format_map(values)
        if path.startswith(prefix + "[") and path.endswith("]"):
            key = path[len(prefix) + 1:-1]
            if len(key) >= 2 and key[0] == key[-1] and key[0] in "'\"":
                return (values or {}).get(key[1:-1], "")
    simple = {"metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid,
              "spec.nodeName": pod.spec.node_name, "spec.serviceAccountName": pod.spec.service_account_name,
              "status.hostIP": HOST_IP, "status.hostIPs": HOST_IP,
              "status.podIP": pod_ip or pod.status.pod_ip, "status.podIPs": pod_ip or pod.status.pod_ip}
    if path in simple:
        return simple[path] or ""
    raise ConfigError(f"unsupported fieldPath: {path}")


def declared_env(pod: Pod, container: Container, pod_ip: str | None = None) -> dict[str, str]:
    """The container's ``env`` in order, each value expanded from the variables declared before it."""
    env: dict[str, str] = {}
    for var in container.env or []:
        if var.value_from is not None:
            if var.value_from.field_ref is None:
                raise ConfigError(f"env {var.name}: valueFrom must set fieldRef (the only source supported "
                                  "in local mode)")
            env[var.name] = field_value(pod, var.value_from.field_ref.field_path, pod_ip)
        else:
            env[var.name] = expand(var.value or "", env)
    return env


def process_env(base: dict[str, str], pod: Pod, declared: dict[str, str]) -> dict[str, str]:
    return {**base, "HOSTNAME": pod.spec.hostname or pod.name, **declared}


def argv_of(container: Container, declared: dict[str, str]) -> list[str]:
    if not container.command:
        raise StartError(f"container {container.name!r} has no command: local mode runs no image, so its "
                         "entrypoint is unknown; a command is required in local mode")
    return [expand(a, declared) for a in [*container.command, *(container.args or [])]]


def working_dir(container: Container) -> str:
    cwd = os.path.abspath(container.working_dir) if container.working_dir else os.getcwd()
    if not os.path.isdir(cwd):
        raise StartError(f'chdir to cwd ("{cwd}") set in the container failed: no such directory')
    return cwd


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_executable(name: str, path: str | None, cwd: str) -> None:
    """Check ``name`` resolves as exec(3) would on the container's PATH; StartError with the runtime's
    wording (runc's Go exec.LookPath) when it does not."""
    if not name:
        raise StartError('exec: "": executable file not found in $PATH')
    if "/" in name:
        full = os.path.join(cwd, name)
        if not os.path.exists(full):
            raise StartError(f'exec: "{name}": stat {name}: no such file or directory')
        if os.path.isdir(full):
            raise StartError(f'exec: "{name}": is a directory')
        if not _is_executable(full):
            raise StartError(f'exec: "{name}": permission denied')
        return
    for folder in path.split(os.pathsep) if path else []:
        if _is_executable(os.path.join(cwd, folder or ".", name)):
            return
    raise StartError(f'exec: "{name}": executable file not found in $PATH')


# --- processes ---------------------------------------------------------------------------

def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), None if there is no such pid."""
    state = _stat(pid)
    return state[1] if state else None


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rfind(")") + 2:].split()  # the command name may hold spaces and ')'
    return fields[0], int(fields[19])  # field 3 (state) and field 22 (starttime)


def rfc3339(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def terminated(exit_code: int, *, started_at: str | None, finished_at: str | None, container_id: str | None,
               reason: str | None = None, message: str | None = None,
               signal: int | None = None) -> ContainerStateTerminated:
    return ContainerStateTerminated(exit_code=exit_code, signal=signal,
                                    reason=reason or ("Completed" if exit_code == 0 else "Error"),
                                    message=message, started_at=started_at, finished_at=finished_at,
                                    container_id=container_id)


@dataclass(eq=False)
class Attempt:
    """One started process of a container; ``popen`` is None when adopted from an earlier agent."""

    pid: int
    ticks: int
    started_at: str
    exit_file: Path
    popen: subprocess.Popen | None = None
    killed_with: int | None = None  # the last signal this agent sent the group
    exited: threading.Event = field(default_factory=threading.Event)

    @property
    def container_id(self) -> str:
        return f"mlplane://{self.pid}"

    def alive(self) -> bool:
        """The process still runs (same pid and start time, not a zombie)."""
        state = _stat(self.pid)
        return state is not None and state[1] == self.ticks and state[0] not in ("Z", "X")

    def signal_group(self, sig: int, *, record: bool = True) -> None:
        """Signal the container's process group, unless its pid now belongs to someone else.

        While any member of the group lives the kernel keeps the leader's pid reserved, so a pid
        that is free or still ours (same start time) means the group, if any, is this container's.
        ``record`` notes the signal as the cause should the process end with no exit record."""
        if start_ticks(self.pid) not in (None, self.ticks):
            return
        if record:
            self.killed_with = sig
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def release(self) -> None:
        """Let the process run its command (``spawn`` holds it until its record is saved)."""
        self._close_gate(b"go\n")

    def abandon(self) -> None:
        """End a process still held by ``spawn`` without running its command, and reap it."""
        self._close_gate(b"")
        if self.popen is not None:
            self.popen.wait()

    def _close_gate(self, data: bytes) -> None:
        gate = self.popen.stdin if self.popen is not None else None
        if gate is None or gate.closed:
            return
        try:
            gate.write(data)
            gate.close()
        except BrokenPipeError:
            pass  # the shim is gone already: its waiter records how it ended

    def result(self) -> ContainerStateTerminated:
        """How the process ended: the shim's record, else the shim's own wait status, else the signal
        this agent sent, else unknown (the process vanished with no record)."""
        try:
            code: int | None = int(self.exit_file.read_text().strip())
            finished = self.exit_file.stat().st_mtime
        except (OSError, ValueError):
            code, finished = None, time.time()
        sig = None
        if code is not None:
            sig = code - 128 if 128 < code < 160 else None
        elif self.popen is not None and self.popen.returncode is not None and self.popen.returncode < 0:
            sig = -self.popen.returncode
        elif self.killed_with is not None:
            sig = self.killed_with
        else:
            return terminated(137, started_at=self.started_at, finished_at=rfc3339(finished),
                              container_id=self.container_id, reason=STATUS_UNKNOWN,
                              message=STATUS_UNKNOWN_MESSAGE)
        if code is None:
            code = 128 + sig
        return terminated(code, signal=sig, started_at=self.started_at, finished_at=rfc3339(finished),
                          container_id=self.container_id)


def spawn(argv: list[str], env: dict[str, str], cwd: str, log_path: Path, exit_file: Path) -> Attempt:
    """Start the shim for argv in a new session, stdout and stderr appended to log_path. The shim
    waits: ``release()`` runs argv (once its pid is recorded), ``abandon()`` ends it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    exit_file.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen([SHELL, "-c", SHIM, "mlplane-shim", str(exit_file), *argv],
                                 stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 cwd=cwd, start_new_session=True)
    # Not reaped before someone waits for it, so /proc/PID/stat is there even if it exited already.
    return Attempt(pid=popen.pid, ticks=start_ticks(popen.pid) or 0, started_at=now(), exit_file=exit_file,
                   popen=popen)


# --- adoption records --------------------------------------------------------------------

@dataclass(eq=False)
class ContainerRecord:
    """What the agent knows of one container: its current attempt and how earlier ones ended."""

    restart_count: int = 0
    attempt: Attempt | None = None  # the current attempt's process, running or ended
    terminated: ContainerStateTerminated | None = None  # how the current attempt ended
    last_terminated: ContainerStateTerminated | None = None  # how the attempt before it ended
    backoff: int = 0  # restarts in the current crash loop (reset after a long run)
    restart_at: float | None = None  # unix time of the next restart, while backing off
    config_error: str | None = None

    @property
    def running(self) -> bool:
        return self.attempt is not None and self.terminated is None

    def to_dict(self) -> dict:
        def dump(t: ContainerStateTerminated | None):
            return t.model_dump(by_alias=True, exclude_none=True) if t is not None else None
        a = self.attempt
        return {"restartCount": self.restart_count, "terminated": dump(self.terminated),
                "lastTerminated": dump(self.last_terminated), "backoff": self.backoff,
                "restartAt": self.restart_at,
                "attempt": None if a is None else {"pid": a.pid, "ticks": a.ticks, "startedAt": a.started_at,
                                                   "exitFile": str(a.exit_file), "killedWith": a.killed_with}}

    @classmethod
    def from_dict(cls, data: dict) -> "ContainerRecord":
        def load(t):
            return ContainerStateTerminated.model_validate(t) if t else None
        a = data.get("attempt")
        attempt = None if a is None else Attempt(pid=a["pid"], ticks=a["ticks"], started_at=a["startedAt"],
                                                 exit_file=Path(a["exitFile"]), killed_with=a.get("killedWith"))
        return cls(restart_count=data["restartCount"], attempt=attempt, terminated=load(data.get("terminated")),
                   last_terminated=load(data.get("lastTerminated")), backoff=data.get("backoff", 0),
                   restart_at=data.get("restartAt"))


@dataclass(eq=False)
class PodRecord:
    """The agent's record of one pod (by uid), persisted to ``state.json`` in the pod's directory."""

    namespace: str
    name: str
    uid: str
    folder: Path
    grace: int = 30
    deadline_exceeded: bool = False
    accepted_at: str = field(default_factory=now)
    pod_ip: str | None = None  # the pod's own loopback address (``podips``)
    pod_ip_released: bool = False  # the pod ended and its address went back to the pool
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    terminating: bool = False  # deleted, terminal or past its deadline: stop everything, start nothing
    removed: bool = False  # its directory is gone: nothing more is saved
    last_seen: Pod | None = None  # the pod as last synced (what events about its end refer to)
    killer: threading.Thread | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def container(self, name: str) -> ContainerRecord:
        return self.containers.setdefault(name, ContainerRecord())

    def live(self) -> list[ContainerRecord]:
        return [c for c in self.containers.values() if c.running]

    def save(self) -> None:
        if self.removed:
            return
        data = {"namespace": self.namespace, "name": self.name, "uid": self.uid, "grace": self.grace,
                "deadlineExceeded": self.deadline_exceeded, "acceptedAt": self.accepted_at,
                "podIP": self.pod_ip, "podIPReleased": self.pod_ip_released,
                "containers": {n: c.to_dict() for n, c in self.containers.items()}}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.folder / STATE_FILE)

    @classmethod
    def load(cls, folder: Path) -> "PodRecord":
        data = json.loads((folder / STATE_FILE).read_text())
        return cls(namespace=data["namespace"], name=data["name"], uid=data["uid"], folder=folder,
                   grace=data.get("grace", 30), deadline_exceeded=data.get("deadlineExceeded", False),
                   accepted_at=data.get("acceptedAt") or now(), pod_ip=data.get("podIP"),
                   pod_ip_released=data.get("podIPReleased", False),
                   containers={n: ContainerRecord.from_dict(c) for n, c in data["containers"].items()})

