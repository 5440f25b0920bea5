"""InferencePool and InferenceObjective: upstream wire shape, CRD defaults and rules, old versions, CLI output.

Shapes and rules: kubernetes-sigs/gateway-api-inference-extension api/v1/inferencepool_types.go (v1.6)
and llm-d/llm-d-router apix/v1alpha2/inferenceobjective_types.go.
"""

import copy

import pytest
import yaml

from mlplane.api import REGISTRY, Invalid, Pod
from mlplane.api.inference import InferenceObjective, InferencePool
from mlplane.api.meta import set_condition
from mlplane.cli.main import main
from mlplane.control.apiserver import ApiServer

POOL = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
        "metadata": {"name": "sim-llama", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "sim-llama"}}, "targetPorts": [{"number": 8000}]}}
OBJECTIVE = {"apiVersion": "llm-d.ai/v1alpha2", "kind": "InferenceObjective",
             "metadata": {"name": "batch", "namespace": "default"},
             "spec": {"priority": -1, "poolRef": {"name": "sim-llama"}}}


def decode(base, **changes):
    data = copy.deepcopy(base)
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for p in parents:
            target = target.setdefault(p, {})
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    return REGISTRY.decode(data)


def error(base, **changes) -> str:
    with pytest.raises(Invalid) as e:
        decode(base, **changes)
    return str(e.value)


# --- InferencePool -------------------------------------------------------------------------

def test_a_pool_gets_the_crd_defaults():
    pool = decode(POOL, spec__endpointPickerRef={"name": "epp", "port": {"number": 9002}})
    assert isinstance(pool, InferencePool)
    assert pool.to_dict()["spec"] == {
        "selector": {"matchLabels": {"app": "sim-llama"}}, "targetPorts": [{"number": 8000}], "appProtocol": "http",
        "endpointPickerRef": {"group": "", "kind": "Service", "name": "epp", "port": {"number": 9002},
                              "failureMode": "FailClose"}}
    assert decode(POOL).spec.endpoint_picker_ref is None  # optional since GIE v1.6.0


@pytest.mark.parametrize("changes, path, message", [
    ({"spec__targetPorts": []}, "spec.targetPorts", "at least 1 item"),
    ({"spec__targetPorts": [{"number": 8000 + i} for i in range(9)]}, "spec.targetPorts", "at most 8 items"),
    ({"spec__targetPorts": [{"number": 8000}, {"number": 8000}]}, "spec.targetPorts[1].number",
     "Duplicate value: 8000: port number must be unique"),
    ({"spec__targetPorts": [{"number": 0}]}, "spec.targetPorts[0].number", "greater than or equal to 1"),
    ({"spec__targetPorts": [{"number": 65536}]}, "spec.targetPorts[0].number", "less than or equal to 65535"),
    ({"spec__targetPorts": [{"number": "8000"}]}, "spec.targetPorts[0].number", "valid integer"),
    ({"spec__targetPorts": ...}, "spec.targetPorts", "Required value"),
    ({"spec__selector": ...}, "spec.selector", "Required value"),
    ({"spec__selector": {"matchLabels": {}}}, "spec.selector.matchLabels", "Required value"),
    ({"spec__selector": {"matchLabels": {"app": "a b"}}}, "spec.selector.matchLabels", "valid label value"),
    ({"spec__selector": {"matchLabels": {"a": "b"}, "matchExpressions": []}}, "spec.selector.matchExpressions",
     "unknown field"),
    ({"spec__appProtocol": "grpc"}, "spec.appProtocol", "'http' or 'kubernetes.io/h2c'"),
    ({"spec__endpointPickerRef": {"name": "epp"}}, "spec.endpointPickerRef.port",
     "port is required when kind is 'Service' or unspecified"),
    ({"spec__endpointPickerRef": {"name": "epp", "port": {"number": 9002}, "failureMode": "FailSoft"}},
     "spec.endpointPickerRef.failureMode", "'FailOpen' or 'FailClose'"),
    ({"spec__endpointPickerRef": {"name": "epp", "kind": "my/kind", "port": {"number": 9002}}},
     "spec.endpointPickerRef.kind", "a kind must start with a letter"),
    ({"spec__endpointPickerRef": {"name": "epp", "group": "Example.com", "port": {"number": 9002}}},
     "spec.endpointPickerRef.group", "lowercase RFC 1123 subdomain"),
    ({"spec__replicas": 3}, "spec.replicas", "unknown field"),
])
def test_a_bad_pool_is_rejected_naming_the_field(changes, path, message):
    text = error(POOL, **changes)
    assert text.startswith('InferencePool.inference.networking.k8s.io "sim-llama" is invalid: ')
    assert f"{path}: " in text and message in text


