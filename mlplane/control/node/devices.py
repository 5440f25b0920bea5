"""Devices on the node: the ResourceSlices the node agent publishes, and the environment that shows a
container the devices allocated to it (mlplane's stand-in for a DRA kubelet plugin).

Inventory. With a node configuration file (``mlplane up --node-config FILE``) the file is the whole
device inventory and NVML is not consulted, so a simulation behaves the same on a machine with GPUs.
Without one, real NVIDIA GPUs are found through NVML (the ``nvidia-ml-py`` package, imported only
then; no package, no driver or no GPU means no devices) and published as NVIDIA's DRA driver does
(kubernetes-sigs/dra-driver-nvidia-gpu cmd/gpu-kubelet-plugin/deviceinfo.go): driver
``gpu.nvidia.com``, devices ``gpu-<minor>`` with attributes type, uuid, productName, brand,
architecture, cudaComputeCapability, driverVersion, cudaDriverVersion, pcieBusID and
resource.kubernetes.io/pcieRoot, and capacity memory.

Node configuration file (YAML, one document)::

    devices:                       # compact form: groups of identical devices
    - driver: gpu.example.com      # required
      name: gpu                    # device name prefix (default "gpu"): gpu-0 ... gpu-<count-1>
      count: 8                     # default 1
      firstIndex: 0                # the `index` attribute of the first device (default 0)
      attributes:                  # plain int, bool or string values, or the typed wire form
        type: gpu                  #   ({version: 9.0.0}, {string: ...}); every device also gets
        productName: Sim H100      #   `index: <i>` unless it sets one
        cudaComputeCapability: {version: 9.0.0}
      capacity: {memory: 80Gi}     # QUANTITY or the wire form {value: ..., requestPolicy: {...}}
      allowMultipleAllocations: false
      counters: {memory: 80Gi, multiprocessors: "132"}
                                   # MIG-style: device i gets the counter set <name>-<i>-counter-set
                                   # holding these counters; the whole device consumes all of them
      partitions:                  # devices carved out of each device, consuming its counters
      - profile: 3g.40gb           # named <name>-<i>-mig-<profile without dots>-<j>
        count: 2
        capacity: {memory: 40Gi}
        consumes: {memory: 40Gi, multiprocessors: "66"}
        attributes: {}             # partitions inherit the device's attributes (index included),
                                   # with type: mig and profile: <profile> unless set here
    slices:                        # full form: ResourceSlice specs (driver, devices,
    - driver: nic.example.com      # sharedCounters); node, pool and generation are filled in
      devices: [{name: nic-0}]

Every device of the compact form carries `index`, so it lands in CUDA_VISIBLE_DEVICES when
allocated (below); declare devices that are not GPUs (NICs, ...) in the full form.

Publishing. Each driver gets one pool named after the node, owned by the Node (ownerReference):
its counter sets in slices of their own (at most 32 counters per slice) followed by its devices
(at most 128 per slice, 64 when they consume counters), all named ``<node>-<driver>-<k>`` with
``resourceSliceCount`` set. When the devices of a driver change, every slice of its pool is
rewritten with ``pool.generation`` one higher (consumers use the highest generation only); slices
of drivers no longer present, or beyond the new count, are deleted.

Container environment. The devices a container gets are the allocation results of the claims it
names in ``resources.claims`` (only the results of the named request when ``request`` is set; a
request of a firstAvailable list matches its ``request/subrequest`` results), as the kubelet
hands out only the claims a container names (k8s.io/api core/v1 ResourceRequirements.Claims). It
sees them as:
  - ``MLPLANE_DRA_DEVICES``: every allocated device as ``driver/pool/device``, comma-separated;
  - ``CUDA_VISIBLE_DEVICES``: for each result whose device carries the attribute ``uuid``
    (real NVIDIA GPUs) or else ``index`` (simulated GPUs), that value, in result order, without
    repeats; unset (left as the agent's environment has it) when no such device is allocated.
These are applied last, as a runtime applies CDI edits after the container's own env.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from mlplane.api.core import Container, Node, Pod
from mlplane.api.errors import NotFound
from mlplane.api.meta import ObjectMeta, owner_reference
from mlplane.api.resource import (RESOURCE_SLICE_MAX_DEVICES, RESOURCE_SLICE_MAX_SHARED_COUNTERS, CounterSet,
                                  Device, DeviceAttribute, DeviceCapacity, ResourceClaim, ResourceSlice,
                                  ResourceSliceSpec)
from mlplane.control.store.base import Store

log = logging.getLogger(__name__)

NVIDIA_DRIVER = "gpu.nvidia.com"
DEVICES_ENV = "MLPLANE_DRA_DEVICES"
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
MAX_DEVICES_CONSUMING_COUNTERS = 64  # per slice, upstream 1.35
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"


class NodeConfigError(ValueError):
    """The node configuration file is unreadable or invalid; the message names the file and field."""


class ClaimNotReady(Exception):
    """A claim the container needs is missing or not allocated yet: the container must wait."""


@dataclass
class DriverDevices:
    """What one driver publishes for this node: counter sets and devices, in order."""

    driver: str
    devices: list[Device]
    counter_sets: list[CounterSet]


# -- the node configuration file -------------------------------------------------------------------

def _check_keys(where: str, data: object, allowed: set[str], required: set[str] = frozenset()) -> dict:
    if not isinstance(data, dict):
        raise NodeConfigError(f"{where}: must be a mapping")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise NodeConfigError(f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")
    for key in sorted(required - set(data)):
        raise NodeConfigError(f"{where}.{key}: Required value")
    return data


def _attribute(where: str, value: object) -> DeviceAttribute:
    if isinstance(value, bool):
        return DeviceAttribute(bool_value=value)
    if isinstance(value, int):
        return DeviceAttribute(int_value=value)
    if isinstance(value, str):
        return DeviceAttribute(string_value=value)
    try:
        return DeviceAttribute.model_validate(value)
    except ValidationError as e:
        raise NodeConfigError(f"{where}: {e.errors()[0]['msg']}") from None


def _quantity(value: object) -> str:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value  # type: ignore


def _capacity(where: str, value: object) -> DeviceCapacity:
    try:
        if isinstance(value, dict):
            return DeviceCapacity.model_validate(value)
        return DeviceCapacity(value=_quantity(value))
    except ValidationError as e:
        raise NodeConfigError(f"{where}: {e.errors()[0]['msg']}") from None


def _counters(where: str, values: object) -> dict:
    if not isinstance(values, dict) or not values:
        raise NodeConfigError(f"{where}: must be a non-empty mapping of counter name to quantity")
    return {str(k): {"value": _quantity(v)} for k, v in values.items()}


def _profile_name(profile: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", profile.lower())


def _group(where: str, group: object) -> tuple[str, list[Device], list[CounterSet]]:
    g = _check_keys(where, group, {"driver", "name", "count", "firstIndex", "attributes", "capacity",
                                   "allowMultipleAllocations", "counters", "partitions"}, {"driver"})
    prefix = g.get("name", "gpu")
    count = g.get("count", 1)
    first = g.get("firstIndex", 0)
    for key, value, least in (("count", count, 1), ("firstIndex", first, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise NodeConfigError(f"{where}.{key}: Invalid value: {value!r}: must be an integer of at least {least}")
    attrs = {k: _attribute(f"{where}.attributes.{k}", v) for k, v in (g.get("attributes") or {}).items()}
    capacity = {k: _capacity(f"{where}.capacity.{k}", v) for k, v in (g.get("capacity") or {}).items()}
    counters = _counters(f"{where}.counters", g["counters"]) if "counters" in g else None
    partitions = g.get("partitions") or []
    if partitions and counters is None:
        raise NodeConfigError(f"{where}.partitions: partitions need `counters` on the device to consume")
    devices: list[Device] = []
    sets: list[CounterSet] = []
    for i in range(count):
        name = f"{prefix}-{i}"
        own = {"index": DeviceAttribute(int_value=first + i), **attrs}
        device = {"name": name, "attributes": own, "capacity": capacity or None,
                  "allow_multiple_allocations": g.get("allowMultipleAllocations")}
        if counters is not None:
            set_name = f"{name}-counter-set"
            sets.append(CounterSet.model_validate({"name": set_name, "counters": counters}))
            device["consumes_counters"] = [{"counterSet": set_name, "counters": counters}]
        devices.append(Device.model_validate(_wire(device)))
        for j, part in enumerate(partitions):
            pw = f"{where}.partitions[{j}]"
            p = _check_keys(pw, part, {"profile", "count", "attributes", "capacity", "consumes"},
                            {"profile", "consumes"})
            n = p.get("count", 1)
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise NodeConfigError(f"{pw}.count: Invalid value: {n!r}: must be a positive integer")
            part_attrs = {**own, "type": DeviceAttribute(string_value="mig"),
                          "profile": DeviceAttribute(string_value=str(p["profile"])),
                          **{k: _attribute(f"{pw}.attributes.{k}", v) for k, v in (p.get("attributes") or {}).items()}}
            part_cap = {k: _capacity(f"{pw}.capacity.{k}", v) for k, v in (p.get("capacity") or {}).items()}
            consumes = _counters(f"{pw}.consumes", p["consumes"])
            for k in range(n):
                devices.append(Device.model_validate(_wire({
                    "name": f"{name}-mig-{_profile_name(str(p['profile']))}-{k}", "attributes": part_attrs,
                    "capacity": part_cap or None,
                    "consumes_counters": [{"counterSet": f"{name}-counter-set", "counters": consumes}]})))
    return g["driver"], devices, sets


def _dump(model) -> dict:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def _wire(device: dict) -> dict:
    """A Device's wire dict from a dict holding models and snake_case keys."""
    out = {}
    for key, value in device.items():
        if value is None:
            continue
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)
        if isinstance(value, dict):
            value = {k: _dump(v) if hasattr(v, "model_dump") else v for k, v in value.items()}
        out[camel] = value
    return out


