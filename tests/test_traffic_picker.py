"""The endpoint picker: plugins, named policies and EndpointPickerConfig, as a gateway would use them."""

import orjson
import pytest

from mlplane.policy.traffic.config import (POLICIES, ConfigError, build_picker, default_config, feature_gate,
                                           flow_config, helm_default_config, load_picker_config, named_policy,
                                           policy_config)
from mlplane.policy.traffic.request import parse_request
from mlplane.policy.traffic.types import Endpoint, EndpointMetrics

NOW = 100.0
SYSTEM = "You are a meticulous assistant for the ACME support desk. " * 60  # ~3.5k bytes


def ep(name, *, waiting=0, running=0, kv=0.0, labels=None, updated_at=NOW, **metrics):
    return Endpoint(name=name, address=f"10.0.0.{len(name)}:8000", labels=labels or {},
                    metrics=EndpointMetrics(waiting=waiting, running=running, kv_usage=kv, updated_at=updated_at,
                                            **metrics))


def pool(n=3):
    return [ep(f"pod-{i}") for i in range(n)]


def req(prompt, rid="r", model="llama", base_models=None):
    body = orjson.dumps({"model": model, "prompt": prompt, "max_tokens": 16})
    return parse_request("/v1/completions", body, {}, request_id=rid, base_models=base_models)


def chat(messages, rid="r"):
    body = orjson.dumps({"model": "llama", "messages": messages})
    return parse_request("/v1/chat/completions", body, {}, request_id=rid)


def serve(picker, request, endpoints, now=NOW):
    """Pick, send and finish a request the way the gateway does; returns the endpoint used."""
    d = picker.pick(request, endpoints, now)
    target = d.endpoints[0]
    picker.on_sent(request, target, now)
    picker.on_first_token(request, target, now)
    picker.on_done(request, target, now, ok=True)
    return target


def config_with(*plugins, picker="max-score-picker"):
    """A one-profile config of (type, weight, parameters) scorers/filters and a picker."""
    specs, refs = [], []
    for type_, weight, params in plugins:
        specs.append({"type": type_, **({"parameters": params} if params else {})})
        refs.append({"pluginRef": type_, **({} if weight is None else {"weight": weight})})
    specs.append({"type": picker})
    refs.append({"pluginRef": picker})
    return {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig", "plugins": specs,
            "schedulingProfiles": [{"name": "default", "plugins": refs}]}


# ---------------------------------------------------------------- prefix affinity and the load escape

@pytest.mark.parametrize("policy", ["default", "prefix-only"])
def test_shared_prefix_goes_to_the_endpoint_that_served_it(policy):
    picker = named_policy(policy)
    endpoints = pool(4)
    first = serve(picker, req(SYSTEM + "Question: how do I reset my password?", "r0"), endpoints)
    for i in range(1, 8):
        d = picker.pick(req(SYSTEM + f"Question {i}: where is my invoice?", f"r{i}"), endpoints, NOW)
        assert d.endpoints[0] is first
    assert "prefix affinity" in d.reason or policy == "prefix-only"


def test_helm_default_blend_also_follows_the_prefix():
    picker = build_picker(helm_default_config())
    endpoints = pool(3)
    first = serve(picker, req(SYSTEM + "first", "a"), endpoints)
    assert picker.pick(req(SYSTEM + "second", "b"), endpoints, NOW).endpoints[0] is first


def test_chat_conversation_stays_on_its_endpoint():
    picker = named_policy("default")
    endpoints = pool(4)
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Summarise my last order."}]
    where = serve(picker, chat(history, "t1"), endpoints)
    history += [{"role": "assistant", "content": "You ordered three widgets."}, {"role": "user", "content": "Ship?"}]
    assert picker.pick(chat(history, "t2"), endpoints, NOW).endpoints[0] is where


def test_load_escape_moves_a_shared_prefix_off_a_backlogged_endpoint():
    picker = named_policy("default")
    endpoints = pool(3)
    hot = serve(picker, req(SYSTEM + "q0", "r0"), endpoints)
    hot.inflight_tokens = 10_000  # a third of a second of queued prefill at 30k tok/s: worth waiting for
    d = picker.pick(req(SYSTEM + "q1", "r1"), endpoints, NOW)
    assert d.endpoints[0] is hot and d.reason == "prefix affinity"
    hot.inflight_tokens = 200_000  # over the 5 s penalty behind: go where the prefix must be recomputed
    d = picker.pick(req(SYSTEM + "q2", "r2"), endpoints, NOW)
    assert d.endpoints[0] is not hot
    assert d.reason.startswith("load escape")


