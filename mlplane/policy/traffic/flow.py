"""Saturation detection and flow control as a pure state machine (the gateway awaits the items).

Ported from llm-d's flow control (llm-d/llm-d:docs/architecture/core/router/epp/flow-control.md;
llm-d-router:pkg/epp/framework/plugins/flowcontrol/saturationdetector/utilization/README.md):
- pool saturation = average over endpoints of ``max(queue/QT, kv/KT)``, an endpoint with stale metrics
  counting as fully saturated; the pool is saturated at 1.0;
- requests wait in priority bands, strictly highest priority first; inside a band flows (fairness ids)
  take turns (``round-robin``) or the oldest request goes first (``global-strict``, upstream default);
  inside a flow first come, first served; dispatch happens only while the pool is not saturated;
- capacity limits per band and in total (requests and bytes): over them the request is rejected (429);
  a request that waits longer than its TTL is expired (503);
- sheddable requests (priority < 0) are rejected when the pool is saturated.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from mlplane.policy.traffic.plugins import parse_duration
from mlplane.policy.traffic.types import Endpoint, InferenceRequest

Pending = Callable[[Endpoint], tuple[int, int]]
Outcome = Literal["dispatch", "queue", "reject"]


@dataclass
class SaturationDetector:
    """The utilization detector: ``avg_e max(queue_e/QT, kv_e/KT)``; stale metrics count as 1.0.

    ``pending`` (optional) gives the requests the router sent to an endpoint since its last scrape
    (``EndpointPicker.pending``); they are added to the scraped queue so that a burst released between
    two scrapes is seen at once."""

    queue_threshold: float = 5
    kv_threshold: float = 0.8
    staleness: float = 0.2  # seconds (metricsStalenessThreshold 200 ms)
    pending: Pending | None = None

    def __post_init__(self):
        if self.queue_threshold <= 0:
            raise ValueError(f"queue_threshold must be greater than 0, got {self.queue_threshold}")
        if self.kv_threshold <= 0:
            raise ValueError(f"kv_threshold must be greater than 0, got {self.kv_threshold}")
        if self.staleness <= 0:
            raise ValueError(f"staleness must be greater than 0, got {self.staleness}")

    def endpoint_saturation(self, e: Endpoint, now: float) -> float:
        m = e.metrics
        if now - m.updated_at > self.staleness:
            return 1.0
        queue = m.waiting + (self.pending(e)[0] if self.pending else 0)
        return max(queue / self.queue_threshold, m.kv_usage / self.kv_threshold)

    def saturation(self, endpoints: Sequence[Endpoint], now: float) -> float:
        """The pool's saturation (1.0 = saturated); no endpoints -> 1.0."""
        if not endpoints:
            return 1.0
        return sum(self.endpoint_saturation(e, now) for e in endpoints) / len(endpoints)

    def saturated(self, endpoints: Sequence[Endpoint], now: float) -> bool:
        return self.saturation(endpoints, now) >= 1.0


FAIRNESS_POLICIES = {"global-strict-fairness-policy": "global-strict", "round-robin-fairness-policy": "round-robin"}
ORDERING_POLICIES = ("fcfs-ordering-policy",)


@dataclass
class BandLimits:
    """Limits of one priority band (upstream PriorityBandConfig; defaults 5000 requests, 1G bytes)."""

    max_requests: int | None = 5000
    max_bytes: int | None = 10 ** 9
    fairness: Literal["global-strict", "round-robin"] | None = None  # None: the controller's default