def parse_node_config(data: object, source: str = "node config") -> list[DriverDevices]:
    """The device inventory a node configuration document declares; NodeConfigError names the field."""
    if data is None:
        return []
    doc = _check_keys(source, data, {"devices", "slices"})
    by_driver: dict[str, DriverDevices] = {}

    def add(where: str, driver: object, devices: list[Device], sets: list[CounterSet]) -> None:
        if not isinstance(driver, str) or not driver:
            raise NodeConfigError(f"{where}.driver: Required value")
        entry = by_driver.setdefault(driver, DriverDevices(driver, [], []))
        entry.devices.extend(devices)
        entry.counter_sets.extend(sets)

    try:
        for i, group in enumerate(doc.get("devices") or []):
            where = f"{source}: devices[{i}]"
            driver, devices, sets = _group(where, group)
            add(where, driver, devices, sets)
        for i, spec in enumerate(doc.get("slices") or []):
            where = f"{source}: slices[{i}]"
            s = _check_keys(where, spec, {"driver", "devices", "sharedCounters"}, {"driver"})
            parsed = ResourceSliceSpec.model_validate({"driver": s["driver"], "nodeName": "x",
                                                       "pool": {"name": "x", "generation": 0,
                                                                "resourceSliceCount": 1},
                                                       "devices": s.get("devices"),
                                                       "sharedCounters": s.get("sharedCounters")})
            add(where, s["driver"], parsed.devices or [], parsed.shared_counters or [])
    except ValidationError as e:
        err = e.errors()[0]
        raise NodeConfigError(f"{source}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    inventory = [by_driver[d] for d in sorted(by_driver)]
    for entry in inventory:  # the slices a node would publish must pass the API's own validation
        for spec in slice_specs("node", entry, 1):
            errors = ResourceSlice(metadata=ObjectMeta(name="check"), spec=spec).semantic_errors()
            if errors:
                field, message = errors[0]
                raise NodeConfigError(f"{source}: driver {entry.driver}: {field}: {message}")
    return inventory


def load_node_config(path: str | Path) -> list[DriverDevices]:
    """Read and check a node configuration file (see the module docstring for its format)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise NodeConfigError(f"node config {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NodeConfigError(f"node config {path}: invalid YAML: {e}") from None
    return parse_node_config(data, f"node config {path}")


# -- NVIDIA GPUs through NVML ----------------------------------------------------------------------

# go-nvlib's names for NVML's enums (pkg/nvlib/device: GetArchitectureAsString, GetBrandAsString).
_ARCHITECTURES = {2: "Kepler", 3: "Maxwell", 4: "Pascal", 5: "Volta", 6: "Turing", 7: "Ampere",
                  8: "Ada Lovelace", 9: "Hopper", 10: "Blackwell"}
_BRANDS = {1: "Quadro", 2: "Tesla", 3: "NVS", 4: "Grid", 5: "GeForce", 6: "Titan", 7: "NvidiaVApps",
           8: "NvidiaVPC", 9: "NvidiaVCS", 10: "NvidiaVWS", 11: "NvidiaCloudGaming", 12: "QuadroRTX",
           13: "NvidiaRTX", 14: "Nvidia", 15: "GeForceRTX", 16: "TitanRTX"}


def _semver(text: str) -> str:
    """A dotted version as semver (what semver.MustParse(...).String() gives): 550.54 -> 550.54.0."""
    parts = [str(int(p)) for p in text.strip().split(".")[:3]]
    return ".".join(parts + ["0"] * (3 - len(parts)))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pcie_root(bus_id: str) -> str | None:
    """The PCIe root complex of a device (pciDDDD:BB), from sysfs, as deviceattribute.GetPCIeRootAttributeByPCIBusID."""
    path = os.path.realpath(f"/sys/bus/pci/devices/{bus_id}")
    for part in path.split("/"):
        if part.startswith("pci"):
            return part
    return None


def nvml_devices() -> list[DriverDevices]:
    """The NVIDIA GPUs NVML reports, as the NVIDIA DRA driver publishes them; [] without NVML or GPUs."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError: no driver, no library, no device
        log.debug("node agent: no NVIDIA GPUs (NVML: %s)", e)
        return []
    try:
        driver_version = _semver(_text(pynvml.nvmlSystemGetDriverVersion()))
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}.0"
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor_cc = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            raw_bus = _text(pynvml.nvmlDeviceGetPciInfo(h).busId)
            bus_id = raw_bus[-12:].lower()  # NVML pads the domain to 8 digits: 00000000:1B:00.0
            attrs = {"type": DeviceAttribute(string_value="gpu"),
                     "uuid": DeviceAttribute(string_value=_text(pynvml.nvmlDeviceGetUUID(h))),
                     "productName": DeviceAttribute(string_value=_text(pynvml.nvmlDeviceGetName(h))[:64]),
                     "brand": DeviceAttribute(string_value=_BRANDS.get(pynvml.nvmlDeviceGetBrand(h), "Unknown")),
                     "architecture": DeviceAttribute(
                         string_value=_ARCHITECTURES.get(pynvml.nvmlDeviceGetArchitecture(h), "Unknown")),
                     "cudaComputeCapability": DeviceAttribute(version_value=f"{major}.{minor_cc}.0"),
                     "driverVersion": DeviceAttribute(version_value=driver_version),
                     "cudaDriverVersion": DeviceAttribute(version_value=cuda_version),
                     "pcieBusID": DeviceAttribute(string_value=bus_id)}
            root = _pcie_root(bus_id)
            if root:
                attrs[PCIE_ROOT] = DeviceAttribute(string_value=root)
            memory = pynvml.nvmlDeviceGetMemoryInfo(h).total
            devices.append(Device(name=f"gpu-{pynvml.nvmlDeviceGetMinorNumber(h)}", attributes=attrs,
                                  capacity={"memory": DeviceCapacity(value=str(memory))}))
    except Exception as e:
        log.warning("node agent: reading NVIDIA GPUs through NVML failed: %s", e)
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return [DriverDevices(NVIDIA_DRIVER, devices, [])] if devices else []


