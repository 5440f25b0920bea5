"""The examples are what a new user runs first (`make demo`): they must load and run end to end."""

import os
import subprocess
import sys

from mlplane.api import Job
from mlplane.api.loader import load_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def test_every_example_loads_and_validates():
    docs = load_paths([EXAMPLES])
    kinds = {d.obj.kind for d in docs}
    assert {"Job", "ResourceFlavor", "ClusterQueue", "LocalQueue"} <= kinds
    indexed = [d.obj for d in docs if isinstance(d.obj, Job) and d.obj.spec.completion_mode == "Indexed"]
    assert indexed and all((j.spec.completions or 0) > 1 for j in indexed)


def test_demo_runs_every_example_job_to_completion():
    r = subprocess.run([sys.executable, "-m", "mlplane.cli.main", "demo", EXAMPLES, "--timeout", "120s"],
                       capture_output=True, text=True, timeout=180, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for job in ("train-sgd", "eval-first", "eval-second"):
        assert f"job/{job}: Complete in" in out
    # The queued pair shows the workload plane at work: one waits for the other's quota.
    assert "waiting: couldn't assign flavors to pod set main: insufficient unused quota for cpu" in out
    assert "==> done in" in out