@dataclass
class FlowConfig:
    """Flow-control settings. ``enabled`` False: non-sheddable requests always dispatch at once."""

    enabled: bool = True
    max_requests: int | None = None  # all bands together (unlimited by default, as upstream)
    max_bytes: int | None = None
    band: BandLimits = field(default_factory=BandLimits)  # limits of a band not listed in ``bands``
    negative_band: BandLimits | None = None  # limits of unlisted bands below priority 0 (else ``band``)
    bands: dict[int, BandLimits] = field(default_factory=dict)  # priority -> limits
    default_ttl: float | None = 60.0  # seconds a request may wait; None = forever
    fairness: Literal["global-strict", "round-robin"] = "global-strict"
    detector: SaturationDetector = field(default_factory=SaturationDetector)

    def limits(self, priority: int) -> BandLimits:
        band = self.bands.get(priority)
        if band is not None:
            return band
        if priority < 0 and self.negative_band is not None:
            return self.negative_band
        return self.band

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None, *, detector: Mapping[str, Any] | None = None,
                  plugins: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None) -> FlowConfig:
        """From the ``flowControl`` section of an EndpointPickerConfig (llm-d-router
        apix/config/v1alpha1 FlowControlConfig): ``maxBytes`` / ``maxRequests`` (quantities; 0 or absent =
        unlimited), ``defaultRequestTTL`` (Go duration; "0s" = no expiry), ``defaultPriorityBand``,
        ``defaultNegativePriorityBand`` and ``priorityBands: [{priority, maxRequests, maxBytes,
        fairnessPolicyRef, orderingPolicyRef}]`` (0 or absent = 5000 requests / 1G bytes),
        ``saturationDetector: {pluginRef}``. ``detector`` holds the utilization
        detector's parameters (``queueDepthThreshold``, ``kvCacheUtilThreshold``,
        ``metricsStalenessThreshold``, ``headroom``) or a ``{pluginRef}``; ``plugins`` maps plugin names to
        (type, parameters) to resolve references. Errors name the field."""
        doc = dict(doc or {})
        plugins = plugins or {}
        cfg = cls()
        known = {"maxRequests", "maxBytes", "defaultRequestTTL", "noEndpointRequestTTL", "defaultPriorityBand",
                 "defaultNegativePriorityBand", "priorityBands", "usageLimitPolicyPluginRef", "saturationDetector",
                 "enableEviction"}
        for key in doc:
            if key not in known:
                raise ValueError(f"flowControl.{key}: unknown field (known: {', '.join(sorted(known))})")

        def count(path: str, value: Any, zero: int | None) -> int | None:
            if value is None:
                return zero
            if isinstance(value, str):
                value = _quantity(path, value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{path}: must be a non-negative integer or quantity, got {value!r}")
            return zero if value == 0 else value

        def policy(path: str, ref: Any, kinds: Mapping[str, str] | tuple) -> str | None:
            if ref is None or ref == "":
                return None
            if not isinstance(ref, str):
                raise ValueError(f"{path}: must be a string")
            type_name = plugins[ref][0] if ref in plugins else ref
            if type_name not in kinds:
                raise ValueError(f"{path}: {ref!r} is not one of {', '.join(kinds)}")
            return kinds[type_name] if isinstance(kinds, Mapping) else type_name

        def band(path: str, raw: Any) -> BandLimits:
            if not isinstance(raw, Mapping):
                raise ValueError(f"{path}: must be a mapping")
            for key in raw:
                if key not in ("priority", "maxRequests", "maxBytes", "fairnessPolicyRef", "orderingPolicyRef"):
                    raise ValueError(f"{path}.{key}: unknown field")
            policy(f"{path}.orderingPolicyRef", raw.get("orderingPolicyRef"), ORDERING_POLICIES)
            return BandLimits(count(f"{path}.maxRequests", raw.get("maxRequests"), 5000),
                              count(f"{path}.maxBytes", raw.get("maxBytes"), 10 ** 9),
                              policy(f"{path}.fairnessPolicyRef", raw.get("fairnessPolicyRef"), FAIRNESS_POLICIES))

        cfg.max_requests = count("flowControl.maxRequests", doc.get("maxRequests"), None)
        cfg.max_bytes = count("flowControl.maxBytes", doc.get("maxBytes"), None)
        if "defaultRequestTTL" in doc:
            try:
                cfg.default_ttl = parse_duration(doc["defaultRequestTTL"], allow_zero=True) or None
            except ValueError as e:
                raise ValueError(f"flowControl.defaultRequestTTL: {e}") from None
        if "defaultPriorityBand" in doc:
            cfg.band = band("flowControl.defaultPriorityBand", doc["defaultPriorityBand"])
            if cfg.band.fairness:
                cfg.fairness = cfg.band.fairness
        if "defaultNegativePriorityBand" in doc:
            cfg.negative_band = band("flowControl.defaultNegativePriorityBand", doc["defaultNegativePriorityBand"])
        bands = doc.get("priorityBands") or []
        if not isinstance(bands, list):
            raise ValueError("flowControl.priorityBands: must be a list")
        for i, raw in enumerate(bands):
            path = f"flowControl.priorityBands[{i}]"
            prio = raw.get("priority") if isinstance(raw, Mapping) else None
            if isinstance(prio, bool) or not isinstance(prio, int):
                raise ValueError(f"{path}.priority: must be an integer")
            if prio in cfg.bands:
                raise ValueError(f"{path}.priority: band {prio} is listed twice")
            cfg.bands[prio] = band(path, raw)
        if doc.get("enableEviction"):
            raise ValueError("flowControl.enableEviction: in-flight eviction is not supported")
        det = dict(detector or {})
        inner = doc.get("saturationDetector")
        if isinstance(inner, Mapping) and inner.get("pluginRef"):
            det = dict(inner)  # the newer place wins over the deprecated top-level one
        where = "saturationDetector"
        if "pluginRef" in det:
            ref = det.pop("pluginRef")
            if det:
                raise ValueError(f"{where}.{next(iter(det))}: unknown field (only pluginRef)")
            if ref in plugins:
                type_name, params = plugins[ref]
                if type_name != "utilization-detector":
                    raise ValueError(f"{where}.pluginRef: {ref!r} is a {type_name}, not a utilization-detector")
                det = dict(params)
            elif ref != "utilization-detector":
                raise ValueError(f"{where}.pluginRef: no plugin named {ref!r}")
        for key in det:
            if key not in ("queueDepthThreshold", "kvCacheUtilThreshold", "metricsStalenessThreshold", "headroom"):
                raise ValueError(f"{where}.{key}: unknown field")
        try:
            headroom = float(det.get("headroom", 0.0))
            cfg.detector = SaturationDetector(
                queue_threshold=det.get("queueDepthThreshold", 5) * (1 + headroom),
                kv_threshold=min(1.0, det.get("kvCacheUtilThreshold", 0.8) * (1 + headroom)),
                staleness=parse_duration(det.get("metricsStalenessThreshold", 0.2)))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}: {e}") from None
        return cfg


