"""EndpointPickerConfig (llm-d's shape) -> EndpointPicker, and our named routing policies.

Accepted documents (llm-d-router:docs/architecture.md; GIE site-src/guides/epp-configuration):

    apiVersion: llm-d.ai/v1alpha1            # or inference.networking.x-k8s.io/v1alpha1 (GIE before the move)
    kind: EndpointPickerConfig
    plugins:
    - {type: queue-scorer, name: optional-instance-name, parameters: {...}}
    schedulingProfiles:
    - name: default
      plugins:
      - {pluginRef: queue-scorer, weight: 2}

Every error names the field it is about (``plugins[1].parameters.affinityThreshold: ...``). One
scheduling profile runs per request (``single-profile-handler``); without ``schedulingProfiles`` a
profile holding every declared plugin (weight 1) is used, as upstream does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from mlplane.policy.traffic import plugins as P
from mlplane.policy.traffic.flow import FlowConfig
from mlplane.policy.traffic.picker import EndpointPicker, PrefixSettings

API_VERSIONS = ("llm-d.ai/v1alpha1", "inference.networking.x-k8s.io/v1alpha1")
KIND = "EndpointPickerConfig"
# Upstream sections we accept and hand to the caller (``EndpointPickerConfig.extra``); flowControl and
# saturationDetector are read by ``flow_config``, the others (data layer, parsers) have nothing to set here.
PASSTHROUGH = ("featureGates", "flowControl", "saturationDetector", "dataLayer", "requestHandler", "parser")


class ConfigError(ValueError):
    """The config is invalid; ``errors`` lists every problem as "field.path: message"."""

    def __init__(self, errors: list[str]):
        super().__init__("invalid EndpointPickerConfig: " + "; ".join(errors))
        self.errors = errors


@dataclass
class PluginSpec:
    type: str
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProfileRef:
    plugin_ref: str
    weight: float | None = None


@dataclass
class SchedulingProfile:
    name: str
    plugins: list[ProfileRef]


@dataclass
class EndpointPickerConfig:
    api_version: str
    plugins: list[PluginSpec]
    profiles: list[SchedulingProfile]
    extra: dict[str, Any] = field(default_factory=dict)  # featureGates, saturationDetector, flowControl …

    def to_dict(self) -> dict:
        doc: dict[str, Any] = {"apiVersion": self.api_version, "kind": KIND, "plugins": []}
        for spec in self.plugins:
            item: dict[str, Any] = {"type": spec.type}
            if spec.name != spec.type:
                item["name"] = spec.name
            if spec.parameters:
                item["parameters"] = dict(spec.parameters)
            doc["plugins"].append(item)
        doc["schedulingProfiles"] = []
        for profile in self.profiles:
            refs = []
            for ref in profile.plugins:
                refs.append({"pluginRef": ref.plugin_ref} if ref.weight is None
                            else {"pluginRef": ref.plugin_ref, "weight": ref.weight})
            doc["schedulingProfiles"].append({"name": profile.name, "plugins": refs})
        doc.update(copy.deepcopy(self.extra))
        return doc


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fields(item: Any, path: str, fields: tuple[str, ...], errors: list[str]) -> bool:
    """Whether ``item`` at ``path`` is a mapping; errors for it not being one and for keys outside ``fields``."""
    if not isinstance(item, Mapping):
        errors.append(f"{path}: must be a mapping with {', '.join(fields[:-1])} and {fields[-1]}")
        return False
    errors.extend(f"{path}.{key}: unknown field" for key in item if key not in fields)
    return True


def _required(item: Mapping, path: str, key: str, errors: list[str]) -> str | None:
    """``item[key]`` when it is a non-empty string, else None and an error."""
    value = item.get(key)
    if isinstance(value, str) and value:
        return value
    errors.append(f"{path}.{key}: required")
    return None


def load_picker_config(source: str | bytes | Mapping[str, Any]) -> EndpointPickerConfig:
    """Parse and validate a config given as YAML/JSON text or as a dict."""
    if isinstance(source, (str, bytes)):
        try:
            doc = yaml.safe_load(source)
        except yaml.YAMLError as e:
            raise ConfigError([f"not valid YAML: {e}"]) from None
    else:
        doc = source
    if not isinstance(doc, Mapping):
        raise ConfigError(["the config must be a mapping (apiVersion, kind, plugins, schedulingProfiles)"])
    errors: list[str] = []
    api_version = doc.get("apiVersion")
    if api_version not in API_VERSIONS:
        errors.append(f"apiVersion: must be one of {', '.join(API_VERSIONS)}, got {api_version!r}")
    if doc.get("kind") != KIND:
        errors.append(f"kind: must be {KIND}, got {doc.get('kind')!r}")
    for key in doc:
        if key not in ("apiVersion", "kind", "plugins", "schedulingProfiles", *PASSTHROUGH):
            errors.append(f"{key}: unknown field")

    specs: list[PluginSpec] = []
    raw_plugins = doc.get("plugins")
    if raw_plugins is None:
        raw_plugins = []
    if not isinstance(raw_plugins, list):
        errors.append("plugins: must be a list")
        raw_plugins = []
    names: dict[str, int] = {}
    for i, item in enumerate(raw_plugins):
        path = f"plugins[{i}]"
        if not _fields(item, path, ("type", "name", "parameters"), errors):
            continue
        ptype = _required(item, path, "type", errors)
        if ptype is None:
            continue
        if ptype not in P.REGISTRY:
            errors.append(f"{path}.type: unknown plugin type {ptype!r} (known: {', '.join(sorted(P.REGISTRY))})")
            continue
        name = item.get("name", ptype)
        if not isinstance(name, str) or not name:
            errors.append(f"{path}.name: must be a non-empty string")
            continue
        if name in names:
            errors.append(f"{path}.name: {name!r} is already the name of plugins[{names[name]}]")
            continue
        names[name] = i
        params = item.get("parameters") or {}
        if not isinstance(params, Mapping):
            errors.append(f"{path}.parameters: must be a mapping")
            continue
        try:
            P.make(ptype, name, **params)
        except P.ParamError as e:
            errors.append(f"{path}.parameters.{e.field}: {e.message}")
            continue
        specs.append(PluginSpec(ptype, name, dict(params)))

    profiles: list[SchedulingProfile] = []
    raw_profiles = doc.get("schedulingProfiles")
    if raw_profiles is None:
        profiles = [SchedulingProfile("default", [ProfileRef(s.name) for s in specs])]
    elif not isinstance(raw_profiles, list) or not raw_profiles:
        errors.append("schedulingProfiles: must be a non-empty list")
    else:
        if len(raw_profiles) > 1:
            errors.append(f"schedulingProfiles: only one profile is supported (single-profile-handler), "
                          f"got {len(raw_profiles)}")
        for i, prof in enumerate(raw_profiles):
            path = f"schedulingProfiles[{i}]"
            if not _fields(prof, path, ("name", "plugins"), errors):
                continue
            pname = _required(prof, path, "name", errors)
            refs = []
            raw_refs = prof.get("plugins")
            if not isinstance(raw_refs, list):
                errors.append(f"{path}.plugins: must be a list")
                raw_refs = []
            pickers = 0
            for j, ref in enumerate(raw_refs):
                rpath = f"{path}.plugins[{j}]"
                if not _fields(ref, rpath, ("pluginRef", "weight"), errors):
                    continue
                target = _required(ref, rpath, "pluginRef", errors)
                if target is None:
                    continue
                if target not in names:
                    if target in P.REGISTRY or raw_plugins_named(raw_plugins, target):
                        errors.append(f"{rpath}.pluginRef: {target!r} is not declared under plugins")
                    else:
                        errors.append(f"{rpath}.pluginRef: no plugin named {target!r}")
                    continue
                weight = ref.get("weight")
                if weight is not None:
                    if not _is_number(weight):
                        errors.append(f"{rpath}.weight: must be a number, not {type(weight).__name__}")
                        continue
                    if weight < 0:
                        errors.append(f"{rpath}.weight: must be at least 0, got {weight}")
                        continue
                spec = next(s for s in specs if s.name == target)
                if issubclass(P.REGISTRY[spec.type], P.Picker):
                    pickers += 1
                    if pickers > 1:
                        errors.append(f"{rpath}.pluginRef: a profile has one picker; {target!r} is a second")
                        continue
                refs.append(ProfileRef(target, None if weight is None else float(weight)))
            profiles.append(SchedulingProfile(pname or "", refs))
    gates = doc.get("featureGates")
    if gates is not None and (not isinstance(gates, list) or not all(isinstance(g, str) for g in gates)):
        errors.append("featureGates: must be a list of gate names (name, name=true or name=false)")
    extra = {key: copy.deepcopy(doc[key]) for key in PASSTHROUGH if key in doc}
    cfg = EndpointPickerConfig(api_version if isinstance(api_version, str) else "", specs, profiles, extra)
    if not errors:
        try:
            flow_config(cfg)
        except ValueError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError(errors)
    return cfg


def feature_gate(cfg: EndpointPickerConfig, name: str, default: bool = False) -> bool:
    """Whether ``featureGates`` turns ``name`` on ("name" or "name=true"; "name=false" turns it off)."""
    value = default
    for gate in cfg.extra.get("featureGates") or ():
        gate_name, _, setting = gate.partition("=")
        if gate_name.strip() == name:
            value = setting.strip().lower() in ("", "true")
    return value


def flow_config(cfg: EndpointPickerConfig) -> FlowConfig:
    """The flow-control settings of a config: its ``flowControl`` section, with the saturation detector
    named by ``flowControl.saturationDetector`` or the deprecated top-level ``saturationDetector``
    (a ``utilization-detector`` plugin; defaults when none). Raises ValueError naming the field.
    Whether flow control runs at all is ``feature_gate(cfg, "flowControl")``."""
    plugins = {s.name: (s.type, s.parameters) for s in cfg.plugins}
    detector = cfg.extra.get("saturationDetector")
    if detector is None and "utilization-detector" in plugins:
        detector = {"pluginRef": "utilization-detector"}
    if detector is not None and not isinstance(detector, Mapping):
        raise ValueError("saturationDetector: must be a mapping with pluginRef")
    flow = cfg.extra.get("flowControl")
    if flow is not None and not isinstance(flow, Mapping):
        raise ValueError("flowControl: must be a mapping")
    return FlowConfig.from_dict(flow, detector=detector, plugins=plugins)


def raw_plugins_named(raw: list, name: str) -> bool:
    return any(isinstance(item, Mapping) and item.get("name", item.get("type")) == name for item in raw)


def build_picker(cfg: EndpointPickerConfig | str | bytes | Mapping[str, Any], name: str = "") -> EndpointPicker:
    """A new EndpointPicker (fresh state) from a config."""
    if not isinstance(cfg, EndpointPickerConfig):
        cfg = load_picker_config(cfg)
    instances = {s.name: P.make(s.type, s.name, **s.parameters) for s in cfg.plugins}
    prefix = PrefixSettings()
    for spec in cfg.plugins:
        params = spec.parameters
        block = params.get("blockSizeTokens", params.get("blockSize"))
        if block is not None:
            prefix.block_tokens = block
        if params.get("maxPrefixBlocksToMatch") is not None:
            prefix.max_blocks = params["maxPrefixBlocksToMatch"]
        if params.get("lruCapacityPerServer") is not None:
            prefix.lru_capacity = params["lruCapacityPerServer"]
        if params.get("autoTune") is not None:
            prefix.auto_tune = params["autoTune"]
    for spec in cfg.plugins:
        tokens = spec.parameters.get("maxPrefixTokensToMatch")
        if tokens is not None:
            prefix.max_blocks = max(1, min(prefix.max_blocks, tokens // prefix.block_tokens))
    filters: list[P.Filter] = []
    scorers: list[tuple[P.Scorer, float]] = []
    picker: P.Picker | None = None
    profile = cfg.profiles[0]
    for ref in profile.plugins:
        plugin = instances[ref.plugin_ref]
        if isinstance(plugin, P.Filter):
            filters.append(plugin)
        if isinstance(plugin, P.Scorer):
            scorers.append((plugin, 1.0 if ref.weight is None else ref.weight))
        if isinstance(plugin, P.Picker):
            picker = plugin
    return EndpointPicker(filters, scorers, picker, prefix, name=name or profile.name)


# ---------------------------------------------------------------- named policies

def _config(plugins: list[dict], refs: list[dict]) -> dict:
    return {"apiVersion": API_VERSIONS[0], "kind": KIND, "plugins": plugins,
            "schedulingProfiles": [{"name": "default", "plugins": refs}]}


def helm_default_config() -> dict:
    """The GIE / llm-d Helm chart default: queue ×2, kv-cache ×2, prefix ×3, max-score picker."""
    return _config(
        [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}, {"type": "prefix-cache-scorer"},
         {"type": "max-score-picker"}],
        [{"pluginRef": "queue-scorer", "weight": 2}, {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
         {"pluginRef": "prefix-cache-scorer", "weight": 3}, {"pluginRef": "max-score-picker"}])


def default_config(*, affinity_threshold: float = 0.5, max_ttft_penalty_ms: float = 5000.0,
                   peak_prefill_throughput: float = 30000.0, queue_threshold_tokens: int = 1_048_576,
                   token_load_weight: float = 16.0, queue_weight: float = 1.0, kv_weight: float = 1.0,
                   balance_abs_threshold: int = 64, balance_rel_threshold: float = 1.5,
                   block_tokens: int = 64) -> dict:
    """Our default policy, "sticky until the cached endpoint is clearly the slower choice":

    - ``prefix-cache-affinity-filter`` keeps a request on the endpoints holding at least half of its
      prompt *unless* their prefill backlog - in-flight uncached tokens plus this request's uncached
      tokens there - exceeds the best other endpoint's (where the whole prompt is uncached) by more than
      ``maxTTFTPenaltyMs`` at ``peakPrefillThroughput``. Counting this request's own uncached tokens makes
      the comparison the real choice: wait behind the sticky queue, or recompute the prefix elsewhere.
      The penalty is 5 s at 30,000 tok/s (the simulator's 8B/H100 prefill rate) = 150k tokens, about ten
      15k-token Mooncake prompts. Only that product matters (both sides are tokens), so time-scaled
      simulators need no change. Why so large: breaking stickiness copies a prefix to a second endpoint,
      which evicts other prefixes there and splits later turns. In a virtual-time replay of the Mooncake
      synthetic trace through the simulator's engine (mlplane.modelserver.engine, 8 servers, arrivals 3x
      faster, requests 1990-3980) a 20k-token penalty broke affinity on 15% of requests, cut the prefix
      hit rate from 0.44 to 0.30 and almost quadrupled TTFT p90, while 90k-300k tokens did as well as
      never breaking. Upstream's default is of the same size (18 s x 15,928
      tok/s = 287k tokens). The half-prompt threshold (upstream 0.8; SGLang's cache threshold is 0.3)
      because in that replay 0.15-0.5 beat 0.8 (TTFT p90 4.9 s against 5.9 s on the trace's second half).
      Stickiness also breaks on a request-count gap (SGLang's cache-aware defaults: more than 64
      requests more and 1.5x as many), for decode-heavy hot spots the token estimate does not see.
    - ``token-load-scorer`` (look-ahead: in-flight uncached tokens + this request's uncached tokens) is
      the main load signal: for long prompts TTFT is prefill backlog (llm-d "Sticky Until Saturated":
      2.9x input tok/s over round-robin on prefill-bound traffic), and it credits partial cache hits below
      the threshold. Threshold 1 Mi tokens keeps the score linear far past any realistic backlog; weight 16
      makes one score point worth 64k tokens (~4 long prompts).
    - ``queue-scorer`` x1 and ``kv-cache-utilization-scorer`` x1 see what the router does not: other
      routers' traffic, decode-heavy work, KV pressure. A full swing of either (0 vs the most waiting; an
      empty vs a full cache) is worth about four long prompts of backlog, so they decide between endpoints
      with similar token load but cannot override a large backlog difference (weights 0 and 4 did no
      better in the replay).
    - No weighted prefix scorer after the filter: it would cancel the load escape (upstream README).
    """
    return _config(
        [{"type": "healthy-filter"},
         {"type": "approx-prefix-cache-producer", "parameters": {"blockSizeTokens": block_tokens}},
         {"type": "prefix-cache-affinity-filter",
          "parameters": {"affinityThreshold": affinity_threshold, "maxTTFTPenaltyMs": max_ttft_penalty_ms,
                         "peakPrefillThroughput": peak_prefill_throughput, "includeRequest": True,
                         "balanceAbsThreshold": balance_abs_threshold,
                         "balanceRelThreshold": balance_rel_threshold}},
         {"type": "token-load-scorer",
          "parameters": {"queueThresholdTokens": queue_threshold_tokens, "includeRequest": True}},
         {"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}, {"type": "max-score-picker"}],
        [{"pluginRef": "healthy-filter"}, {"pluginRef": "prefix-cache-affinity-filter"},
         {"pluginRef": "token-load-scorer", "weight": token_load_weight},
         {"pluginRef": "queue-scorer", "weight": queue_weight},
         {"pluginRef": "kv-cache-utilization-scorer", "weight": kv_weight},
         {"pluginRef": "max-score-picker"}])


def policy_config(name: str) -> dict:
    """The EndpointPickerConfig of a named policy."""
    if name == "round-robin":
        return _config([{"type": "healthy-filter"}, {"type": "round-robin-picker"}],
                       [{"pluginRef": "healthy-filter"}, {"pluginRef": "round-robin-picker"}])
    if name == "least-load":  # fewest requests in flight + waiting (router count or scrape, larger)
        return _config([{"type": "healthy-filter"}, {"type": "active-request-scorer"}, {"type": "max-score-picker"}],
                       [{"pluginRef": "healthy-filter"}, {"pluginRef": "active-request-scorer"},
                        {"pluginRef": "max-score-picker"}])
    if name == "prefix-only":  # cache affinity with no load term: the hot-spot baseline
        return _config([{"type": "healthy-filter"}, {"type": "prefix-cache-scorer"}, {"type": "max-score-picker"}],
                       [{"pluginRef": "healthy-filter"}, {"pluginRef": "prefix-cache-scorer"},
                        {"pluginRef": "max-score-picker"}])
    if name == "default":
        return default_config()
    raise KeyError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")


POLICIES = ("round-robin", "least-load", "prefix-only", "default")


def named_policy(name: str) -> EndpointPicker:
    """A new EndpointPicker for one of ``POLICIES``."""
    return build_picker(load_picker_config(policy_config(name)), name=name)
