"""`mlplane demo` (what `make demo` runs): a throwaway control plane running the examples end to end.

It starts `mlplane up` as a real subprocess on a free port and a temporary data dir, applies the
examples through the HTTP API, follows every Job until it finishes, prints what ran where and for
how long, then deletes what it created and shuts the control plane down. When the examples hold an
InferencePool, it also puts `mlplane gateway` in front of the pool and sends requests through it
(``demo_inference``). The plane runs with this Python's bin directory first on PATH, so pods find
``mlplane`` and ``python3`` of the environment the demo runs in.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from mlplane.api.batch import Job
from mlplane.api.core import Pod
from mlplane.api.errors import NotFound
from mlplane.api.inference import InferencePool
from mlplane.api.loader import ManifestError, load_paths
from mlplane.api.kueue import Workload
from mlplane.api.meta import find_condition, is_true, parse_time
from mlplane.cli.demo_inference import Failed, exercise_pool
from mlplane.cli.printers import human_duration, job_status, pod_status, table
from mlplane.control.store.http import HTTPStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_plane(data_dir: str, port: int, node_config: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlplane.cli.main", "up", "--data-dir", data_dir, "--port", str(port),
           "--job-backoff", "1", "--crash-backoff", "1", *(["--node-config", node_config] if node_config else [])]
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def stop_process(proc: subprocess.Popen, timeout: float) -> int:
    """Stop a child server: SIGTERM, wait up to ``timeout`` seconds for it to shut down, then SIGKILL.
    Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _wait_ready(store: HTTPStore, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlplane up exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if store.healthz():
                return
        except ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError("mlplane up did not become ready in time")


def _finished(job: Job) -> bool:
    return is_true(job.status.conditions, "Complete") or is_true(job.status.conditions, "Failed")


def run_demo(directories: list[str], *, node_config: str | None = None, timeout: float = 300.0) -> int:
    try:
        docs = load_paths(directories)
    except ManifestError as e:
        print("\n".join(f"error: {line}" for line in e.errors), file=sys.stderr)
        return 1
    jobs = [d.obj for d in docs if isinstance(d.obj, Job)]
    pools = [d.obj for d in docs if isinstance(d.obj, InferencePool)]
    pods = [d.obj for d in docs if isinstance(d.obj, Pod)]  # bare pods run until deleted: stop them at the end
    data_dir = tempfile.mkdtemp(prefix="mlplane-demo-")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    extra = f" --node-config {node_config}" if node_config else ""
    print(f"==> starting the embedded control plane: mlplane up --data-dir {data_dir} --port {port}{extra}")
    proc = _start_plane(data_dir, port, node_config)
    store = HTTPStore(url)
    t0 = time.monotonic()
    try:
        _wait_ready(store, proc)
        print(f"    up in {time.monotonic() - t0:.1f}s at {url}")
        files = " ".join(f"-f {d}" for d in directories)
        print(f"==> mlplane apply {files}")
        from mlplane.cli.main import main as cli

        if cli(["apply", *[a for d in directories for a in ("-f", d)], "--server", url]) != 0:
            return 1
        ok = True
        if jobs:
            current = _follow_jobs(store, jobs, timeout)
            if current is None:
                return 1
            ok = _summary(store, current)
            print(f"==> deleting {len(current)} job(s)")
            for j in current:
                store.delete(Job, j.namespace, j.name)
        for pool in pools:
            try:
                applied = store.get(InferencePool, pool.metadata.namespace or "default", pool.name)
                exercise_pool(store, url, applied, timeout=min(timeout, 120.0))
            except Failed as e:
                print(f"error: {e}", file=sys.stderr)
                ok = False
            except (OSError, ValueError, KeyError) as e:  # a bad answer is a failed demo, not a crash
                print(f"error: inferencepool/{pool.name}: {type(e).__name__}: {e}", file=sys.stderr)
                ok = False
        return 0 if ok else 1
    finally:
        _stop_pods(store, pods)
        print("==> stopping the control plane")
        stop_process(proc, timeout=20)
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"==> done in {time.monotonic() - t0:.1f}s")