def _quantity(path: str, text: str) -> int:
    """A Kubernetes quantity with a binary or decimal suffix ("10Gi", "1k") as an integer."""
    suffixes = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10 ** 3, "M": 10 ** 6,
                "G": 10 ** 9, "T": 10 ** 12}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            break
    else:
        number, factor = text, 1
    try:
        return int(float(number) * factor)
    except ValueError:
        raise ValueError(f"{path}: {text!r} is not a quantity (e.g. 1000, 10Gi)") from None


@dataclass(slots=True)
class _Entry:
    seq: int
    item: Any
    request: InferenceRequest
    enqueued_at: float
    deadline: float


class _Band:
    __slots__ = ("priority", "flows", "turns", "count", "bytes")

    def __init__(self, priority: int):
        self.priority = priority
        self.flows: dict[str, deque[_Entry]] = {}
        self.turns: deque[str] = deque()  # round-robin order of flows with entries
        self.count = 0
        self.bytes = 0


class FlowController:
    """Admission and queueing of requests by priority band while the pool is saturated."""

    def __init__(self, config: FlowConfig | None = None, *, pending: Pending | None = None):
        self.config = config or FlowConfig()
        if pending is not None:
            self.config.detector.pending = pending
        self._bands: dict[int, _Band] = {}
        self._order: list[int] = []  # priorities, highest first
        self._seq = itertools.count()
        self._where: dict[int, tuple[_Band, _Entry]] = {}  # id(item) -> its entry
        self._expired: list[Any] = []
        self.count = 0
        self.bytes = 0
        self.last_saturation = 0.0

    # ------------------------------------------------------------ state

    def saturation(self, endpoints: Sequence[Endpoint], now: float) -> float:
        """The detector's saturation (endpoints without fresh metrics count as saturated: fail closed; the
        InferencePool's failureMode FailOpen is applied by the caller, before admission)."""
        value = self.config.detector.saturation(endpoints, now)
        self.last_saturation = value
        return value

    def saturated(self, endpoints: Sequence[Endpoint], now: float) -> bool:
        return self.saturation(endpoints, now) >= 1.0

    # ------------------------------------------------------------ admission

    def admit(self, request: InferenceRequest, endpoints: Sequence[Endpoint], now: float) -> Outcome:
        """What to do with a new request: send it now, queue it (then ``enqueue``), or reject it (429)."""
        saturated = self.saturated(endpoints, now)
        if saturated and request.priority < 0:
            return "reject"
        if not self.config.enabled:
            return "dispatch"
        if not saturated and not self._ahead(request.priority):
            return "dispatch"
        return "queue" if self._fits(request) else "reject"

    def _ahead(self, priority: int) -> bool:
        """Whether requests of this priority or higher are already waiting (a newcomer queues behind them)."""
        return any(p >= priority and self._bands[p].count for p in self._order)

    def _fits(self, request: InferenceRequest) -> bool:
        cfg = self.config
        size = request.size
        if cfg.max_requests is not None and self.count + 1 > cfg.max_requests:
            return False
        if cfg.max_bytes is not None and self.bytes + size > cfg.max_bytes:
            return False
        limits = cfg.limits(request.priority)
        band = self._bands.get(request.priority)
        count, used = (band.count, band.bytes) if band else (0, 0)
        if limits.max_requests is not None and count + 1 > limits.max_requests:
            return False
        if limits.max_bytes is not None and used + size > limits.max_bytes:
            return False
        return True

    def enqueue(self, item: Any, request: InferenceRequest, now: float, ttl: float | None = None) -> None:
        """Queue ``item`` (opaque to us) for ``request``. Its time to live is ``ttl``, else the request's
        own (``x-llm-d-inference-ttl``, in ``request.state["ttl"]``), else the default (seconds)."""
        if id(item) in self._where:
            raise ValueError("item is already queued")
        if ttl is None:
            ttl = request.state.get("ttl", self.config.default_ttl)
        deadline = float("inf") if ttl is None else now + ttl
        band = self._bands.get(request.priority)
        if band is None:
            band = self._bands[request.priority] = _Band(request.priority)
            self._order = sorted(self._bands, reverse=True)
        entry = _Entry(next(self._seq), item, request, now, deadline)
        flow = band.flows.get(request.fairness_id)
        if flow is None:
            flow = band.flows[request.fairness_id] = deque()
        if not flow:
            band.turns.append(request.fairness_id)
        flow.append(entry)
        band.count += 1
        band.bytes += request.size
        self.count += 1
        self.bytes += request.size
        self._where[id(item)] = (band, entry)

    # ------------------------------------------------------------ dispatch

    def pop_ready(self, endpoints: Sequence[Endpoint], now: float) -> Any | None:
        """The next item to dispatch, or None (nothing queued, or the pool is saturated). Items whose TTL
        passed are set aside for ``expire``."""
        while self.count:
            if self.saturated(endpoints, now):
                return None
            entry = self._take()
            if entry is None:
                return None
            if entry.deadline <= now:
                self._expired.append(entry.item)
                continue
            return entry.item
        return None

    def _take(self) -> _Entry | None:
        for priority in self._order:
            band = self._bands[priority]
            if not band.count:
                continue
            if (self.config.limits(priority).fairness or self.config.fairness) == "round-robin":
                flow_id = band.turns[0]
                band.turns.rotate(-1)
            else:
                flow_id = min((f for f in band.turns), key=lambda f: band.flows[f][0].seq)
            entry = band.flows[flow_id][0]
            self._remove(band, entry)
            return entry
        return None

    def _remove(self, band: _Band, entry: _Entry) -> None:
        flow_id = entry.request.fairness_id
        flow = band.flows[flow_id]
        if flow and flow[0] is entry:
            flow.popleft()
        else:
            flow.remove(entry)
        if not flow:
            band.turns.remove(flow_id)
            del band.flows[flow_id]
        band.count -= 1
        band.bytes -= entry.request.size
        self.count -= 1
        self.bytes -= entry.request.size
        del self._where[id(entry.item)]

    def expire(self, now: float) -> list[Any]:
        """Items that waited past their TTL (answer them 503), oldest first; they leave the queue."""
        out, self._expired = self._expired, []
        for band in self._bands.values():
            if not band.count:
                continue
            stale = [e for flow in band.flows.values() for e in flow if e.deadline <= now]
            for entry in stale:
                self._remove(band, entry)
            out.extend(e.item for e in sorted(stale, key=lambda e: e.seq))
        return out

    def cancel(self, item: Any) -> bool:
        """Take ``item`` out of the queue (its client went away); False if it was not queued."""
        found = self._where.get(id(item))
        if found is None:
            return False
        self._remove(*found)
        return True

    # ------------------------------------------------------------ sizes (metrics)

    def band_sizes(self) -> dict[int, tuple[int, int]]:
        """priority -> (queued requests, queued bytes), highest priority first."""
        return {p: (self._bands[p].count, self._bands[p].bytes) for p in self._order}

    def queued(self) -> int:
        return self.count

    def queued_bytes(self) -> int:
        return self.bytes

    def next_deadline(self) -> float:
        """The earliest deadline of a queued item (inf when none): when to call ``expire`` next."""
        return min((e.deadline for band in self._bands.values() for flow in band.flows.values() for e in flow),
                   default=float("inf"))

    def items(self) -> Iterable[Any]:
        for priority in self._order:
            for flow in self._bands[priority].flows.values():
                for e in flow:
                    yield e.item