def test_request_count_gap_also_breaks_stickiness():
    """SGLang's cache-aware balance rule (more than 64 requests more and 1.5x as many) as a second escape."""
    picker = named_policy("default")
    endpoints = pool(3)
    hot = serve(picker, req(SYSTEM + "q0", "r0"), endpoints)
    hot.inflight = 60
    assert picker.pick(req(SYSTEM + "q1", "r1"), endpoints, NOW).endpoints[0] is hot
    hot.inflight = 70
    d = picker.pick(req(SYSTEM + "q2", "r2"), endpoints, NOW)
    assert d.endpoints[0] is not hot and d.reason == "load escape: cached endpoints have 70 requests, others 0"


def test_prefix_only_keeps_piling_onto_the_hot_endpoint():
    picker = named_policy("prefix-only")
    endpoints = pool(3)
    hot = serve(picker, req(SYSTEM + "q0", "r0"), endpoints)
    hot.inflight_tokens = 200_000
    hot.metrics.waiting = 40
    assert picker.pick(req(SYSTEM + "q1", "r1"), endpoints, NOW).endpoints[0] is hot


def test_burst_on_one_new_prefix_spills_once_the_sticky_endpoint_is_backlogged():
    """Requests sent without finishing (a burst) share a 15k-token document and add 3k tokens each: the
    endpoint holding the document takes them while its queued prefill stays within the penalty (here
    1 s at 20k tok/s = 20k tokens) of recomputing the document elsewhere, then the prefix spreads."""
    picker = build_picker(default_config(max_ttft_penalty_ms=1000, peak_prefill_throughput=20000))
    endpoints = pool(3)
    document = "Shared context document. " * 2400  # 60 KB = 15k tokens
    used, reasons = [], []
    for i in range(10):
        r = req(document + f" user question {i} " + "details " * 1500, f"b{i}")  # +3k tokens
        d = picker.pick(r, endpoints, NOW)
        picker.on_sent(r, d.endpoints[0], NOW)
        used.append(d.endpoints[0].name)
        reasons.append(d.reason)
    assert used[:7] == [used[0]] * 7 and reasons[1:7] == ["prefix affinity"] * 6
    assert used[7] != used[0] and reasons[7].startswith("load escape")
    assert used[8:] == [used[7]] * 2  # the new copy is now the less backlogged cached endpoint


def test_distinct_prompts_spread_by_token_load():
    picker = named_policy("default")
    endpoints = pool(3)
    for i in range(6):
        r = req(f"unique prompt {i} " + "z" * (4000 + i), f"u{i}")
        picker.on_sent(r, picker.pick(r, endpoints, NOW).endpoints[0], NOW)
    assert sorted(e.inflight for e in endpoints) == [2, 2, 2]


# ---------------------------------------------------------------- load scorers

def test_queue_scorer_prefers_the_shorter_queue_and_counts_what_it_sent_since_the_scrape():
    picker = build_picker(config_with(("queue-scorer", None, None)))
    a, b, c = ep("a", waiting=5), ep("b", waiting=1), ep("c", waiting=3)
    assert picker.pick(req("x", "q0"), [a, b, c], NOW).endpoints == [b, c, a]
    sent = []
    for i in range(4):  # no new scrape: b's queue grows by what the router sent it
        r = req("x", f"q{i + 1}")
        target = picker.pick(r, [a, b, c], NOW).endpoints[0]
        picker.on_sent(r, target, NOW)
        sent.append(target.name)
    assert sent[:2] == ["b", "b"] and "c" in sent
    # a request that has produced its first token is no longer waiting: it leaves the estimate
    r = req("x", "fast")
    picker.on_sent(r, a, NOW)
    assert picker.pending(a) == (1, r.prompt_tokens)
    picker.on_first_token(r, a, NOW)
    assert picker.pending(a) == (0, r.prompt_tokens)  # its KV is still held until it is done
    picker.on_done(r, a, NOW, ok=True)
    assert picker.pending(a) == (0, 0)
    b.metrics.updated_at = NOW + 0.05  # a fresh scrape replaces the router's estimate
    b.metrics.waiting = 0
    assert picker.pick(req("x", "q9"), [a, b, c], NOW).endpoints[0] is b


