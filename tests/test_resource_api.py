"""The DRA kinds (resource.k8s.io/v1): upstream-shaped manifests load, bad input is rejected naming the
field, objects round-trip through the store, and `get` prints kubectl's columns."""

import copy

import pytest
import yaml

from mlplane.api import REGISTRY, Invalid, Pod
from mlplane.api import resource
from mlplane.api.loader import ManifestError, load_text
from mlplane.api.resource import (DeviceClass, ResourceClaim, ResourceClaimTemplate, ResourceSlice,
                                  ResourceClaimConsumerReference)
from mlplane.cli.printers import print_table

# Shapes of section 1.5 of shared/reference/device.md.
CLASS = """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.nvidia.com}
spec:
  selectors:
  - cel: {expression: "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"}
  config:
  - opaque: {driver: gpu.nvidia.com, parameters: {apiVersion: gpu.nvidia.com/v1beta1, kind: GpuConfig}}
  extendedResourceName: nvidia.com/gpu
"""


def _gpu(i: int) -> str:
    root = "pci0000:00" if i < 4 else "pci0000:80"
    return f"""
  - name: gpu-{i}
    attributes:
      type: {{string: gpu}}
      productName: {{string: NVIDIA A100-SXM4-40GB}}
      index: {{int: {i}}}
      cudaComputeCapability: {{version: 8.0.0}}
      driverVersion: {{version: 550.54.15}}
      resource.kubernetes.io/pcieRoot: {{string: "{root}"}}
    capacity:
      memory: {{value: 40Gi}}
    consumesCounters:
    - counterSet: gpu-{i}-counter-set
      counters: {{multiprocessors: {{value: "98"}}, memory: {{value: 40Gi}}}}
  - name: gpu-{i}-mig-1g5gb-19-0
    attributes: {{type: {{string: mig}}, profile: {{string: 1g.5gb}}}}
    capacity: {{multiprocessors: {{value: "14"}}, memory: {{value: 4864Mi}}}}
    consumesCounters:
    - counterSet: gpu-{i}-counter-set
      counters: {{multiprocessors: {{value: "14"}}, memory: {{value: 4864Mi}}}}"""


def _counter_set(i: int) -> str:
    return f"""
  - name: gpu-{i}-counter-set
    counters: {{multiprocessors: {{value: "98"}}, memory: {{value: 40Gi}}}}"""


SLICE = f"""
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: node-a-gpu.nvidia.com-x7k2p}}
spec:
  driver: gpu.nvidia.com
  nodeName: node-a
  pool: {{name: node-a, generation: 1, resourceSliceCount: 1}}
  sharedCounters:{"".join(_counter_set(i) for i in range(8))}
  devices:{"".join(_gpu(i) for i in range(8))}
"""

TEMPLATE = """
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: two-a100, namespace: default}
spec:
  spec:
    devices:
      requests:
      - name: gpu
        firstAvailable:
        - name: big
          deviceClassName: gpu.nvidia.com
          count: 2
          selectors:
          - cel:
              expression: >-
                device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0
        - name: small
          deviceClassName: gpu.nvidia.com
          allocationMode: All
      constraints:
      - requests: ["gpu"]
        matchAttribute: resource.kubernetes.io/pcieRoot
      config:
      - requests: ["gpu/big"]
        opaque: {driver: gpu.nvidia.com, parameters: {sharing: {strategy: TimeSlicing}}}
"""

SHARED = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node-b-hami}
spec:
  driver: hami.io
  nodeName: node-b
  pool: {name: node-b, generation: 3, resourceSliceCount: 1}
  devices:
  - name: gpu-0
    allowMultipleAllocations: true
    taints: [{key: hami.io/unhealthy, value: ecc, effect: NoSchedule}]
    capacity:
      memory: {value: 80Gi, requestPolicy: {default: 1Gi, validRange: {min: 1Gi, step: 1Gi}}}
      cores: {value: "100", requestPolicy: {default: "100", validRange: {min: "1", max: "100"}}}
      mode: {value: "4", requestPolicy: {default: "2", validValues: ["1", "2", "4"]}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: shared-gpu, namespace: default}
spec:
  devices:
    requests:
    - name: gpu
      exactly:
        deviceClassName: hami-gpu
        capacity: {requests: {memory: 4Gi, cores: "30"}}
        tolerations: [{key: hami.io/unhealthy, operator: Exists, effect: NoSchedule}]
