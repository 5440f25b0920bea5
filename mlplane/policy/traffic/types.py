"""The traffic plane's vocabulary: a parsed inference request, an endpoint with what we know of it,
and the decision the endpoint picker returns.

These are plain mutable dataclasses on purpose: the gateway (and the ext_proc server, and the
benchmark's in-process routers) keep one ``Endpoint`` per model-server port and update its
scraped ``metrics`` and router-side counters in place; the picker reads them. Nothing here does
I/O or reads a clock: every call that needs the time is given ``now`` (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

# Default fairness flow when a request names none (llm-d's `default-flow`).
DEFAULT_FLOW = "default-flow"


@dataclass(slots=True)
class EndpointMetrics:
    """What the last scrape of a model server's /metrics said (vLLM metric names)."""

    waiting: int = 0  # vllm:num_requests_waiting
    running: int = 0  # vllm:num_requests_running
    kv_usage: float = 0.0  # vllm:kv_cache_usage_perc, 0..1 (falls back to vllm:gpu_cache_usage_perc)
    running_loras: frozenset[str] = frozenset()  # vllm:lora_requests_info{running_lora_adapters}
    waiting_loras: frozenset[str] = frozenset()  # vllm:lora_requests_info{waiting_lora_adapters}
    max_loras: int = 0  # vllm:lora_requests_info{max_lora}
    block_size: int = 0  # vllm:cache_config_info{block_size}, 0 = unknown
    num_gpu_blocks: int = 0  # vllm:cache_config_info{num_gpu_blocks}, 0 = unknown
    updated_at: float = float("-inf")  # monotonic time of the last successful scrape


@dataclass(slots=True, eq=False)
class Endpoint:
    """One model-server port of a pool: ``address`` is "ip:port"."""

    name: str  # stable id: "namespace/pod:port" for pool members, the address for static backends
    address: str
    pool: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics: EndpointMetrics = field(default_factory=EndpointMetrics)
    # Router-side counts, updated by the picker's request hooks (instant, unlike scraped metrics).
    inflight: int = 0  # requests sent and not finished
    inflight_tokens: int = 0  # uncached prompt tokens sent whose first token has not come back
    healthy: bool = True  # False after a connection failure until the next good scrape


@dataclass(slots=True)
class InferenceRequest:
    """An OpenAI completions / chat request as the picker sees it."""

    id: str
    model: str
    prompt: str  # text used for prefix hashing: the completion prompt, or the chat messages flattened
    prompt_tokens: int  # estimated prompt length in tokens
    max_tokens: int | None = None
    stream: bool = False
    priority: int = 0  # from the InferenceObjective; negative = sheddable
    fairness_id: str = DEFAULT_FLOW
    lora: str | None = None  # adapter name when `model` names a LoRA adapter rather than the base model
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case request headers
    size: int = 0  # body size in bytes (flow-control byte limits)
    # Filled by the picker's producers (prefix hashes etc.) and read by its scorers and hooks.
    state: dict = field(default_factory=dict)


@dataclass(slots=True)
class Decision:
    """What the picker chose: ``endpoints[0]`` first, then fallbacks in order (may be empty)."""

    endpoints: list[Endpoint]
    scores: dict[str, float] = field(default_factory=dict)  # endpoint name -> weighted score
    reason: str = ""  # why nothing was picked, or which rule decided (e.g. "load escape")