def test_kv_cache_scorer_prefers_free_cache():
    picker = build_picker(config_with(("kv-cache-utilization-scorer", None, None)))
    full, free = ep("full", kv=0.9), ep("free", kv=0.2)
    d = picker.pick(req("x"), [full, free], NOW)
    assert d.endpoints[0] is free
    assert d.scores == {"full": pytest.approx(0.1), "free": pytest.approx(0.8)}


def test_least_load_counts_router_inflight_and_scraped_requests():
    picker = named_policy("least-load")
    a, b = ep("a", running=3), ep("b")
    b.inflight = 5  # sent by this router, not yet visible in b's metrics
    assert picker.pick(req("x"), [a, b], NOW).endpoints[0] is a


# ---------------------------------------------------------------- LoRA, context length, utilization

def test_lora_affinity_scores():
    """1.0 adapter running, 0.8 free slot, 0.6 waiting to load, 0.0 no slot (GIE lora-affinity scorer)."""
    picker = build_picker(config_with(("lora-affinity-scorer", None, None)))
    endpoints = [
        ep("active", running_loras=frozenset({"sql"}), max_loras=2),
        ep("free-slot", running_loras=frozenset({"chat"}), max_loras=2),
        ep("waiting", running_loras=frozenset({"chat"}), waiting_loras=frozenset({"sql"}), max_loras=1),
        ep("full", running_loras=frozenset({"chat"}), max_loras=1),
    ]
    d = picker.pick(req("x", model="sql", base_models={"llama"}), endpoints, NOW)
    assert d.scores == {"active": 1.0, "free-slot": 0.8, "waiting": 0.6, "full": 0.0}
    assert d.endpoints[0].name == "active"
    base = picker.pick(req("x", model="llama", base_models={"llama"}), endpoints, NOW)
    assert set(base.scores.values()) == {1.0}


def test_context_length_scorer_and_filter():
    short = ep("short", labels={"llm-d.ai/context-length-range": "0-2048"})
    long = ep("long", labels={"llm-d.ai/context-length-range": "2048-32768"})
    plain = ep("plain")
    scorer = build_picker(config_with(("context-length-aware", None, None)))
    assert scorer.pick(req("x" * 4000), [short, long, plain], NOW).endpoints[0] is short  # 1,000 tokens
    d = scorer.pick(req("x" * 40_000), [short, long, plain], NOW)  # 10,000 tokens
    assert d.endpoints[0] is long and d.scores["plain"] == 0.5 and d.scores["short"] < 0.3

    filtering = build_picker(config_with(("context-length-aware", None, {"enableFiltering": True})))
    d = filtering.pick(req("x" * 200_000), [short, long, plain], NOW)  # 50,000 tokens: only the unlabelled pod
    assert d.endpoints == [plain]
    d = filtering.pick(req("x" * 200_000), [short, long], NOW)
    assert d.endpoints == [] and "context-length-aware" in d.reason


def test_utilization_filter_drops_saturated_and_stale_endpoints_but_fails_open():
    picker = build_picker(config_with(("utilization-filter", None, None)))
    ok = ep("ok", waiting=1, kv=0.3)
    queued = ep("queued", waiting=9)
    full = ep("full", kv=0.95)
    stale = ep("stale", updated_at=NOW - 5)
    assert picker.pick(req("x"), [ok, queued, full, stale], NOW).endpoints == [ok]
    d = picker.pick(req("x"), [queued, full, stale], NOW)
    assert set(d.endpoints) == {queued, full, stale} and "fail open" in d.reason


def test_unhealthy_endpoints_are_skipped_and_an_empty_pool_says_why():
    picker = named_policy("default")
    a, b = pool(2)
    a.healthy = False
    assert picker.pick(req("x"), [a, b], NOW).endpoints == [b]
    b.healthy = False
    d = picker.pick(req("x"), [a, b], NOW)
    assert d.endpoints == [] and "healthy-filter" in d.reason
    assert picker.pick(req("x"), [], NOW).reason == "no endpoints in the pool"


# ---------------------------------------------------------------- pickers and determinism

def test_round_robin_cycles_with_fallbacks_in_order():
    picker = named_policy("round-robin")
    endpoints = pool(3)
    picks = [picker.pick(req("x", f"r{i}"), endpoints, NOW).endpoints for i in range(4)]
    assert [p[0].name for p in picks] == ["pod-0", "pod-1", "pod-2", "pod-0"]
    assert [e.name for e in picks[1]] == ["pod-1", "pod-2", "pod-0"]