# -- ResourceSlices ----------------------------------------------------------------------------------

def _chunks(entry: DriverDevices) -> list[dict]:
    """The pool's slice contents: counter sets first (≤32 counters a slice), then devices."""
    parts: list[dict] = []
    current: list[CounterSet] = []
    total = 0
    for cs in entry.counter_sets:
        if current and total + len(cs.counters) > RESOURCE_SLICE_MAX_SHARED_COUNTERS:
            parts.append({"shared_counters": current})
            current, total = [], 0
        current.append(cs)
        total += len(cs.counters)
    if current:
        parts.append({"shared_counters": current})
    limit = MAX_DEVICES_CONSUMING_COUNTERS if any(d.consumes_counters for d in entry.devices) \
        else RESOURCE_SLICE_MAX_DEVICES
    for start in range(0, len(entry.devices), limit):
        parts.append({"devices": entry.devices[start:start + limit]})
    return parts or [{"devices": []}]


def slice_name(node_name: str, driver: str, k: int) -> str:
    return f"{node_name}-{driver}-{k}"


def slice_specs(node_name: str, entry: DriverDevices, generation: int) -> list[ResourceSliceSpec]:
    """The specs of the slices of ``entry``'s pool on ``node_name``, in slice order."""
    parts = _chunks(entry)
    return [ResourceSliceSpec.model_validate({
        "driver": entry.driver, "nodeName": node_name,
        "pool": {"name": node_name, "generation": generation, "resourceSliceCount": len(parts)},
        "devices": [_dump(d) for d in part.get("devices", [])],
        **({"sharedCounters": [_dump(c) for c in part["shared_counters"]]} if "shared_counters" in part else {})})
        for part in parts]