"""


def _objs(text: str) -> list:
    return [d.obj for d in load_text(text, "f.yaml")]


def _data(text: str) -> dict:
    return yaml.safe_load(text)


def _error(data: dict) -> str:
    with pytest.raises(ManifestError) as e:
        load_text(yaml.safe_dump(data), "f.yaml")
    (err,) = e.value.errors
    return err


def test_reference_manifests_load_with_upstream_defaults():
    (dc,) = _objs(CLASS)
    assert isinstance(dc, DeviceClass) and dc.key == "gpu.nvidia.com"
    assert dc.spec.selectors[0].cel.expression.startswith("device.driver == 'gpu.nvidia.com'")
    assert dc.spec.config[0].opaque.parameters["kind"] == "GpuConfig"
    assert dc.spec.extended_resource_name == "nvidia.com/gpu"

    (rs,) = _objs(SLICE)
    assert isinstance(rs, ResourceSlice) and rs.spec.pool.resource_slice_count == 1
    assert len(rs.spec.devices) == 16 and len(rs.spec.shared_counters) == 8
    gpu = rs.spec.devices[0]
    assert gpu.attributes["index"].int_value == 0 and gpu.attributes["cudaComputeCapability"].value == "8.0.0"
    assert gpu.attributes["resource.kubernetes.io/pcieRoot"].string_value == "pci0000:00"
    assert gpu.capacity["memory"].value == "40Gi"
    assert gpu.consumes_counters[0].counters["multiprocessors"].value == "98"

    (tpl,) = _objs(TEMPLATE)
    assert isinstance(tpl, ResourceClaimTemplate)
    big, small = tpl.spec.spec.devices.requests[0].first_available
    assert (big.allocation_mode, big.count) == ("ExactCount", 2)
    assert (small.allocation_mode, small.count) == ("All", None)  # count stays unset for All
    assert tpl.spec.spec.devices.constraints[0].match_attribute == "resource.kubernetes.io/pcieRoot"

    shared, claim = _objs(SHARED)
    memory = shared.spec.devices[0].capacity["memory"]
    assert shared.spec.devices[0].allow_multiple_allocations is True
    assert memory.request_policy.valid_range.step == "1Gi"
    exact = claim.spec.devices.requests[0].exactly
    assert (exact.allocation_mode, exact.count) == ("ExactCount", 1)  # upstream defaults
    assert exact.capacity.requests == {"memory": "4Gi", "cores": "30"}
    assert exact.tolerations[0].operator == "Exists"


def test_wire_shape_is_camel_case_with_upstream_json_names():
    (rs,) = _objs(SLICE)
    wire = rs.to_dict()
    assert wire["spec"]["pool"] == {"name": "node-a", "generation": 1, "resourceSliceCount": 1}
    assert wire["spec"]["devices"][0]["attributes"]["index"] == {"int": 0}
    assert wire["spec"]["devices"][0]["consumesCounters"][0]["counterSet"] == "gpu-0-counter-set"
    claim = ResourceClaim.model_validate({
        "metadata": {"name": "c", "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}},
        "status": {"allocation": {"devices": {"results": [
            {"request": "gpu", "driver": "gpu.nvidia.com", "pool": "node-a", "device": "gpu-0",
             "shareID": "7f0c6a52-0000-4000-8000-000000000000", "consumedCapacity": {"memory": "4Gi"}}]},
            "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}]}},
            "reservedFor": [{"resource": "pods", "name": "p", "uid": "u1"}]}})
    assert claim.status.allocation.devices.results[0].share_id.startswith("7f0c")
    wire = claim.to_dict()
    assert wire["apiVersion"] == "resource.k8s.io/v1" and wire["kind"] == "ResourceClaim"
    assert wire["status"]["allocation"]["devices"]["results"][0]["shareID"].startswith("7f0c")
    assert wire["spec"]["devices"]["requests"][0]["exactly"] == {
        "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": 1}


def test_kinds_are_registered_under_their_plurals_and_scopes():
    for plural, model, namespaced in (("deviceclasses", DeviceClass, False), ("resourceslices", ResourceSlice, False),
                                      ("resourceclaims", ResourceClaim, True),
                                      ("resourceclaimtemplates", ResourceClaimTemplate, True)):
        kind = REGISTRY.by_name(plural)
        assert kind.model is model and kind.namespaced is namespaced
        assert kind.path() == f"/apis/resource.k8s.io/v1/{plural}"
        assert REGISTRY.by_name(f"{plural}.resource.k8s.io") is kind


def _slice_data() -> dict:
    return _data(SLICE)


def _claim_data() -> dict:
    return _data(SHARED.split("---")[1])


def _template_data() -> dict:
    return _data(TEMPLATE)


def _class_data() -> dict:
    return _data(CLASS)


def _set(data: dict, path: str, value):
    """Set a dotted path (list indexes as numbers) inside a manifest; None deletes the key."""
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data


def _request(i: int, **fields) -> dict:
    return {"name": f"r{i}", "exactly": {"deviceClassName": "gpu.nvidia.com", **fields}}


REQ = "spec.devices.requests.0"
TREQ = "spec.spec.devices.requests.0"
DEV = "spec.devices.0"

BAD_CLAIMS = [
    ("bad request name", _claim_data, f"{REQ}.name", "GPU_0",
     "spec.devices.requests[0].name: Invalid value: \"GPU_0\": a lowercase RFC 1123 label"),
    ("duplicate request", _claim_data, "spec.devices.requests", [_request(0), _request(0)],
     'spec.devices.requests[1].name: Duplicate value: "r0"'),
    ("both exactly and firstAvailable", _claim_data, f"{REQ}.firstAvailable",
     [{"name": "a", "deviceClassName": "x"}], "spec.devices.requests[0]: Invalid value: [\"exactly\", "
                                              "\"firstAvailable\"]: exactly one of `exactly` or `firstAvailable`"),
    ("neither exactly nor firstAvailable", _claim_data, f"{REQ}.exactly", None,
     "spec.devices.requests[0]: Required value: exactly one of `exactly` or `firstAvailable` is required"),
    ("negative count", _claim_data, f"{REQ}.exactly.count", -1,
     "spec.devices.requests[0].exactly.count: Invalid value: -1: must be greater than zero"),
    ("count with All", _claim_data, f"{REQ}.exactly",
     {"deviceClassName": "gpu", "allocationMode": "All", "count": 2},
     "spec.devices.requests[0].exactly.count: Invalid value: 2: must not be specified when allocationMode is 'All'"),
    ("unknown allocation mode", _claim_data, f"{REQ}.exactly.allocationMode", "Some",
     "spec.devices.requests[0].exactly.allocationMode: Invalid value: 'Some'"),
    ("33 requests", _claim_data, "spec.devices.requests", [_request(i) for i in range(33)],
     "spec.devices.requests: Too many: 33: must have at most 32 items"),
    ("missing class name", _claim_data, f"{REQ}.exactly.deviceClassName", "",
     "spec.devices.requests[0].exactly.deviceClassName: Required value"),
    ("selector too long", _claim_data, f"{REQ}.exactly.selectors", [{"cel": {"expression": "a" * 10241}}],
     "spec.devices.requests[0].exactly.selectors[0].cel.expression: Too long: may not be more than 10240 bytes"),
    ("selector without cel", _claim_data, f"{REQ}.exactly.selectors", [{}],
     "spec.devices.requests[0].exactly.selectors[0].cel: Required value"),
    ("capacity request name", _claim_data, f"{REQ}.exactly.capacity.requests", {"mem-ory": "1Gi"},
     "spec.devices.requests[0].exactly.capacity.requests[mem-ory]: Invalid value: \"mem-ory\": a valid C identifier"),
    ("capacity request quantity", _claim_data, f"{REQ}.exactly.capacity.requests", {"memory": "4 GB"},
     "spec.devices.requests[0].exactly.capacity.requests.memory: quantities must match"),
    ("negative capacity request", _claim_data, f"{REQ}.exactly.capacity.requests", {"memory": "-1Gi"},
     "spec.devices.requests[0].exactly.capacity.requests[memory]: Invalid value: \"-1Gi\": must be greater than "
     "or equal to 0"),
    ("toleration Exists with value", _claim_data, f"{REQ}.exactly.tolerations.0.value", "ecc",
     "spec.devices.requests[0].exactly.tolerations[0].operator: Invalid value: \"Exists\": value must be empty"),
    ("taint effect", _claim_data, f"{REQ}.exactly.tolerations.0.effect", "PreferNoSchedule",
     "spec.devices.requests[0].exactly.tolerations[0].effect: Invalid value: 'PreferNoSchedule'"),
    ("constraint on missing request", _claim_data, "spec.devices.constraints",
     [{"requests": ["cpu"], "matchAttribute": "a.b/c"}],
     "spec.devices.constraints[0].requests[0]: Invalid value: \"cpu\": must be the name of a request in the claim"),
    ("constraint attribute without domain", _claim_data, "spec.devices.constraints",
     [{"matchAttribute": "pcieRoot"}],
     "spec.devices.constraints[0].matchAttribute: Invalid value: \"pcieRoot\": must include a domain"),
    ("constraint with both kinds", _claim_data, "spec.devices.constraints",
     [{"matchAttribute": "a.b/c", "distinctAttribute": "a.b/d"}],
     "spec.devices.constraints[0]: Invalid value: [\"matchAttribute\", \"distinctAttribute\"]"),
    ("config without opaque", _claim_data, "spec.devices.config", [{"requests": ["gpu"]}],
     "spec.devices.config[0].opaque: Required value"),
    ("unknown field", _claim_data, f"{REQ}.exactly.deviceClass", "x",
     'spec.devices.requests[0].exactly.deviceClass: unknown field "spec.devices.requests[0].exactly.deviceClass"'),
    ("nine subrequests", _template_data, f"{TREQ}.firstAvailable",
     [{"name": f"s{i}", "deviceClassName": "gpu"} for i in range(9)],
     "spec.spec.devices.requests[0].firstAvailable: Too many: 9: must have at most 8 items"),
    ("duplicate subrequest", _template_data, f"{TREQ}.firstAvailable.1.name", "big",
     'spec.spec.devices.requests[0].firstAvailable[1].name: Duplicate value: "big"'),
    ("bad subrequest name", _template_data, f"{TREQ}.firstAvailable.1.name", "Small",
     'spec.spec.devices.requests[0].firstAvailable[1].name: Invalid value: "Small"'),
    ("subrequest count with All", _template_data, f"{TREQ}.firstAvailable.1.count", 3,
     "spec.spec.devices.requests[0].firstAvailable[1].count: Invalid value: 3: must not be specified"),
    ("config on missing subrequest", _template_data, "spec.spec.devices.config.0.requests", ["gpu/huge"],
     'spec.spec.devices.config[0].requests[0]: Invalid value: "gpu/huge": must be the name of a request'),
    ("class selector too long", _class_data, "spec.selectors.0.cel.expression", "x" * 10241,
     "spec.selectors[0].cel.expression: Too long"),
    ("class config parameters not an object", _class_data, "spec.config.0.opaque.parameters", "x",
     "spec.config[0].opaque.parameters: Invalid value: parameters must be a valid JSON object"),
    ("class extended resource in kubernetes.io", _class_data, "spec.extendedResourceName", "kubernetes.io/gpu",
     'spec.extendedResourceName: Invalid value: "kubernetes.io/gpu": must be a valid extended resource name'),
]

BAD_SLICES = [
    ("no node selection", _slice_data, "spec.nodeName", None,
     "spec: Required value: exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection`"),
    ("two node selections", _slice_data, "spec.allNodes", True,
     'spec: Invalid value: ["nodeName", "allNodes"]: exactly one of `nodeName`, `nodeSelector`, `allNodes`, '
     "`perDeviceNodeSelection` is required, but multiple fields are set"),
    ("node selector with two terms", _slice_data, "spec", "TWO_TERMS",
     "spec.nodeSelector.nodeSelectorTerms: Invalid value: 2: must have exactly one node selector term"),
    ("duplicate device", _slice_data, "spec.devices.1.name", "gpu-0",
     'spec.devices[1].name: Duplicate value: "gpu-0"'),
    ("bad device name", _slice_data, "spec.devices.1.name", "GPU 1",
     'spec.devices[1].name: Invalid value: "GPU 1"'),
    ("129 devices", _slice_data, "spec.devices",
     [{"name": f"d{i}"} for i in range(129)], "spec.devices: Too many: 129: must have at most 128 items"),
    ("attribute name", _slice_data, f"{DEV}.attributes", {"bad-name": {"string": "x"}},
     'spec.devices[0].attributes[bad-name]: Invalid value: "bad-name": a valid C identifier'),
    ("attribute domain", _slice_data, f"{DEV}.attributes", {"Bad_Domain/x": {"string": "x"}},
     'spec.devices[0].attributes[Bad_Domain/x]: Invalid value: "Bad_Domain/x": the domain is not valid'),
    ("attribute with two values", _slice_data, f"{DEV}.attributes.type", {"string": "gpu", "int": 1},
     'spec.devices[0].attributes[type]: Invalid value: [1, "gpu"]: exactly one value must be specified'),
    ("attribute without value", _slice_data, f"{DEV}.attributes.type", {},
     "spec.devices[0].attributes[type]: Required value: exactly one value must be specified"),
    ("bad version", _slice_data, f"{DEV}.attributes.driverVersion", {"version": "550.54"},
     'spec.devices[0].attributes[driverVersion].version: Invalid value: "550.54": must be a string compatible '
     "with semver.org spec 2.0.0"),
    ("long string attribute", _slice_data, f"{DEV}.attributes.type", {"string": "x" * 65},
     "spec.devices[0].attributes[type].string: Too long: may not be more than 64 bytes"),
    ("unknown counter set", _slice_data, f"{DEV}.consumesCounters.0.counterSet", "gpu-9-counter-set",
     'spec.devices[0].consumesCounters[0].counterSet: Invalid value: "gpu-9-counter-set": must reference a '
     "counter set defined in the ResourceSlice sharedCounters"),
    ("unknown counter", _slice_data, f"{DEV}.consumesCounters.0.counters", {"sms": {"value": "1"}},
     'spec.devices[0].consumesCounters[0].counters[sms]: Invalid value: "sms": must reference a counter defined '
     'in counter set "gpu-0-counter-set"'),
    ("duplicate counter set", _slice_data, "spec.sharedCounters.1.name", "gpu-0-counter-set",
     'spec.sharedCounters[1].name: Duplicate value: "gpu-0-counter-set"'),
    ("33 shared counters", _slice_data, "spec.sharedCounters",
     [{"name": f"s{i}", "counters": {f"c{j}": {"value": "1"} for j in range(11)}} for i in range(3)],
     "spec.sharedCounters: Too many: 33: must have at most 32 counters"),
    ("capacity quantity", _slice_data, f"{DEV}.capacity.memory.value", "forty",
     "spec.devices[0].capacity.memory.value: quantities must match"),
    ("pool slice count", _slice_data, "spec.pool.resourceSliceCount", 0,
     "spec.pool.resourceSliceCount: Invalid value: 0: must be greater than zero"),
    ("pool name", _slice_data, "spec.pool.name", "Node_A",
     'spec.pool.name: Invalid value: "Node_A": a pool name must consist of DNS subdomains separated by \'/\''),
    ("driver name", _slice_data, "spec.driver", "GPU",
     'spec.driver: Invalid value: "GPU": a lowercase RFC 1123 subdomain'),
    ("per-device node name without perDeviceNodeSelection", _slice_data, f"{DEV}.nodeName", "node-a",
     "spec.devices[0].nodeName: Forbidden: may only be set when `perDeviceNodeSelection` is true"),
    ("taint effect", _slice_data, f"{DEV}.taints", [{"key": "a", "effect": "PreferNoSchedule"}],
     "spec.devices[0].taints[0].effect: Invalid value: 'PreferNoSchedule'"),
    ("taint value", _slice_data, f"{DEV}.taints", [{"key": "a", "value": "no way", "effect": "NoExecute"}],
     'spec.devices[0].taints[0].value: Invalid value: "no way": a valid label value'),
]

SHARED_SLICE = 'spec.devices.0.capacity'
BAD_POLICIES = [
    ("default above capacity", "memory.requestPolicy.default", "81Gi",
     'spec.devices[0].capacity[memory].requestPolicy.default: Invalid value: "81Gi": must be less than or equal'),
    ("range without min", "memory.requestPolicy.validRange", {"step": "1Gi"},
     "spec.devices[0].capacity[memory].requestPolicy.validRange.min: Required value"),
    ("default off step", "memory.requestPolicy.default", "1536Mi",
     "spec.devices[0].capacity[memory].requestPolicy.default: Invalid value: default must be min plus a whole"),
    ("zero step", "memory.requestPolicy.validRange.step", "0",
     'spec.devices[0].capacity[memory].requestPolicy.validRange.step: Invalid value: "0": must be greater than zero'),
    ("max below min", "cores.requestPolicy.validRange.max", "0",
     'spec.devices[0].capacity[cores].requestPolicy.validRange.max: Invalid value: "0": must be between min'),
    ("default not a valid value", "mode.requestPolicy.default", "3",
     'spec.devices[0].capacity[mode].requestPolicy.default: Invalid value: "3": must be one of validValues'),
    ("unsorted values", "mode.requestPolicy.validValues", ["2", "1", "4"],
     'spec.devices[0].capacity[mode].requestPolicy.validValues[1]: Invalid value: "1": values must be unique and '
     "sorted in ascending order"),
    ("both values and range", "mode.requestPolicy.validRange", {"min": "1"},
     'spec.devices[0].capacity[mode].requestPolicy: Invalid value: ["validValues", "validRange"]'),
]


def _mutated(factory, path, value):
    """The manifest with one change; "TWO_TERMS" swaps nodeName for a node selector with two terms."""
    data = factory()
    if value == "TWO_TERMS":
        del data["spec"]["nodeName"]
        term = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
        data["spec"]["nodeSelector"] = {"nodeSelectorTerms": [term, term]}
        return data
    return _set(data, path, value)


@pytest.mark.parametrize("case", BAD_CLAIMS + BAD_SLICES, ids=[c[0] for c in BAD_CLAIMS + BAD_SLICES])
def test_bad_input_is_rejected_naming_the_field(case):
    _name, factory, path, value, expected = case
    data = _mutated(factory, path, value)
    err = _error(data)
    assert expected in err, err
    assert f'{data["kind"]}.resource.k8s.io "{data["metadata"]["name"]}" is invalid' in err


@pytest.mark.parametrize("case", BAD_POLICIES, ids=[c[0] for c in BAD_POLICIES])
def test_bad_capacity_request_policy_is_rejected(case):
    _name, path, value, expected = case
    data = _set(_data(SHARED.split("---")[0]), f"{SHARED_SLICE}.{path}", value)
    err = _error(data)
    assert expected in err, err


def test_per_device_node_selection_needs_one_selection_on_every_device():
    data = _slice_data()
    del data["spec"]["nodeName"]
    data["spec"]["perDeviceNodeSelection"] = True
    for device in data["spec"]["devices"]:
        device["nodeName"] = "node-a"
    (rs,) = _objs(yaml.safe_dump(data))
    assert rs.spec.devices[3].node_name == "node-a"
    del data["spec"]["devices"][3]["nodeName"]
    assert ("spec.devices[3]: Required value: exactly one of `nodeName`, `nodeSelector`, `allNodes` is required"
            in _error(data))


def test_split_counter_slices_of_a_pool_load():
    """The 1.35 form: one slice holds the counter sets, the devices live in another slice of the pool."""
    counters = _slice_data()
    del counters["spec"]["devices"]
    devices = _slice_data()
    del devices["spec"]["sharedCounters"]
    counters["metadata"]["name"], devices["metadata"]["name"] = "counters", "devices"
    a, b = _objs(yaml.safe_dump_all([counters, devices]))
    assert len(a.spec.shared_counters) == 8 and b.spec.devices[1].consumes_counters[0].counter_set == \
        "gpu-0-counter-set"


def test_selector_validators_hook_reports_on_every_selector():
    def no_x(expression):
        return f'Invalid value: "{expression}": compilation failed: x' if "x" in expression else None

    tpl = _template_data()
    tpl["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"][1]["selectors"] = [{"cel": {"expression": "x"}}]
    dc = _set(_class_data(), "spec.selectors.0.cel.expression", "x")
    claim = _set(_claim_data(), f"{REQ}.exactly.selectors", [{"cel": {"expression": "x"}}])
    resource.SELECTOR_VALIDATORS.append(no_x)
    try:
        assert ('spec.spec.devices.requests[0].firstAvailable[1].selectors[0].cel.expression: Invalid value: "x": '
                "compilation failed: x") in _error(tpl)
        assert 'spec.selectors[0].cel.expression: Invalid value: "x": compilation failed' in _error(dc)
        assert 'spec.devices.requests[0].exactly.selectors[0].cel.expression: Invalid value: "x"' in _error(claim)
    finally:
        resource.SELECTOR_VALIDATORS.remove(no_x)
    import mlplane.policy.device  # noqa: F401  (registers the real CEL compile check)

    assert "spec.selectors[0].cel.expression" in _error(dc) and "undeclared reference" in _error(dc)


def test_round_trip_through_the_store(store):
    dc, = _objs(CLASS)
    rs, = _objs(SLICE)
    tpl, = _objs(TEMPLATE)
    _shared, claim = _objs(SHARED)
    for obj in (dc, rs, tpl, claim):
        created = store.create(obj)
        kind = REGISTRY.of(obj)
        got = store.get(type(obj), obj.namespace or None if kind.namespaced else None, obj.name)
        assert got.spec == obj.spec and created.metadata.uid == got.metadata.uid
    assert [s.name for s in store.list(ResourceSlice, None, field_selector="spec.nodeName=node-a").items] == \
        [rs.name]

    claim = store.get(ResourceClaim, "default", "shared-gpu")
    claim.status.allocation = resource.AllocationResult.model_validate({"devices": {"results": [
        {"request": "gpu", "driver": "hami.io", "pool": "node-b", "device": "gpu-0",
         "shareID": "3f3e1a2b-0000-4000-8000-000000000001", "consumedCapacity": {"memory": "4Gi", "cores": "30"}}]}})
    claim.status.reserved_for = [ResourceClaimConsumerReference(resource="pods", name="p", uid="u1")]
    store.update_status(claim)
    got = store.get(ResourceClaim, "default", "shared-gpu")
    assert got.status.allocation.devices.results[0].consumed_capacity == {"memory": "4Gi", "cores": "30"}

    got.spec.devices.requests[0].exactly.count = 2
    with pytest.raises(Invalid) as e:
        store.update(got)
    assert "spec: Invalid value: field is immutable" in e.value.message


def test_invalid_status_is_not_stored(store):
    _shared, claim = _objs(SHARED)
    claim = store.create(claim)
    claim.status.reserved_for = [ResourceClaimConsumerReference(resource="pods", name="p", uid="u1")]
    with pytest.raises(Invalid) as e:
        store.update_status(claim)
    assert "status.reservedFor: Forbidden: may not be specified when `allocated` is not set" in e.value.message


def test_pod_records_the_claims_made_for_it():
    pod = Pod.model_validate({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "resources": {"claims": [{"name": "gpus"}]}}],
                 "resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": "two-a100"}]},
        "status": {"resourceClaimStatuses": [{"name": "gpus", "resourceClaimName": "p-gpus-x7k2p"}]}})
    assert pod.status.resource_claim_statuses[0].resource_claim_name == "p-gpus-x7k2p"
    assert pod.to_dict()["status"]["resourceClaimStatuses"] == [{"name": "gpus", "resourceClaimName": "p-gpus-x7k2p"}]


def test_get_prints_kubectl_columns():
    dc, = _objs(CLASS)
    rs, = _objs(SLICE)
    tpl, = _objs(TEMPLATE)
    _shared, pending = _objs(SHARED)
    for obj in (dc, rs, tpl, pending):
        obj.metadata.creation_timestamp = "2020-01-01T00:00:00Z"
    allocated = copy.deepcopy(pending)
    allocated.metadata.name = "allocated"
    allocated.status.allocation = resource.AllocationResult()
    reserved = copy.deepcopy(allocated)
    reserved.metadata.name = "reserved"
    reserved.status.reserved_for = [ResourceClaimConsumerReference(resource="pods", name="p", uid="u")]
    deleting = copy.deepcopy(reserved)
    deleting.metadata.name = "deleting"
    deleting.metadata.deletion_timestamp = "2020-01-01T00:00:00Z"

    lines = print_table(REGISTRY.of(ResourceClaim), [pending, allocated, reserved, deleting]).splitlines()
    assert lines[0].split() == ["NAME", "STATE", "AGE"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["shared-gpu", "pending"], ["allocated", "allocated"], ["reserved", "allocated,reserved"],
        ["deleting", "deleted,allocated,reserved"]]
    lines = print_table(REGISTRY.of(ResourceSlice), [rs]).splitlines()
    assert lines[0].split() == ["NAME", "NODE", "DRIVER", "POOL", "AGE"]
    assert lines[1].split()[:4] == ["node-a-gpu.nvidia.com-x7k2p", "node-a", "gpu.nvidia.com", "node-a"]
    assert print_table(REGISTRY.of(DeviceClass), [dc]).splitlines()[0].split() == ["NAME", "AGE"]
    assert print_table(REGISTRY.of(ResourceClaimTemplate), [tpl]).splitlines()[1].split()[0] == "two-a100"