def test_decision_lists_primary_and_two_fallbacks_by_score():
    picker = build_picker(config_with(("kv-cache-utilization-scorer", None, None)))
    endpoints = [ep(f"e{i}", kv=k) for i, k in enumerate([0.5, 0.1, 0.9, 0.3, 0.7])]
    d = picker.pick(req("x"), endpoints, NOW)
    assert [e.name for e in d.endpoints] == ["e1", "e3", "e0"]
    assert len(d.scores) == 5


def test_ties_are_broken_deterministically_and_spread_over_requests():
    endpoints = pool(4)
    first = [named_policy("least-load").pick(req("x", f"id-{i}"), endpoints, NOW).endpoints[0].name for i in range(40)]
    again = [named_policy("least-load").pick(req("x", f"id-{i}"), endpoints, NOW).endpoints[0].name for i in range(40)]
    assert first == again
    assert set(first) == {e.name for e in endpoints}


def test_weighted_random_picker_favours_higher_scores():
    picker = build_picker(config_with(("kv-cache-utilization-scorer", None, None), picker="weighted-random-picker"))
    good, poor = ep("good", kv=0.0), ep("poor", kv=0.75)  # scores 1.0 and 0.25
    picks = [picker.pick(req("x", f"w{i}"), [good, poor], NOW).endpoints[0].name for i in range(400)]
    assert picks.count("good") > 2 * picks.count("poor") > 0
    again = [picker.pick(req("x", f"w{i}"), [good, poor], NOW).endpoints[0].name for i in range(400)]
    assert picks == again


def test_random_picker_spreads():
    picker = build_picker(config_with(picker="random-picker"))
    endpoints = pool(3)
    picks = {picker.pick(req("x", f"x{i}"), endpoints, NOW).endpoints[0].name for i in range(30)}
    assert picks == {"pod-0", "pod-1", "pod-2"}


# ---------------------------------------------------------------- request hooks

def test_hooks_track_inflight_requests_and_uncached_tokens():
    picker = named_policy("default")
    a, b = pool(2)
    r1 = req(SYSTEM + "one", "h1")
    picker.on_sent(r1, a, NOW)
    assert (a.inflight, a.inflight_tokens) == (1, r1.prompt_tokens)
    picker.on_first_token(r1, a, NOW)
    assert (a.inflight, a.inflight_tokens) == (1, 0)
    r2 = req(SYSTEM + "two", "h2")  # most of it is cached on a now: only the tail counts
    picker.on_sent(r2, a, NOW)
    assert 0 < a.inflight_tokens < r2.prompt_tokens // 4
    picker.on_done(r2, a, NOW, ok=False)  # failed before the first token: everything is released
    picker.on_done(r1, a, NOW, ok=True)
    assert (a.inflight, a.inflight_tokens) == (0, 0)
    picker.on_done(r1, a, NOW, ok=True)  # a second report changes nothing
    assert a.inflight == 0


def test_endpoints_that_leave_lose_their_prefix_state():
    picker = named_policy("prefix-only")
    a, b = pool(2)
    picker.on_sent(req(SYSTEM, "s"), a, NOW)
    assert picker.index.size("pod-0") > 0
    picker.on_endpoints([b])
    assert picker.index.size("pod-0") == 0


def test_prefix_index_is_sized_from_the_engine_cache():
    picker = named_policy("prefix-only")
    a = ep("a", num_gpu_blocks=8, block_size=16)  # 128 tokens of KV = two 64-token blocks
    picker.on_sent(req(SYSTEM, "s"), a, NOW)
    assert picker.index.size("a") == 2


# ---------------------------------------------------------------- config

def test_named_policies_build():
    for name in POLICIES:
        assert named_policy(name).pick(req("x"), pool(2), NOW).endpoints
    with pytest.raises(KeyError, match="unknown policy"):
        named_policy("fastest")


def test_helm_default_config_as_yaml_with_the_older_api_group():
    cfg = load_picker_config("""
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
""")
    picker = build_picker(cfg)
    assert [(s.TYPE, w) for s, w in picker.scorers] == [
        ("queue-scorer", 2.0), ("kv-cache-utilization-scorer", 2.0), ("prefix-cache-scorer", 3.0)]
    assert picker.picker.TYPE == "max-score-picker"
    helm = build_picker(helm_default_config())
    assert [(s.TYPE, w) for s, w in helm.scorers] == [(s.TYPE, w) for s, w in picker.scorers]


