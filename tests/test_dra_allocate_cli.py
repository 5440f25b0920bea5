"""`mlplane dra allocate -f FILE --node NAME -o json`: the contract conformance checks rely on."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OBJECTS = """
apiVersion: v1
kind: Node
metadata: {name: node-1}
---
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.example.com}
spec:
  selectors:
  - cel: {expression: 'device.driver == "gpu.example.com"'}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node-1-gpus}
spec:
  driver: gpu.example.com
  nodeName: node-1
  pool: {name: node-1, generation: 1, resourceSliceCount: 1}
  devices:
  - name: gpu-0
    attributes: {model: {string: h200}, memory: {int: 141}}
    capacity: {memory: {value: 141Gi}}
  - name: gpu-1
    attributes: {model: {string: a100}, memory: {int: 80}}
    capacity: {memory: {value: 80Gi}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: big, namespace: default}
spec:
  devices:
    requests:
    - name: gpu
      exactly:
        deviceClassName: gpu.example.com
        selectors:
        - cel: {expression: 'device.capacity["gpu.example.com"].memory.compareTo(quantity("100Gi")) >= 0'}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: any, namespace: default}
spec:
  devices:
    requests:
    - name: gpu
      firstAvailable:
      - {name: h200, deviceClassName: gpu.example.com, selectors: [{cel: {expression: 'device.attributes["gpu.example.com"].model == "h200"'}}]}
      - {name: other, deviceClassName: gpu.example.com}
"""


def run(*args, input):
    return subprocess.run([sys.executable, "-m", "mlplane.cli.main", "dra", "allocate", *args], input=input,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)


def test_allocates_in_file_order_with_first_available_names():
    r = run("-f", "-", "--node", "node-1", "-o", "json", input=OBJECTS)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["node"], out["feasible"], out["error"]) == ("node-1", True, None)
    results = {c["metadata"]["name"]: c["status"]["allocation"]["devices"]["results"] for c in out["claims"]}
    # "big" takes the only device with >= 100Gi; "any" falls back to its second subrequest.
    assert results == {"big": [{"request": "gpu", "driver": "gpu.example.com", "pool": "node-1", "device": "gpu-0"}],
                       "any": [{"request": "gpu/other", "driver": "gpu.example.com", "pool": "node-1",
                                "device": "gpu-1"}]}
    selector = out["claims"][0]["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]
    assert selector == {"key": "metadata.name", "operator": "In", "values": ["node-1"]}


def test_claims_already_allocated_are_in_use():
    taken = OBJECTS.replace("metadata: {name: big, namespace: default}\nspec:",
                            "metadata: {name: big, namespace: default}\nstatus:\n  allocation:\n    devices:\n"
                            "      results: [{request: gpu, driver: gpu.example.com, pool: node-1, device: gpu-0}]\n"
                            "spec:")
    out = json.loads(run("-f", "-", "--node", "node-1", input=taken).stdout)
    assert out["feasible"] is True and [c["metadata"]["name"] for c in out["claims"]] == ["any"]
    assert out["claims"][0]["status"]["allocation"]["devices"]["results"][0]["device"] == "gpu-1"


def test_no_solution_is_feasible_false_with_exit_0():
    r = run("-f", "-", "--node", "node-1", input=OBJECTS.replace('quantity("100Gi")', 'quantity("200Gi")'))
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"node": "node-1", "feasible": False, "error": None, "claims": []}


def test_allocation_error_exits_1_and_invalid_input_exits_2():
    r = run("-f", "-", "--node", "node-1", input=OBJECTS.replace(".memory.compareTo", ".nosuch.compareTo"))
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["feasible"] is False and "no such key: nosuch" in out["error"]
    r = run("-f", "-", "--node", "node-1", input=OBJECTS.replace("resourceSliceCount: 1", "resourceSliceCount: -1"))
    assert r.returncode == 2 and "spec.pool.resourceSliceCount" in r.stderr
    r = run("-f", "-", "--node", "nope", input=OBJECTS)
    assert r.returncode == 2 and "--node nope" in r.stderr


def test_invalid_cel_is_rejected_when_loaded_with_its_position():
    r = run("-f", "-", "--node", "node-1", input=OBJECTS.replace('device.driver == "gpu.example.com"', "device.driver =="))
    assert r.returncode == 2
    assert "spec.selectors[0].cel.expression" in r.stderr and "<input>:1:17" in r.stderr