def _follow_jobs(store: HTTPStore, jobs: list[Job], timeout: float) -> list[Job] | None:
    """Print each Job's and Workload's progress until every Job finished; None after ``timeout``."""
    print(f"==> waiting for {len(jobs)} job(s) to finish")
    applied = time.monotonic()
    last: dict[str, str] = {}
    deadline = applied + timeout
    while True:
        current = [store.get(Job, j.metadata.namespace or "default", j.name) for j in jobs]
        for j in current:
            line = (f"    job/{j.name}: {job_status(j)}, {j.status.succeeded or 0}/{j.spec.completions or 1} "
                    f"succeeded, {j.status.active or 0} active, {j.status.failed or 0} failed")
            if last.get(j.name) != line:
                print(f"{line}  [{time.monotonic() - applied:5.1f}s]", flush=True)
                last[j.name] = line
        for wl in store.list(Workload, None).items:  # the workload plane's decisions, as they happen
            reserved = find_condition(wl.status.conditions, "QuotaReserved")
            if reserved is None:
                continue
            state = "admitted" if reserved.status == "True" else "waiting"
            line = f"    workload/{wl.name} ({wl.spec.queue_name}): {state}: {(reserved.message or '').splitlines()[0]}"
            if last.get(wl.name) != line:
                print(f"{line}  [{time.monotonic() - applied:5.1f}s]", flush=True)
                last[wl.name] = line
        if all(_finished(j) for j in current):
            return current
        if time.monotonic() > deadline:
            print(f"error: jobs did not finish within {human_duration(timeout)}", file=sys.stderr)
            return None
        time.sleep(0.2)


def _stop_pods(store: HTTPStore, pods: list[Pod], timeout: float = 30.0) -> None:
    """Delete the manifests' bare pods and wait until their node agent has stopped them (best effort:
    the plane is going away, and `mlplane up` leaves running containers running)."""
    if not pods:
        return
    print(f"==> deleting {len(pods)} pod(s)")
    keys = []
    for p in pods:
        ns = p.metadata.namespace or "default"
        try:
            store.delete(Pod, ns, p.name)
            keys.append((ns, p.name))
        except NotFound:
            pass
        except Exception as e:  # the plane may be gone already
            print(f"warning: could not delete pod/{p.name}: {e}", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while keys and time.monotonic() < deadline:
        left = []
        for ns, name in keys:
            try:
                store.get(Pod, ns, name)
                left.append((ns, name))
            except NotFound:
                pass
            except Exception:
                return
        keys = left
        if keys:
            time.sleep(0.2)
    if keys:
        print(f"warning: pods still stopping: {', '.join(n for _, n in keys)}", file=sys.stderr)


def _summary(store: HTTPStore, jobs: list[Job]) -> bool:
    ok = True
    print("==> summary")
    for j in jobs:
        start, end = parse_time(j.status.start_time), parse_time(j.status.completion_time)
        took = human_duration((end - start).total_seconds()) if start and end else "-"
        status = job_status(j)
        ok = ok and status == "Complete"
        print(f"job/{j.name}: {status} in {took} ({j.spec.completion_mode}, {j.status.succeeded or 0} succeeded, "
              f"{j.status.failed or 0} failed)")
        pods = store.list(Pod, j.namespace, f"batch.kubernetes.io/job-name={j.name}").items
        pods.sort(key=lambda p: (int((p.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index",
                                                                          "0")), p.name))
        rows = [["POD", "INDEX", "NODE", "STATUS", "EXIT", "RAN FOR", "LAST LOG LINE"]]
        for p in pods:
            cs = (p.status.container_statuses or [None])[0]
            term = cs.state.terminated if cs else None
            ran = "-"
            if term and term.started_at and term.finished_at:
                ran = f"{(parse_time(term.finished_at) - parse_time(term.started_at)).total_seconds():.0f}s"
            try:
                lines = b"".join(store.logs(p.namespace, p.name, tail_lines=1)).decode(errors="replace").strip()
            except Exception as e:  # a summary should not fail on one missing log
                lines = f"<{e}>"
            rows.append([p.name, (p.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index", "-"),
                         p.spec.node_name or "<none>", pod_status(p), str(term.exit_code) if term else "-", ran,
                         lines.splitlines()[-1] if lines else ""])
        print("\n".join("  " + line for line in table(rows).splitlines()))
    return ok


if __name__ == "__main__":
    sys.exit(run_demo(sys.argv[1:] or ["examples"]))