def build_slices(node_name: str, entry: DriverDevices, generation: int,
                 owner: Node | None = None, published: list[ResourceSlice] = ()) -> list[ResourceSlice]:
    """The ResourceSlices of ``entry``'s pool on ``node_name``, owned by ``owner`` when given. A
    device taint without ``timeAdded`` that ``published`` (the slices stored now) already has on the
    same device keeps its stored time, so rewriting a slice neither restarts a taint's
    tolerationSeconds nor looks like a change; a new one gets the time of now (ResourceSlice)."""
    refs = [owner_reference(owner, controller=True)] if owner else None
    specs = slice_specs(node_name, entry, generation)
    _keep_taint_times(specs, published)
    return [ResourceSlice(metadata=ObjectMeta(name=slice_name(node_name, entry.driver, k), owner_references=refs),
                          spec=spec) for k, spec in enumerate(specs)]


def _keep_taint_times(specs: list[ResourceSliceSpec], published: list[ResourceSlice]) -> None:
    stored = {(d.name, t.key, t.value or "", t.effect): t.time_added
              for s in published for d in s.spec.devices or () for t in d.taints or () if t.time_added}
    for spec in specs:
        for d in spec.devices or ():
            for t in d.taints or ():
                if t.time_added is None:
                    t.time_added = stored.get((d.name, t.key, t.value or "", t.effect))


