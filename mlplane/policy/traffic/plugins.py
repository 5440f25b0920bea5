"""The endpoint picker's plugins, registered under the type names llm-d's EndpointPickerConfig uses.

Three kinds (llm-d-router:docs/architecture.md): a *filter* narrows the candidate endpoints, a *scorer*
gives each candidate a score in [0, 1] (the picker sums ``weight × score``), a *picker* orders the
scored candidates (the first is the destination, the next ones are fallbacks). One plugin may be a
filter and a scorer (``context-length-aware``). Each plugin class lists its parameters in ``PARAMS``
(name -> (accepted types, default)) so a config can be validated before anything is built.

Scraped metrics lag (a 50 ms scrape at best), so the load scorers add what the router itself sent
since the endpoint's last scrape (``Cycle.pending``) or use the router's own in-flight counts; without
that a burst would all land on the endpoint that looked idlest at the last scrape.

Nothing here draws random numbers: where upstream breaks ties or samples at random we hash the request
id with the endpoint name (xxhash), and every ordering ends in the endpoint name, so a decision is a
function of its inputs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import xxhash

from mlplane.policy.traffic.types import Endpoint, InferenceRequest

if TYPE_CHECKING:
    from mlplane.policy.traffic.picker import Cycle

NUMBER = (int, float)
_U64 = float(2 ** 64)


def unit_hash(*parts: str) -> float:
    """A deterministic pseudo-random number in [0, 1) from ``parts``."""
    return xxhash.xxh3_64_intdigest("\x00".join(parts).encode()) / _U64


def tiebreak(request: InferenceRequest, endpoint: Endpoint) -> float:
    return unit_hash(request.id, endpoint.name)


class ParamError(ValueError):
    """A plugin parameter is wrong: ``field`` is the parameter name, ``message`` says why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Plugin:
    """Base of every plugin: ``TYPE`` is the upstream type name, ``name`` the instance name in a config."""

    TYPE: ClassVar[str] = ""
    PARAMS: ClassVar[dict[str, tuple[tuple[type, ...], Any]]] = {}
    uses_prefix: bool = False  # needs the prefix index (match results) in the cycle

    def __init__(self, name: str | None = None, **params: Any):
        self.name = name or self.TYPE
        values = {key: default for key, (_, default) in self.PARAMS.items()}
        for key, value in params.items():
            if key not in self.PARAMS:
                known = ", ".join(sorted(self.PARAMS)) or "none"
                raise ParamError(key, f"unknown parameter of {self.TYPE} (known: {known})")
            types, _ = self.PARAMS[key]
            if not isinstance(types, tuple):
                types = (types,)
            if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                raise ParamError(key, f"must be {_type_names(types)}, not {type(value).__name__}")
            values[key] = value
        self.params = values
        self.configure(**values)

    def configure(self, **params: Any) -> None:
        """Check and store the parameters (raise ParamError naming the parameter)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _type_names(types: tuple[type, ...]) -> str:
    """Readable names of accepted parameter types."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if types == NUMBER:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in types)


def _positive(field: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero) or math.isnan(value):
        raise ParamError(field, f"must be {'at least 0' if allow_zero else 'greater than 0'}, got {value}")


