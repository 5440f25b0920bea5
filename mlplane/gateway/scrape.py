"""Reading a model server's Prometheus ``/metrics`` into an ``EndpointMetrics``.

Only the series the endpoint picker uses are read (GIE model-server protocol, vLLM names):
``vllm:num_requests_waiting``, ``vllm:num_requests_running``, ``vllm:kv_cache_usage_perc`` (or the
deprecated ``vllm:gpu_cache_usage_perc`` of older engines), ``vllm:lora_requests_info`` and
``vllm:cache_config_info``; SGLang's ``sglang:num_queue_reqs``, ``sglang:num_running_reqs`` and
``sglang:token_usage`` are read when the vLLM ones are absent. A vLLM /metrics page is tens of KB of
histograms, so the parser looks the wanted names up with ``bytes.find`` instead of splitting every
line.

Several series of one name (data-parallel engines behind one port, ``engine="0"``, ``engine="1"``)
are combined: queue and running counts add up, KV usage takes the fullest engine, and of the
``lora_requests_info`` series the one with the highest value (vLLM sets it to the time of the last
update) wins, as GIE's extractor does.
"""

from __future__ import annotations

import math

import orjson

from mlplane.policy.traffic.types import EndpointMetrics

WAITING = (b"vllm:num_requests_waiting", b"sglang:num_queue_reqs")
RUNNING = (b"vllm:num_requests_running", b"sglang:num_running_reqs")
KV_USAGE = (b"vllm:kv_cache_usage_perc", b"vllm:gpu_cache_usage_perc", b"sglang:token_usage")
LORA_INFO = b"vllm:lora_requests_info"
CACHE_INFO = b"vllm:cache_config_info"


class MetricsFormatError(ValueError):
    """A sample line of a wanted series that is not valid Prometheus text."""


def _series(text: bytes, name: bytes) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` in ``text``: (labels, value). ``text`` starts with a newline."""
    out: list[tuple[dict[str, str], float]] = []
    needle = b"\n" + name
    n = len(needle)
    pos = text.find(needle)
    while pos >= 0:
        start = pos + n
        end = text.find(b"\n", start)
        if end < 0:
            end = len(text)
        pos = text.find(needle, end)
        nxt = text[start:start + 1]
        if nxt == b"{":
            close = _label_end(text, start + 1, end)
            labels = parse_labels(text[start + 1:close].decode("utf-8", "replace"))
            rest = text[close + 1:end]
        elif nxt in (b" ", b"\t"):
            labels = {}
            rest = text[start:end]
        else:  # a longer name with this prefix, e.g. vllm:num_requests_waiting_by_reason
            continue
        fields = rest.split()
        if not fields:
            raise MetricsFormatError(f"{name.decode()}: sample without a value")
        out.append((labels, parse_value(fields[0].decode("ascii", "replace"), name)))
    return out


def _label_end(text: bytes, i: int, end: int) -> int:
    """Index of the ``}`` closing a label set that starts at ``i`` (quoted values may hold ``}``)."""
    quoted = False
    while i < end:
        c = text[i]
        if quoted:
            if c == 0x5C:  # backslash escapes the next byte
                i += 1
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x7D:
            return i
        i += 1
    raise MetricsFormatError("label set without a closing '}'")


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def parse_labels(text: str) -> dict[str, str]:
    """``a="x",b="y\\"z"`` -> {"a": "x", "b": 'y"z'} (the text between the braces)."""
    labels: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise MetricsFormatError(f"label {text[i:]!r} has no '='")
        key = text[i:eq].strip()
        i = eq + 1
        while i < n and text[i] == " ":
            i += 1
        if i >= n or text[i] != '"':
            raise MetricsFormatError(f"label {key!r}: value is not quoted")
        i += 1
        chars: list[str] = []
        while i < n and text[i] != '"':
            c = text[i]
            if c == "\\" and i + 1 < n:
                i += 1
                c = _ESCAPES.get(text[i], "\\" + text[i])
            chars.append(c)
            i += 1
        if i >= n:
            raise MetricsFormatError(f"label {key!r}: unterminated value")
        labels[key] = "".join(chars)
        i += 1
    return labels


def parse_value(text: str, name: bytes | str = b"") -> float:
    """A sample value: a float, ``+Inf``, ``-Inf`` or ``NaN``."""
    try:
        return float(text)
    except ValueError:
        shown = name.decode() if isinstance(name, bytes) else name
        raise MetricsFormatError(f"{shown}: value {text!r} is not a number") from None


def _first(text: bytes, names: tuple[bytes, ...]) -> list[tuple[dict[str, str], float]]:
    for name in names:
        found = _series(text, name)
        if found:
            return found
    return []


def _int_label(labels: dict[str, str], key: str) -> int:
    try:
        return int(float(labels.get(key, "0")))
    except ValueError:  # vLLM prints "None" for unset values
        return 0


def _adapters(value: str) -> frozenset[str]:
    return frozenset(a for a in (s.strip() for s in value.split(",")) if a)


def parse_metrics(body: bytes | str, now: float) -> EndpointMetrics:
    """The picker's view of one /metrics page; ``now`` becomes ``updated_at``.

    Raises ``MetricsFormatError`` when a wanted series is malformed. Missing series read as zero."""
    text = body.encode() if isinstance(body, str) else body
    text = b"\n" + text
    m = EndpointMetrics(updated_at=now)
    waiting = _first(text, WAITING)
    if waiting:
        m.waiting = int(sum(v for _, v in waiting if math.isfinite(v)))
    running = _first(text, RUNNING)
    if running:
        m.running = int(sum(v for _, v in running if math.isfinite(v)))
    kv = [v for _, v in _first(text, KV_USAGE) if math.isfinite(v)]
    if kv:
        m.kv_usage = min(1.0, max(0.0, max(kv)))
    lora = _series(text, LORA_INFO)
    if lora:
        labels = max(lora, key=lambda s: s[1])[0]
        m.max_loras = _int_label(labels, "max_lora")
        m.running_loras = _adapters(labels.get("running_lora_adapters", ""))
        m.waiting_loras = _adapters(labels.get("waiting_lora_adapters", ""))
    cache = _series(text, CACHE_INFO)
    if cache:
        labels = cache[0][0]
        m.block_size = _int_label(labels, "block_size")
        m.num_gpu_blocks = _int_label(labels, "num_gpu_blocks")
    return m


def parse_models(body: bytes) -> list[dict]:
    """The model cards of an OpenAI ``GET /v1/models`` answer (``{"data": [{"id": ..., "parent": ...}]}``),
    those with a string ``id``; vLLM lists a LoRA adapter with its base model as ``parent``."""
    doc = orjson.loads(body)
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise ValueError("/v1/models: 'data' is not a list")
    return [d for d in data if isinstance(d, dict) and isinstance(d.get("id"), str)]