def _content(s: ResourceSlice) -> dict:
    d = _dump(s.spec)
    d["pool"].pop("generation", None)
    return {"name": s.name, "spec": d}


def _owned_by(s: ResourceSlice, node: Node) -> bool:
    return any(r.kind == "Node" and r.name == node.name for r in s.metadata.owner_references or [])


def publish_slices(store: Store, node: Node, inventory: list[DriverDevices]) -> bool:
    """Make the slices this node owns match ``inventory``; returns whether anything was written."""
    mine = [s for s in store.list(ResourceSlice).items if _owned_by(s, node)]
    old: dict[str, list[ResourceSlice]] = {}
    for s in mine:
        old.setdefault(s.spec.driver, []).append(s)
    changed = False
    for entry in inventory:
        current = sorted(old.pop(entry.driver, []), key=lambda s: s.name)
        generation = max((s.spec.pool.generation for s in current), default=0)
        wanted = build_slices(node.name, entry, generation, owner=node, published=current)
        if [_content(s) for s in wanted] == [_content(s) for s in current] and \
                all(s.spec.node_name == node.name for s in current):
            continue
        changed = True
        by_name = {s.name: s for s in current}
        for s in build_slices(node.name, entry, generation + 1, owner=node, published=current):
            existing = by_name.pop(s.name, None)
            if existing is None:
                store.create(s)
            else:
                s.metadata.resource_version = existing.metadata.resource_version
                store.update(s)
        for s in by_name.values():
            _delete(store, s)
    for stale in old.values():
        for s in stale:
            changed = True
            _delete(store, s)
    return changed


