"""The gateway's own Prometheus metrics: counters, gauges and histograms kept as plain dicts keyed by
label-value tuples (one dict update per event on the request path) and written in the text
exposition format 0.0.4 when ``/metrics`` is read.

Request series are ``mlplane_gateway_*``; the picker's decision time, the flow control queue and the pool
gauges use GIE's EPP names (``inference_extension_scheduler_e2e_duration_seconds``,
``inference_extension_flow_control_queue_size`` / ``_queue_bytes``, ``inference_pool_ready_pods{name}``,
``inference_pool_average_queue_size{name}``, ``inference_pool_average_kv_cache_utilization{name}``,
``inference_pool_average_running_requests{name}``, ``inference_pool_per_pod_queue_size{model_server_pod,name}``)
so dashboards made for the EPP read them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Time to first token: vLLM's vllm:time_to_first_token_seconds buckets, with finer ones below 10 ms
# for the gateway's own overhead against instant backends.
TTFT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)
# End-to-end request latency: vLLM's vllm:e2e_request_latency_seconds buckets, plus sub-0.3 s ones.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0,
                    20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0)
# Picker decision time: tens of microseconds to 100 ms.
PICKER_BUCKETS = (0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Metric:
    """One metric family: name, help text and label names."""

    type = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()):
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.type}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(Metric):
    """A monotonically growing count per label-value tuple."""

    type = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()):
        super().__init__(name, help, labelnames)
        self.values: dict[tuple, float] = {}

    def inc(self, key: tuple = (), amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def get(self, key: tuple = ()) -> float:
        return self.values.get(key, 0.0)

    def lines(self) -> list[str]:
        out = self.header()
        for key, value in sorted(self.values.items()):
            out.append(f"{self.name}{_labels(self.labelnames, key)} {_number(value)}")
        return out


class Gauge(Metric):
    """A value per label-value tuple, either set directly or read from ``source`` at exposition."""

    type = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 source: Callable[[], Iterable[tuple[tuple, float]]] | None = None):
        super().__init__(name, help, labelnames)
        self.values: dict[tuple, float] = {}
        self.source = source

    def set(self, key: tuple, value: float) -> None:
        self.values[key] = value

    def lines(self) -> list[str]:
        out = self.header()
        items = list(self.source()) if self.source is not None else sorted(self.values.items())
        for key, value in items:
            out.append(f"{self.name}{_labels(self.labelnames, key)} {_number(value)}")
        return out


class _Series:
    __slots__ = ("counts", "sum")

    def __init__(self, n: int):
        self.counts = [0] * n
        self.sum = 0.0


class Histogram(Metric):
    """Observations per label-value tuple in fixed buckets (upper bounds, ``le``; +Inf added)."""

    type = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = ()):
        super().__init__(name, help, labelnames)
        self.bounds = tuple(sorted(buckets))
        self._les = [f'le="{_number(b)}"' for b in self.bounds + (math.inf,)]
        self.series: dict[tuple, _Series] = {}

    def observe(self, key: tuple, value: float) -> None:
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = _Series(len(self.bounds) + 1)
        s.counts[bisect_left(self.bounds, value)] += 1
        s.sum += value

    def count(self, key: tuple = ()) -> int:
        s = self.series.get(key)
        return sum(s.counts) if s else 0

    def lines(self) -> list[str]:
        out = self.header()
        names = self.labelnames
        for key, s in sorted(self.series.items()):
            total = 0
            for le, n in zip(self._les, s.counts):
                total += n
                out.append(f"{self.name}_bucket{_labels(names, key, le)} {total}")
            out.append(f"{self.name}_sum{_labels(names, key)} {_number(s.sum)}")
            out.append(f"{self.name}_count{_labels(names, key)} {total}")
        return out


class Registry:
    """Metric families in registration order."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def render(self) -> bytes:
        lines: list[str] = []
        for m in self.metrics:
            lines.extend(m.lines())
        return ("\n".join(lines) + "\n").encode()


class GatewayMetrics:
    """The series the gateway updates on the request path."""

    def __init__(self) -> None:
        self.registry = r = Registry()
        self.requests = r.add(Counter(
            "mlplane_gateway_requests_total",
            "Requests answered by the gateway, by pool, endpoint that served them and HTTP status code.",
            ("pool", "endpoint", "code")))
        self.ttft = r.add(Histogram(
            "mlplane_gateway_ttft_seconds",
            "Time from receiving a streaming request to the first response body chunk from the model server "
            "(streaming requests only: a non-streaming answer arrives whole, see the request duration).",
            ("pool", "endpoint"), TTFT_BUCKETS))
        self.duration = r.add(Histogram(
            "mlplane_gateway_request_duration_seconds",
            "Time from receiving a request to the end of its response.",
            ("pool", "endpoint"), DURATION_BUCKETS))
        self.picker = r.add(Histogram(
            "inference_extension_scheduler_e2e_duration_seconds",
            "End-to-end scheduling latency: the time the endpoint picker took to decide.",
            (), PICKER_BUCKETS))
        self.shed = r.add(Counter(
            "mlplane_gateway_shed_total",
            "Sheddable requests rejected with 429 because the pool was saturated.",
            ("pool",)))
        self.failed = r.add(Counter(
            "mlplane_gateway_failed_total",
            "Requests that failed, by reason (bad_request, no_endpoints, shed, queue_expired, connect, "
            "timeout, backend_error, stream_broken, client_gone).",
            ("pool", "reason")))
        self.retries = r.add(Counter(
            "mlplane_gateway_retries_total",
            "Requests sent to another endpoint because the endpoint tried could not be reached (nothing was "
            "sent to it).",
            ("pool",)))

    def render(self) -> bytes:
        return self.registry.render()


def add_flow_gauges(registry: Registry, pools: Sequence) -> None:
    """GIE's flow control gauges, per pool and priority band, read from each pool's FlowController."""

    def bands(i: int):
        return lambda: [((p.name, str(prio)), sizes[i]) for p in pools if p.flow is not None
                        for prio, sizes in p.flow.band_sizes().items()]

    registry.add(Gauge("inference_extension_flow_control_queue_size",
                       "Requests waiting in the flow control queue, by pool and priority.",
                       ("inference_pool", "priority"), bands(0)))
    registry.add(Gauge("inference_extension_flow_control_queue_bytes",
                       "Bytes of the request bodies waiting in the flow control queue, by pool and priority.",
                       ("inference_pool", "priority"), bands(1)))
