"""End to end through the CLI only: `mlplane up` as a subprocess, then apply / wait / get / logs / delete."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JOB = """
apiVersion: batch/v1
kind: Job
metadata:
  name: squares
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: worker
        image: python:3.12-slim
        command: ["python3", "-c"]
        args: ["import os; i = int(os.environ['JOB_COMPLETION_INDEX']); print(f'index {i} square {i * i}')"]
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlplane(*args, server, input=None, check=True):
    env = dict(os.environ, MLPLANE_SERVER=server, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "mlplane.cli.main", *args], capture_output=True, text=True,
                       input=input, env=env, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"mlplane {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture
def plane(tmp_path):
    port = _free_port()
    server = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "mlplane.cli.main", "up", "--data-dir", str(tmp_path / "data"),
                             "--port", str(port), "--job-backoff", "0.2", "--crash-backoff", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if mlplane("version", server=server, check=False).stdout.find("Server Version: mlplane") >= 0:
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("mlplane up did not come up")
    yield server, tmp_path
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    out = proc.stdout.read()
    assert "control plane is up" in out and "stopped" in out


def test_indexed_job_runs_to_completion_through_the_cli(plane):
    server, tmp = plane
    r = mlplane("apply", "-f", "-", server=server, input=JOB)
    assert r.stdout.strip() == "job.batch/squares created"
    assert mlplane("apply", "-f", "-", server=server, input=JOB).stdout.strip() == "job.batch/squares unchanged"

    r = mlplane("wait", "--for=condition=Complete", "job/squares", "--timeout=60s", server=server)
    assert r.stdout.strip() == "job.batch/squares condition met"

    table = mlplane("get", "jobs", server=server).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert table[1].split()[:3] == ["squares", "Complete", "3/3"]

    pods = json.loads(mlplane("get", "pods", "-l", "batch.kubernetes.io/job-name=squares", "-o", "json",
                              server=server).stdout)["items"]
    assert len(pods) == 3
    node = mlplane("get", "nodes", "-o", "name", server=server).stdout.strip().removeprefix("node/")
    for pod in pods:
        assert pod["status"]["phase"] == "Succeeded" and pod["spec"]["nodeName"] == node
        index = int(pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
        log = mlplane("logs", pod["metadata"]["name"], server=server).stdout
        assert log == f"index {index} square {index * index}\n"

    described = mlplane("describe", "job", "squares", server=server).stdout
    assert "Complete" in described and "SuccessfulCreate" in described

    r = mlplane("delete", "job", "squares", server=server)
    assert r.stdout.strip() == 'job.batch "squares" deleted'
    r = mlplane("get", "pods", server=server)
    assert r.stdout == "" and "No resources found in default namespace." in r.stderr


def test_cli_errors_are_clear_and_change_nothing(plane):
    server, tmp = plane
    bad = JOB.replace("parallelism: 3", "parallelism: -3") + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: ok}\n" \
        "spec: {containers: [{name: a, command: [sleep, '1']}]}\n"
    r = mlplane("apply", "-f", "-", server=server, input=bad, check=False)
    assert r.returncode == 1
    assert "<stdin>: document 1 (Job/squares)" in r.stderr and "spec.parallelism" in r.stderr
    assert "nothing was applied" in r.stderr
    assert mlplane("get", "pods", server=server).stdout == ""  # the valid Pod was not stored either

    r = mlplane("get", "job", "nope", server=server, check=False)
    assert r.returncode == 1 and r.stderr.strip() == 'Error from server (NotFound): jobs.batch "nope" not found'
    r = mlplane("delete", "pod", "nope", server=server, check=False)
    assert r.returncode == 1 and "not found" in r.stderr
    r = mlplane("get", "widgets", server=server, check=False)
    assert r.returncode == 1 and 'doesn\'t have a resource type "widgets"' in r.stderr
    r = mlplane("get", "pods", server="http://127.0.0.1:1", check=False)
    assert r.returncode == 1 and "is `mlplane up` running?" in r.stderr


def test_missing_executable_is_reported_on_the_pod(plane):
    server, tmp = plane
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: nope}\nspec:\n  restartPolicy: Never\n" \
          "  containers: [{name: main, command: [definitely-not-a-program]}]\n"
    mlplane("apply", "-f", "-", server=server, input=pod)
    mlplane("wait", "--for=condition=Ready=false", "pod/nope", "--timeout=30s", server=server)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        data = json.loads(mlplane("get", "pod", "nope", "-o", "json", server=server).stdout)
        if data["status"]["phase"] == "Failed":
            break
        time.sleep(0.1)
    term = data["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "StartError" and term["exitCode"] == 128
    assert 'exec: "definitely-not-a-program": executable file not found in $PATH' in term["message"]
    assert "StartError" in mlplane("get", "pods", server=server).stdout
