"""Time from `apply` of a 100-pod Job to all its pods Running on the local node.

mlplane runs as `mlplane up` in a subprocess (a real server, store, scheduler, Job controller and
node agent); the Job is created over HTTP and pods are followed with a watch. The baseline, in the
same run, starts the same 100 processes directly with subprocess.Popen: the floor that process
creation alone costs on this machine, so the difference is the control plane's overhead.

    python -m mlplane.bench.job_startup [--pods 100]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time

from mlplane.api.batch import Job
from mlplane.bench import HEADER
from mlplane.api.core import Pod
from mlplane.cli.demo import _free_port, _wait_ready, stop_process
from mlplane.control.store.http import HTTPStore

SLEEP = ["sleep", "120"]  # coreutils: the container itself costs next to nothing to start


def _job(pods: int) -> Job:
    return Job.model_validate({
        "metadata": {"name": "startup", "namespace": "default"},
        "spec": {"completions": pods, "parallelism": pods, "completionMode": "Indexed",
                 "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "w", "command": SLEEP}]}}}})


def measure_mlplane(pods: int) -> float:
    data_dir = tempfile.mkdtemp(prefix="mlplane-bench-")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlplane.cli.main", "up", "--data-dir", data_dir, "--port",
                             str(port), "--cpu", "64", "--memory", "64Gi"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = HTTPStore(f"http://127.0.0.1:{port}")
    try:
        _wait_ready(store, proc)
        time.sleep(0.5)  # let the node register before the clock starts
        watch = store.watch(Pod, "default", store.list(Pod, "default").resource_version)
        running: set[str] = set()
        t0 = time.perf_counter()
        store.create(_job(pods))
        for event in watch:
            if event.object.status.phase == "Running":
                running.add(event.object.name)
            if len(running) >= pods:
                break
        elapsed = time.perf_counter() - t0
        watch.stop()
        store.delete(Job, "default", "startup")
        deadline = time.monotonic() + 30
        while store.list(Pod, "default").items and time.monotonic() < deadline:
            time.sleep(0.2)
        return elapsed
    finally:
        stop_process(proc, timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


def measure_baseline(pods: int) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(SLEEP, start_new_session=True) for _ in range(pods)]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    return elapsed


def run(pods: int = 100) -> dict:
    base = measure_baseline(pods)
    ours = measure_mlplane(pods)
    print(f"| apply of a {pods}-pod Job -> all pods Running | {ours:.2f} s | {base:.2f} s (Popen x{pods}) | - |")
    return {"job_startup_s": ours, "popen_baseline_s": base, "pods": pods}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100)
    a = ap.parse_args()
    print(HEADER)
    run(a.pods)