def _delete(store: Store, s: ResourceSlice) -> None:
    try:
        store.delete(ResourceSlice, None, s.name)
    except NotFound:
        pass


# -- the container's environment ---------------------------------------------------------------------

_NOT_NEEDED = ""


def _pod_claim_names(pod: Pod) -> dict[str, str | None]:
    """Pod claim name -> ResourceClaim name: None while a template's claim is not recorded yet, ""
    when the pod's status says none was needed (core/v1 PodResourceClaimStatus.resourceClaimName)."""
    generated = {s.name: s.resource_claim_name or _NOT_NEEDED for s in pod.status.resource_claim_statuses or []}
    return {c.name: c.resource_claim_name or generated.get(c.name) for c in pod.spec.resource_claims or []}


def _device_attributes(slices: list[ResourceSlice], driver: str, pool: str, device: str) -> dict:
    newest = max((s.spec.pool.generation for s in slices
                  if s.spec.driver == driver and s.spec.pool.name == pool), default=None)
    for s in slices:
        if s.spec.driver == driver and s.spec.pool.name == pool and s.spec.pool.generation == newest:
            for d in s.spec.devices or []:
                if d.name == device:
                    return d.attributes or {}
    return {}


def _visible_id(attrs: dict, driver: str) -> str | None:
    for key in ("uuid", "index"):
        attr = attrs.get(key) or attrs.get(f"{driver}/{key}")
        if attr is not None and attr.value is not None:
            return str(attr.value)
    return None


def container_device_env(store: Store, pod: Pod, container: Container) -> dict[str, str]:
    """The variables that show ``container`` its allocated devices (see the module docstring).

    Raises ClaimNotReady when a claim it names does not exist, is not allocated, or is not reserved
    for this pod (the kubelet's checks in pkg/kubelet/cm/dra/manager.go PrepareResources)."""
    refs = (container.resources.claims if container.resources else None) or []
    if not refs:
        return {}
    names = _pod_claim_names(pod)
    results = []
    for ref in refs:
        claim_name = names.get(ref.name)
        if claim_name == _NOT_NEEDED:
            continue
        if claim_name is None:
            raise ClaimNotReady(f"pod claim {ref.name!r} has no ResourceClaim yet")
        try:
            claim = store.get(ResourceClaim, pod.namespace, claim_name)
        except NotFound:
            raise ClaimNotReady(f"ResourceClaim {pod.namespace}/{claim_name} not found") from None
        allocation = claim.status.allocation
        if allocation is None:
            raise ClaimNotReady(f"ResourceClaim {pod.namespace}/{claim_name} is not allocated")
        if not any(c.uid == pod.uid for c in claim.status.reserved_for or []):
            raise ClaimNotReady(f"pod {pod.name} ({pod.uid}) is not allowed to use ResourceClaim "
                                f"{pod.namespace}/{claim_name}: it is not reserved for the pod")
        for r in allocation.devices.results or []:
            if ref.request is None or r.request == ref.request or r.request.startswith(ref.request + "/"):
                results.append(r)
    if not results:
        return {}
    slices = store.list(ResourceSlice).items
    devices: list[str] = []
    visible: list[str] = []
    for r in results:
        entry = f"{r.driver}/{r.pool}/{r.device}"
        if entry not in devices:
            devices.append(entry)
        vid = _visible_id(_device_attributes(slices, r.driver, r.pool, r.device), r.driver)
        if vid is not None and vid not in visible:
            visible.append(vid)
    env = {DEVICES_ENV: ",".join(devices)}
    if visible:
        env[CUDA_ENV] = ",".join(visible)
    return env