def test_default_policy_knobs_are_parameters():
    picker = build_picker(default_config(affinity_threshold=0.7, token_load_weight=2.0))
    affinity = picker.filters[1]
    assert affinity.threshold == 0.7
    assert dict((s.TYPE, w) for s, w in picker.scorers)["token-load-scorer"] == 2.0


@pytest.mark.parametrize("doc, message", [
    ({"plugins": [{"type": "magic-scorer"}]}, "plugins[0].type: unknown plugin type 'magic-scorer'"),
    ({"plugins": [{"type": "queue-scorer"}],
      "schedulingProfiles": [{"name": "d", "plugins": [{"pluginRef": "kv"}]}]},
     "schedulingProfiles[0].plugins[0].pluginRef: no plugin named 'kv'"),
    ({"plugins": [{"type": "queue-scorer"}],
      "schedulingProfiles": [{"name": "d", "plugins": [{"pluginRef": "queue-scorer", "weight": -1}]}]},
     "schedulingProfiles[0].plugins[0].weight: must be at least 0"),
    ({"plugins": [{"type": "queue-scorer"}],
      "schedulingProfiles": [{"name": "d", "plugins": [{"pluginRef": "queue-scorer", "weight": "2"}]}]},
     "schedulingProfiles[0].plugins[0].weight: must be a number"),
    ({"plugins": [{"type": "prefix-cache-affinity-filter", "parameters": {"threshold": 0.5}}]},
     "plugins[0].parameters.threshold: unknown parameter of prefix-cache-affinity-filter"),
    ({"plugins": [{"type": "prefix-cache-affinity-filter", "parameters": {"affinityThreshold": "high"}}]},
     "plugins[0].parameters.affinityThreshold: must be a number"),
    ({"plugins": [{"type": "prefix-cache-affinity-filter", "parameters": {"affinityThreshold": 1.5}}]},
     "plugins[0].parameters.affinityThreshold: must be between 0 and 1"),
    ({"plugins": [{"type": "context-length-aware", "parameters": {"enableFiltering": "yes"}}]},
     "plugins[0].parameters.enableFiltering: must be a boolean"),
    ({"plugins": [{"type": "queue-scorer"}, {"type": "queue-scorer"}]},
     "plugins[1].name: 'queue-scorer' is already the name of plugins[0]"),
    ({"plugins": [{"type": "queue-scorer", "weight": 2}]}, "plugins[0].weight: unknown field"),
    ({"scorers": []}, "scorers: unknown field"),
])
def test_config_errors_name_the_field(doc, message):
    full = {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig", **doc}
    with pytest.raises(ConfigError) as err:
        load_picker_config(full)
    assert message in str(err.value)


def test_config_header_is_checked():
    with pytest.raises(ConfigError) as err:
        load_picker_config({"apiVersion": "v1", "kind": "ConfigMap"})
    assert "apiVersion: must be one of llm-d.ai/v1alpha1" in str(err.value)
    assert "kind: must be EndpointPickerConfig" in str(err.value)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_picker_config("plugins: [")


def test_flow_control_sections_of_a_config():
    """featureGates, flowControl and the utilization-detector plugin as llm-d configures them."""
    cfg = load_picker_config("""
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: utilization-detector
  parameters: {queueDepthThreshold: 3, kvCacheUtilThreshold: 0.9}
- type: queue-scorer
flowControl:
  maxRequests: 100
  defaultRequestTTL: 30s
  priorityBands:
  - {priority: 10, maxRequests: 20}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: queue-scorer}]
""")
    assert feature_gate(cfg, "flowControl") and not feature_gate(cfg, "somethingElse")
    flow = flow_config(cfg)
    assert (flow.max_requests, flow.default_ttl, flow.limits(10).max_requests) == (100, 30.0, 20)
    assert (flow.detector.queue_threshold, flow.detector.kv_threshold) == (3, 0.9)
    with pytest.raises(ConfigError, match=r"flowControl.priorityBands\[0\].maxBytes"):
        load_picker_config({"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
                            "flowControl": {"priorityBands": [{"priority": 1, "maxBytes": "big"}]}})


def test_named_policy_configs_round_trip():
    for name in POLICIES:
        cfg = load_picker_config(policy_config(name))
        assert load_picker_config(cfg.to_dict()).to_dict() == cfg.to_dict()