def _fraction(field: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ParamError(field, f"must be between 0 and 1, got {value}")


class Filter(Plugin):
    def filter(self, cycle: Cycle, endpoints: list[Endpoint]) -> list[Endpoint]:
        raise NotImplementedError


class Scorer(Plugin):
    def score(self, cycle: Cycle, endpoints: list[Endpoint]) -> dict[str, float]:
        """endpoint name -> score in [0, 1]."""
        raise NotImplementedError


class Picker(Plugin):
    def order(self, cycle: Cycle, endpoints: list[Endpoint], scores: dict[str, float]) -> list[Endpoint]:
        """All ``endpoints``, best first."""
        raise NotImplementedError


def _spread(values: dict[str, float]) -> dict[str, float]:
    """Min-max scores where the smallest value scores 1 and the largest 0; all equal -> 1.0 (the
    "Distribution" scorers upstream: ``(max - v) / (max - min)``)."""
    hi = max(values.values())
    lo = min(values.values())
    if hi == lo:
        return {name: 1.0 for name in values}
    span = hi - lo
    return {name: (hi - v) / span for name, v in values.items()}


# ---------------------------------------------------------------- scorers


class QueueScorer(Scorer):
    """Shorter waiting queue scores higher: ``(maxQ - q)/(maxQ - minQ)`` over the candidates, where q is
    the scraped ``vllm:num_requests_waiting`` plus the requests this router sent since that scrape.
    (llm-d-router scorer/queue; GIE Helm default weight 2.)"""

    TYPE = "queue-scorer"

    def score(self, cycle, endpoints):
        return _spread({e.name: e.metrics.waiting + cycle.pending(e)[0] for e in endpoints})


class RunningRequestsSizeScorer(Scorer):
    """Fewer running requests scores higher (``vllm:num_requests_running`` plus requests sent since the
    scrape), min-max over the candidates."""

    TYPE = "running-requests-size-scorer"

    def score(self, cycle, endpoints):
        return _spread({e.name: e.metrics.running + cycle.pending(e)[0] for e in endpoints})


class KVCacheUtilizationScorer(Scorer):
    """``1 - kv_cache_usage``; the usage is the scraped ``vllm:kv_cache_usage_perc`` plus the uncached
    prompt tokens sent since that scrape when the engine's cache size is known."""

    TYPE = "kv-cache-utilization-scorer"

    def score(self, cycle, endpoints):
        out = {}
        for e in endpoints:
            m = e.metrics
            usage = m.kv_usage
            capacity = m.num_gpu_blocks * m.block_size
            if capacity > 0:
                usage += cycle.pending(e)[1] / capacity
            out[e.name] = 1.0 - min(1.0, max(0.0, usage))
        return out


class PrefixCacheScorer(Scorer):
    """Longer cached prefix scores higher: ``w·min(1, matchedTokens/scale)² + (1-w)·matched/total``
    blocks (llm-d-router scorer/prefix README: ``matchLengthWeight`` 0, ``matchLengthScaleTokens`` 8192).
    The prefix-producer settings (block size, blocks to match, LRU capacity) are accepted here as well,
    as older GIE configs put them on this plugin."""

    TYPE = "prefix-cache-scorer"
    uses_prefix = True
    PARAMS = {
        "matchLengthWeight": (NUMBER, 0.0),
        "matchLengthScaleTokens": (NUMBER, 8192),
        "blockSize": (int, None),
        "blockSizeTokens": (int, None),
        "maxPrefixBlocksToMatch": (int, None),
        "maxPrefixTokensToMatch": (int, None),
        "lruCapacityPerServer": (int, None),
        "autoTune": (bool, None),
    }

    def configure(self, matchLengthWeight, matchLengthScaleTokens, **_):
        _fraction("matchLengthWeight", matchLengthWeight)
        _positive("matchLengthScaleTokens", matchLengthScaleTokens)
        _check_prefix_params(self.params)
        self.weight = float(matchLengthWeight)
        self.scale = float(matchLengthScaleTokens)

    def score(self, cycle, endpoints):
        total = cycle.total_blocks()
        if total == 0:
            return {e.name: 0.0 for e in endpoints}
        w = self.weight
        block = cycle.block_tokens
        out = {}
        for e in endpoints:
            matched = cycle.matched_blocks(e)
            s = (1 - w) * matched / total
            if w:
                s += w * min(1.0, matched * block / self.scale) ** 2
            out[e.name] = s
        return out


PREFIX_PARAMS = ("blockSize", "blockSizeTokens", "maxPrefixBlocksToMatch", "maxPrefixTokensToMatch",
                 "lruCapacityPerServer", "autoTune")


def _check_prefix_params(params: dict) -> None:
    for key in ("blockSize", "blockSizeTokens", "maxPrefixBlocksToMatch", "maxPrefixTokensToMatch",
                "lruCapacityPerServer"):
        if params.get(key) is not None:
            _positive(key, params[key])


class ApproxPrefixCacheProducer(Plugin):
    """Settings of the router-side prefix index (llm-d's ``approx-prefix-cache-producer``); it has no
    filter or scorer of its own."""

    TYPE = "approx-prefix-cache-producer"
    PARAMS = {key: PrefixCacheScorer.PARAMS[key] for key in PREFIX_PARAMS}

    def configure(self, **_):
        _check_prefix_params(self.params)


class ActiveRequestScorer(Scorer):
    """Fewer requests in flight scores higher. The count is the router's own (instant) in-flight count,
    or the last scrape's waiting + running if that is larger (other routers' traffic). Endpoints at or
    under ``idleThreshold`` score 1.0; busier ones are scaled into ``[0, maxBusyScore]`` by how far they
    are from the busiest candidate (llm-d-router active-request scorer)."""

    TYPE = "active-request-scorer"
    PARAMS = {"idleThreshold": (int, 0), "maxBusyScore": (NUMBER, 1.0)}

    def configure(self, idleThreshold, maxBusyScore):
        _positive("idleThreshold", idleThreshold, allow_zero=True)
        _fraction("maxBusyScore", maxBusyScore)
        self.idle = idleThreshold
        self.busy = float(maxBusyScore)

    def score(self, cycle, endpoints):
        counts = {e.name: active_requests(cycle, e) for e in endpoints}
        top = max(counts.values())
        out = {}
        for name, n in counts.items():
            if n <= self.idle:
                out[name] = 1.0
            else:
                out[name] = self.busy * (top - n + 1) / (top - self.idle + 1) if top > self.idle else 1.0
        return out


def active_requests(cycle: Cycle, e: Endpoint) -> int:
    """Requests at ``e``: the router's in-flight count, or the scrape's (plus sent since) if larger."""
    m = e.metrics
    return max(e.inflight, m.waiting + m.running + cycle.pending(e)[0])


class TokenLoadScorer(Scorer):
    """Fewer uncached prompt tokens in flight scores higher: ``1 - min(1, tokens/queueThresholdTokens)``
    (llm-d-router scorer/tokenload README; default threshold 4 Mi tokens). With ``includeRequest`` the
    tokens of this request the endpoint has not cached are added (the look-ahead variant of llm-d's
    "Sticky Until Saturated" routing), so a warm endpoint costs less than a cold one in the same unit."""

    TYPE = "token-load-scorer"
    PARAMS = {"queueThresholdTokens": (int, 4_194_304), "includeRequest": (bool, False),
              "nonTextTokenWeight": (NUMBER, 1.0)}

    def configure(self, queueThresholdTokens, includeRequest, nonTextTokenWeight):
        _positive("queueThresholdTokens", queueThresholdTokens)
        self.threshold = queueThresholdTokens
        self.include = includeRequest
        self.uses_prefix = includeRequest

    def score(self, cycle, endpoints):
        out = {}
        for e in endpoints:
            tokens = e.inflight_tokens
            if self.include:
                tokens += cycle.uncached_tokens(e)
            out[e.name] = 1.0 - min(1.0, max(0, tokens) / self.threshold)
        return out


class LoraAffinityScorer(Scorer):
    """Prefer endpoints where the request's LoRA adapter is already loaded: 1.0 adapter running; 0.8 not
    loaded but a free adapter slot; 0.6 adapter waiting to load; 0.0 no slot (GIE/llm-d lora-affinity
    scorer, from ``vllm:lora_requests_info``). A slot count of 0 means the engine has not reported one
    (vLLM emits the metric only after an adapter was loaded), counted as a free slot. Requests for the
    base model score 1.0 everywhere."""

    TYPE = "lora-affinity-scorer"

    def score(self, cycle, endpoints):
        adapter = cycle.request.lora
        if adapter is None:
            return {e.name: 1.0 for e in endpoints}
        out = {}
        for e in endpoints:
            m = e.metrics
            if adapter in m.running_loras:
                out[e.name] = 1.0
            elif m.max_loras == 0 or len(m.running_loras | m.waiting_loras) < m.max_loras:
                out[e.name] = 0.8
            elif adapter in m.waiting_loras:
                out[e.name] = 0.6
            else:
                out[e.name] = 0.0
        return out


CONTEXT_LENGTH_LABEL = "llm-d.ai/context-length-range"


def parse_range(text: str) -> tuple[int, int] | None:
    """``"min-max"`` -> (min, max); None when malformed."""
    lo, sep, hi = text.partition("-")
    if not sep:
        return None
    try:
        a, b = int(lo.strip()), int(hi.strip())
    except ValueError:
        return None
    if a < 0 or a > b:
        return None
    return a, b


class ContextLengthAware(Filter, Scorer):
    """Match prompt length to an endpoint's ``llm-d.ai/context-length-range: "min-max"`` label
    (llm-d-router scorer/contextlengthaware): in range scores in (0.3, 1], higher for a tighter range and
    more headroom (``0.3 + 0.7·(0.7/(1 + width/10000) + 0.3·(max - len)/width)``); out of range scores
    below 0.3 by distance to the range (``0.3/(1 + distance/1000)``); unlabelled endpoints 0.5, malformed
    labels 0. With ``enableFiltering`` out-of-range and malformed endpoints are also filtered out
    (unlabelled ones are kept)."""

    TYPE = "context-length-aware"
    PARAMS = {"label": (str, CONTEXT_LENGTH_LABEL), "enableFiltering": (bool, False)}

    def configure(self, label, enableFiltering):
        if not label:
            raise ParamError("label", "must not be empty")
        self.label = label
        self.filtering = enableFiltering

    def filter(self, cycle, endpoints):
        if not self.filtering:
            return endpoints
        n = cycle.request.prompt_tokens
        kept = []
        for e in endpoints:
            text = e.labels.get(self.label)
            if text is None:
                kept.append(e)
                continue
            r = parse_range(text)
            if r is not None and r[0] <= n <= r[1]:
                kept.append(e)
        if len(kept) < len(endpoints):
            cycle.note(f"{self.name}: {len(endpoints) - len(kept)} endpoint(s) out of range for {n} tokens")
        return kept

    def score(self, cycle, endpoints):
        n = cycle.request.prompt_tokens
        out = {}
        for e in endpoints:
            text = e.labels.get(self.label)
            if text is None:
                out[e.name] = 0.5
                continue
            r = parse_range(text)
            out[e.name] = 0.0 if r is None else range_score(n, *r)
        return out


def range_score(n: int, lo: int, hi: int) -> float:
    if lo <= n <= hi:
        width = hi - lo
        if width == 0:
            return 1.0
        raw = 0.7 / (1.0 + width / 10000.0) + 0.3 * (hi - n) / width
        return 0.3 + 0.7 * raw
    distance = n - hi if n > hi else lo - n
    return 0.3 / (1.0 + distance / 1000.0)


# ---------------------------------------------------------------- filters


class HealthyFilter(Filter):
    """Drop endpoints marked unhealthy (a failed connection since the last good scrape)."""

    TYPE = "healthy-filter"

    def filter(self, cycle, endpoints):
        kept = [e for e in endpoints if e.healthy]
        if len(kept) < len(endpoints):
            cycle.note(f"{len(endpoints) - len(kept)} unhealthy endpoint(s) skipped")
        return kept


class PrefixCacheAffinityFilter(Filter):
    """Keep only the "sticky" endpoints, whose prefix score (matched/total blocks) is at least
    ``affinityThreshold``; none sticky -> keep all. Load escape: when the best sticky endpoint's estimated
    prefill wait exceeds the best other endpoint's by more than ``maxTTFTPenaltyMs``, keep all (the load
    scorers then choose). The wait is ``tokens / peakPrefillThroughput`` where tokens are the endpoint's
    uncached tokens in flight, plus (``includeRequest``) this request's uncached tokens there.
    ``explorationProbability`` skips the gate for that share of requests (chosen by a hash of the request
    id, not at random). (llm-d-router filter/prefixcacheaffinity README; defaults 0.80 / 18000 ms /
    15928 tok/s / 0.) Our addition, off by default: a request-count escape in SGLang's cache-aware form
    (sgl-router policies/cache_aware.rs, defaults 64 and 1.5 there) - stickiness also breaks when the
    least busy sticky endpoint has more than ``balanceAbsThreshold`` requests more than the least busy
    other one and more than ``balanceRelThreshold`` times as many, which catches decode-heavy hot spots
    that the prefill-token estimate does not see; then only the other endpoints are kept."""

    TYPE = "prefix-cache-affinity-filter"
    uses_prefix = True
    PARAMS = {"affinityThreshold": (NUMBER, 0.80), "maxTTFTPenaltyMs": (NUMBER, 18000.0),
              "peakPrefillThroughput": (NUMBER, 15928.0), "explorationProbability": (NUMBER, 0.0),
              "ttftSource": (str, "prefillThroughput"), "includeRequest": (bool, False),
              "balanceAbsThreshold": (int, 0), "balanceRelThreshold": (NUMBER, 1.5)}

    def configure(self, affinityThreshold, maxTTFTPenaltyMs, peakPrefillThroughput, explorationProbability,
                  ttftSource, includeRequest, balanceAbsThreshold, balanceRelThreshold):
        _positive("balanceAbsThreshold", balanceAbsThreshold, allow_zero=True)
        _positive("balanceRelThreshold", balanceRelThreshold, allow_zero=True)
        self.balance_abs = balanceAbsThreshold
        self.balance_rel = float(balanceRelThreshold)
        _fraction("affinityThreshold", affinityThreshold)
        _positive("maxTTFTPenaltyMs", maxTTFTPenaltyMs, allow_zero=True)
        _positive("peakPrefillThroughput", peakPrefillThroughput)
        _fraction("explorationProbability", explorationProbability)
        if ttftSource != "prefillThroughput":
            raise ParamError("ttftSource", f"only 'prefillThroughput' is supported, got {ttftSource!r}")
        self.threshold = float(affinityThreshold)
        self.penalty_s = maxTTFTPenaltyMs / 1000.0
        self.peak = float(peakPrefillThroughput)
        self.explore = float(explorationProbability)
        self.include = includeRequest

    def wait_s(self, cycle: Cycle, e: Endpoint) -> float:
        tokens = e.inflight_tokens + (cycle.uncached_tokens(e) if self.include else 0)
        return max(0, tokens) / self.peak

    def filter(self, cycle, endpoints):
        total = cycle.total_blocks()
        if total == 0:
            return endpoints
        sticky, other = [], []
        for e in endpoints:
            (sticky if cycle.matched_blocks(e) / total >= self.threshold else other).append(e)
        if not sticky or not other:
            if sticky:
                cycle.note("prefix affinity")
            return endpoints
        if self.explore and unit_hash(cycle.request.id, self.name) < self.explore:
            cycle.note("prefix affinity skipped (exploration)")
            return endpoints
        if self.penalty_s > 0:
            best_sticky = min(self.wait_s(cycle, e) for e in sticky)
            best_other = min(self.wait_s(cycle, e) for e in other)
            if best_sticky - best_other > self.penalty_s:
                cycle.note(f"load escape: cached endpoints {best_sticky * 1000:.0f} ms of prefill behind, "
                           f"others {best_other * 1000:.0f} ms")
                cycle.escaped = True
                return endpoints
        if self.balance_abs:
            busy = min(active_requests(cycle, e) for e in sticky)
            idle = min(active_requests(cycle, e) for e in other)
            if busy - idle > self.balance_abs and busy > self.balance_rel * idle:
                cycle.note(f"load escape: cached endpoints have {busy} requests, others {idle}")
                cycle.escaped = True
                return other  # the load scorers count tokens, not requests: leave them only the others
        cycle.note("prefix affinity")
        return sticky


class UtilizationFilter(Filter):
    """The utilization saturation detector used as a filter (llm-d-router saturationdetector/utilization
    README): drop endpoints whose metrics are older than ``metricsStalenessThreshold`` seconds, whose
    queue exceeds ``queueDepthThreshold·(1+headroom)`` or whose KV usage exceeds
    ``min(1, kvCacheUtilThreshold·(1+headroom))``; if that would drop every endpoint, keep them all
    (fail open). The queue counts requests sent since the scrape too."""

    TYPE = "utilization-filter"
    PARAMS = {"queueDepthThreshold": (NUMBER, 5), "kvCacheUtilThreshold": (NUMBER, 0.8),
              "metricsStalenessThreshold": (NUMBER + (str,), 0.2), "headroom": (NUMBER, 0.0)}

    def configure(self, queueDepthThreshold, kvCacheUtilThreshold, metricsStalenessThreshold, headroom):
        _positive("queueDepthThreshold", queueDepthThreshold)
        _positive("kvCacheUtilThreshold", kvCacheUtilThreshold)
        _positive("headroom", headroom, allow_zero=True)
        self.queue_max = queueDepthThreshold * (1 + headroom)
        self.kv_max = min(1.0, kvCacheUtilThreshold * (1 + headroom))
        try:
            self.staleness = parse_duration(metricsStalenessThreshold)
        except ValueError as e:
            raise ParamError("metricsStalenessThreshold", str(e)) from None

    def filter(self, cycle, endpoints):
        now = cycle.now
        kept = []
        for e in endpoints:
            m = e.metrics
            if now - m.updated_at > self.staleness:
                continue
            if m.waiting + cycle.pending(e)[0] > self.queue_max or m.kv_usage > self.kv_max:
                continue
            kept.append(e)
        if not kept:
            cycle.note("every endpoint saturated or stale: kept all (fail open)")
            return endpoints
        return kept


_DURATION_UNITS = (("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0), ("m", 60.0), ("h", 3600.0))


class UtilizationDetector(UtilizationFilter):
    """llm-d's ``utilization-detector``: the flow controller's saturation detector (its parameters), and
    in a scheduling profile the same per-endpoint filter as ``utilization-filter``."""

    TYPE = "utilization-detector"


def parse_duration(value: float | int | str, allow_zero: bool = False) -> float:
    """Seconds from a number (seconds) or a Go duration string ("200ms", "1.5s", "1m30s")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a duration (e.g. 200ms, 1s)")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        seconds, rest = 0.0, text
        while rest:
            i = 0
            while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
                i += 1
            unit = next(((u, f) for u, f in _DURATION_UNITS if rest[i:].startswith(u)), None)
            if i == 0 or unit is None:
                if text == "0":
                    break
                raise ValueError(f"{text!r} is not a duration (e.g. 200ms, 1s)")
            try:
                seconds += float(rest[:i]) * unit[1]
            except ValueError:
                raise ValueError(f"{text!r} is not a duration (e.g. 200ms, 1s)") from None
            rest = rest[i + len(unit[0]):]
    if seconds < 0 or math.isnan(seconds) or (seconds == 0 and not allow_zero):
        raise ValueError(f"must be greater than 0, got {value!r}")
    return seconds


# ---------------------------------------------------------------- pickers


class MaxScorePicker(Picker):
    """Highest score first; ties broken by a hash of request id and endpoint name (upstream: at random)."""

    TYPE = "max-score-picker"
    PARAMS = {"maxNumOfEndpoints": (int, 1)}

    def order(self, cycle, endpoints, scores):
        request = cycle.request
        return sorted(endpoints, key=lambda e: (-round(scores.get(e.name, 0.0), 9), tiebreak(request, e), e.name))


class RandomPicker(Picker):
    """A uniform pseudo-random order (hash of request id and endpoint name), ignoring scores."""

    TYPE = "random-picker"
    PARAMS = {"maxNumOfEndpoints": (int, 1)}

    def order(self, cycle, endpoints, scores):
        request = cycle.request
        return sorted(endpoints, key=lambda e: (tiebreak(request, e), e.name))


class WeightedRandomPicker(Picker):
    """A lottery by score: endpoint e comes first with probability score(e)/Σscore (weighted sampling
    without replacement, key ``u^(1/score)`` with u the request/endpoint hash). Zero scores come last; all
    zero -> uniform."""

    TYPE = "weighted-random-picker"
    PARAMS = {"maxNumOfEndpoints": (int, 1)}

    def order(self, cycle, endpoints, scores):
        request = cycle.request

        def key(e: Endpoint):
            u = tiebreak(request, e)
            s = scores.get(e.name, 0.0)
            if s <= 0:
                return (1, -u, e.name)
            return (0, -math.log(max(u, 1e-300)) / s, e.name)  # smaller is better: -ln(u)/s ~ Exp(s)

        if all(scores.get(e.name, 0.0) <= 0 for e in endpoints):
            return sorted(endpoints, key=lambda e: (tiebreak(request, e), e.name))
        return sorted(endpoints, key=key)


class RoundRobinPicker(Picker):
    """Endpoints in name order, starting one further along at every pick (a counter, no clock)."""

    TYPE = "round-robin-picker"
    PARAMS = {"maxNumOfEndpoints": (int, 1)}

    def configure(self, **_):
        self.counter = 0

    def order(self, cycle, endpoints, scores):
        ordered = sorted(endpoints, key=lambda e: e.name)
        if not ordered:
            return ordered
        start = self.counter % len(ordered)
        self.counter += 1
        return ordered[start:] + ordered[:start]


class SingleProfileHandler(Plugin):
    """Accepted for compatibility with upstream configs: one scheduling profile is all we run."""

    TYPE = "single-profile-handler"


REGISTRY: dict[str, type[Plugin]] = {cls.TYPE: cls for cls in (
    QueueScorer, RunningRequestsSizeScorer, KVCacheUtilizationScorer, PrefixCacheScorer, ActiveRequestScorer,
    TokenLoadScorer, LoraAffinityScorer, ContextLengthAware, HealthyFilter, PrefixCacheAffinityFilter,
    UtilizationFilter, UtilizationDetector, MaxScorePicker, RandomPicker, WeightedRandomPicker, RoundRobinPicker,
    ApproxPrefixCacheProducer, SingleProfileHandler)}


def make(type_name: str, name: str | None = None, **params: Any) -> Plugin:
    """A plugin of ``type_name`` (raises KeyError for an unknown type, ParamError for bad parameters)."""
    return REGISTRY[type_name](name, **params)


def kinds(plugin: Plugin) -> list[str]:
    out = []
    if isinstance(plugin, Filter):
        out.append("filter")
    if isinstance(plugin, Scorer):
        out.append("scorer")
    if isinstance(plugin, Picker):
        out.append("picker")
    return out


__all__ = ["REGISTRY", "make", "Plugin", "Filter", "Scorer", "Picker", "ParamError"]
