"""The examples are what a new user runs first (`make demo`): they must load and run end to end."""

import os
import subprocess
import sys

from mlplane.api import Job
from mlplane.api.loader import load_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
DRA = os.path.join(ROOT, "examples-dra")


def test_every_example_loads_and_validates():
    docs = load_paths([EXAMPLES, os.path.join(DRA, "manifests")])
    kinds = {d.obj.kind for d in docs}
    assert {"Job", "ResourceFlavor", "ClusterQueue", "LocalQueue", "DeviceClass", "ResourceClaimTemplate"} <= kinds
    indexed = [d.obj for d in docs if isinstance(d.obj, Job) and d.obj.spec.completion_mode == "Indexed"]
    assert indexed and all((j.spec.completions or 0) > 1 for j in indexed)


def test_demo_runs_every_example_job_to_completion():
    """What `make demo` runs: the planes (pods and Jobs, Kueue queues, DRA devices, inference) at once."""
    r = subprocess.run([sys.executable, "-m", "mlplane.cli.main", "demo", EXAMPLES, os.path.join(DRA, "manifests"),
                        "--node-config", os.path.join(DRA, "node.yaml"), "--timeout", "120s"],
                       capture_output=True, text=True, timeout=180, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for job in ("train-sgd", "eval-first", "eval-second", "train-on-gpus", "share-a-gpu"):
        assert f"job/{job}: Complete in" in out
    # The queued pair shows the workload plane at work: one waits for the other's quota.
    assert "waiting: couldn't assign flavors to pod set main: insufficient unused quota for cpu" in out
    # Each GPU worker got its own simulated GPU; the two sharing workers got the same one.
    gpus = sorted(line.split("CUDA_VISIBLE_DEVICES=")[1].split()[0] for line in out.splitlines()
                  if "train-on-gpus-" in line and "CUDA_VISIBLE_DEVICES=" in line)
    assert len(gpus) == 4 and len(set(gpus)) == 4
    shared = {line.split("CUDA_VISIBLE_DEVICES=")[1].split()[0] for line in out.splitlines()
              if "share-a-gpu-" in line and "CUDA_VISIBLE_DEVICES=" in line}
    assert len(shared) == 1
    # The traffic plane: requests through the gateway reach the pool's simulated vLLM servers, and
    # prompts sharing a prefix stay on the server that caches it.
    assert "served by sim-llama-" in out
    shared = [line.split(":")[1].split(",")[0].strip() for line in out.splitlines()
              if line.strip().startswith("request ") and "prompt tokens cached" in line]
    assert len(shared) == 6 and len(set(shared)) == 1
    assert "==> done in" in out