def test_a_non_service_picker_needs_no_port_and_roles_limit_the_serving_ports():
    pool = decode(POOL, spec__endpointPickerRef={"name": "epp", "kind": "Backend", "group": "example.com"})
    assert pool.spec.endpoint_picker_ref.port is None
    pool = decode(POOL, spec__targetPorts=[{"number": 8000}, {"number": 9090, "role": "Metrics"}])
    assert pool.ports == [8000]


def test_a_pool_status_lists_parents_with_conditions():
    parent = {"parentRef": {"name": "gw"}, "controllerName": "example.net/gateway",
              "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}
    pool = decode(POOL, status={"parents": [parent]})
    assert pool.to_dict()["status"]["parents"][0]["parentRef"] == {"group": "gateway.networking.k8s.io",
                                                                  "kind": "Gateway", "name": "gw"}
    assert "status.parents[0].controllerName" in error(POOL, status={"parents": [{**parent, "controllerName": "x"}]})
    assert "status.parents" in error(POOL, status={"parents": [parent] * 33})


def test_a_v1alpha2_pool_is_stored_as_v1():
    """GIE's pre-v1 shape (inference.networking.x-k8s.io/v1alpha2: flat selector, one targetPortNumber,
    extensionRef with portNumber) reads as the v1 object its migration guide describes."""
    old = {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferencePool",
           "metadata": {"name": "old", "namespace": "default"},
           "spec": {"selector": {"app": "vllm"}, "targetPortNumber": 8000,
                    "extensionRef": {"name": "epp", "failureMode": "FailOpen"}}}
    pool = REGISTRY.decode(old)
    assert pool.api_version == "inference.networking.k8s.io/v1"
    assert pool.to_dict()["spec"] == {
        "selector": {"matchLabels": {"app": "vllm"}}, "targetPorts": [{"number": 8000}], "appProtocol": "http",
        "endpointPickerRef": {"group": "", "kind": "Service", "name": "epp", "port": {"number": 9002},
                              "failureMode": "FailOpen"}}
    old["spec"]["targetPortNumber"] = 70000
    with pytest.raises(Invalid, match=r"spec.targetPorts\[0\].number"):
        REGISTRY.decode(old)


# --- InferenceObjective -----------------------------------------------------------------------

def test_an_objective_defaults_its_pool_ref_and_reads_unset_priority_as_zero():
    obj = decode(OBJECTIVE)
    assert isinstance(obj, InferenceObjective) and obj.priority == -1
    assert obj.to_dict()["spec"]["poolRef"] == {"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                                "name": "sim-llama"}
    assert decode(OBJECTIVE, spec__priority=...).priority == 0


def test_an_objective_of_the_old_group_is_stored_in_the_new_one():
    obj = decode(OBJECTIVE, apiVersion="inference.networking.x-k8s.io/v1alpha2")
    assert obj.api_version == "llm-d.ai/v1alpha2" and obj.priority == -1
    text = error(OBJECTIVE, apiVersion="inference.networking.x-k8s.io/v1alpha2", spec__criticality="Sheddable")
    assert "spec.criticality" in text and "spec.priority" in text


@pytest.mark.parametrize("changes, path, message", [
    ({"spec__priority": "high"}, "spec.priority", "valid integer"),
    ({"spec__priority": 2 ** 31}, "spec.priority", "less than or equal to 2147483647"),
    ({"spec__poolRef": ...}, "spec.poolRef", "Required value: set poolRef, poolRefs or poolSelector"),
    ({"spec__poolRef": {}}, "spec.poolRef.name", "Required value"),
    ({"spec__poolRef": ..., "spec__poolRefs": []}, "spec.poolRefs", "at least 1 item"),
    ({"spec__poolRef": ..., "spec__poolRefs": [{"name": "a"}, {"name": "a"}]}, "spec.poolRefs[1].name",
     "Duplicate value"),
    ({"spec__poolRef": ..., "spec__poolSelector": {}}, "spec.poolSelector", "must not be empty"),
    ({"spec__poolRef": ..., "spec__poolSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "spec.poolSelector.matchExpressions[0].values", "Required value"),
    ({"spec__modelName": "llama"}, "spec.modelName", "unknown field"),
])
def test_a_bad_objective_is_rejected_naming_the_field(changes, path, message):
    text = error(OBJECTIVE, **changes)
    assert text.startswith('InferenceObjective.llm-d.ai "batch" is invalid: ')
    assert f"{path}: " in text and message in text


# --- through the API server and the CLI ----------------------------------------------------------

MANIFESTS = """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: sim-llama}
spec:
  selector: {matchLabels: {app: sim-llama}}
  targetPorts: [{number: 8000}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: with-epp}
spec:
  selector: {matchLabels: {app: other}}
  targetPorts: [{number: 8000}, {number: 8001}]
  endpointPickerRef: {name: epp, port: {number: 9002}, failureMode: FailOpen}
---
apiVersion: llm-d.ai/v1alpha2
kind: InferenceObjective
metadata: {name: critical}
spec: {priority: 10, poolRef: {name: sim-llama}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: batch}
spec: {priority: -1, poolRef: {name: sim-llama}}
---
apiVersion: v1
kind: Pod
metadata: {name: sim-0, labels: {app: sim-llama}}
spec: {nodeName: node-a, containers: [{name: main, command: [serve]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: sim-1, labels: {app: sim-llama}}
spec: {nodeName: node-a, containers: [{name: main, command: [serve]}]}
"""


@pytest.fixture
def server(store):
    with ApiServer(store) as srv:
        yield srv.url


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_get_and_describe_read_like_kubectl(server, store, capsys, tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(MANIFESTS)
    code, out, _ = run(capsys, "apply", "-f", str(f), "-s", server)
    assert code == 0 and "inferencepool.inference.networking.k8s.io/sim-llama created" in out
    assert "inferenceobjective.llm-d.ai/batch created" in out
    pod = store.get(Pod, "default", "sim-0")
    pod.status.phase, pod.status.pod_ip = "Running", "127.4.5.6"
    pod.status.conditions = set_condition(None, "Ready", "True")
    store.update_status(pod)

    code, out, _ = run(capsys, "get", "infpool", "-s", server)
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "SELECTOR", "PORTS", "EPP", "AGE"]
    assert [r[:4] for r in rows[1:]] == [["sim-llama", "app=sim-llama", "8000", "<none>"],
                                         ["with-epp", "app=other", "8000,8001", "epp:9002"]]
    _, out, _ = run(capsys, "get", "inferencepools", "with-epp", "-o", "wide", "-s", server)
    assert out.splitlines()[0].split()[-3:] == ["PROTOCOL", "FAILURE", "MODE"] and "FailOpen" in out
    _, out, _ = run(capsys, "get", "inferenceobjectives", "-s", server)
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "INFERENCE", "POOL", "INFERENCE", "POOLS", "PRIORITY", "AGE"]
    assert [r[:4] for r in rows[1:]] == [["batch", "sim-llama", "<none>", "-1"],
                                         ["critical", "sim-llama", "<none>", "10"]]

    _, out, _ = run(capsys, "describe", "infpool", "sim-llama", "-s", server)
    assert "Selector:           app=sim-llama" in out and "Target Ports:       8000" in out
    assert "Endpoints:          1 ready" in out
    assert [line.split() for line in out.splitlines() if "default/sim-0:8000" in line] == [
        ["default/sim-0:8000", "127.4.5.6:8000", "sim-0", "node-a"]]
    assert "Selected Pods Not Serving:" in out and any(line.split()[:1] == ["sim-1"] for line in out.splitlines())
    assert "batch: priority -1 (sheddable" in out and "critical: priority 10" in out

    _, out, _ = run(capsys, "describe", "inferenceobjective", "batch", "-s", server)
    assert "Priority:           -1 (sheddable" in out and "Inference Pools:    sim-llama" in out
    _, out, _ = run(capsys, "get", "inferenceobjective", "batch", "-o", "yaml", "-s", server)
    assert yaml.safe_load(out)["apiVersion"] == "llm-d.ai/v1alpha2"


def test_a_bad_manifest_changes_nothing(server, store, capsys, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(MANIFESTS.replace("targetPorts: [{number: 8000}]\n",
                                   "targetPorts: [{number: 8000}, {number: 8000}]\n", 1))
    code, _, err = run(capsys, "apply", "-f", str(f), "-s", server)
    assert code != 0 and "spec.targetPorts[1].number" in err and "port number must be unique" in err
    assert store.list(InferencePool, "default").items == []
