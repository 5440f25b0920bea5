"""The simulated engine's constants, with defaults for an 8B model (Llama-3.1-8B class, BF16) on one
H100 80 GB, and loading them from a YAML file.

Sources of the defaults (facts gathered in shared/reference/traffic.md §7.3):
- vLLM V1 scheduler defaults on GPUs with >= 70 GiB (H100): ``max_num_batched_tokens`` 8192,
  ``max_num_seqs`` 1024, KV block size 16 tokens (vllm/engine/arg_utils.py ``get_batch_defaults``).
- KV cache: 128 KiB per token for Llama-3-8B (32 layers x 8 KV heads x 128 dims x K,V x 2 bytes);
  (80 GB HBM - 16 GB weights) / 128 KiB / 16 tokens = 30,517 blocks.
- Prefill: about 30k tokens/s when saturated (2 x 8e9 FLOP/token / (989 TFLOPS x MFU 0.45)),
  so 1/30,000 s per uncached prompt token; attention adds 4 x 32 layers x 4096 FLOP per
  (query token, context token) pair, about 1.2 ns at the same rate.
- Decode: inter-token latency 10-15 ms at batch 1; the floor is reading the 16 GB of weights at
  3.35 TB/s (about 5 ms), so a forward pass costs 8 ms plus 2 ms of scheduling overhead; each
  sequence in the batch adds 50 us (sampling, batch bookkeeping) and each context token read adds
  128 KiB / 3.35 TB/s = 40 ns, so the step grows with batch size and context.
- ``max_loras`` 1 and ``max_model_len`` 131,072 are vLLM's and Llama-3.1's defaults.

A file holds a YAML mapping of these keys (``max-num-seqs`` and ``max_num_seqs`` are the same key);
an unknown key or a value of the wrong type is an error that names the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

HBM_BYTES = 80e9
WEIGHT_BYTES = 16e9
KV_BYTES_PER_TOKEN = 128 * 1024
BLOCK_SIZE = 16
DEFAULT_GPU_BLOCKS = int((HBM_BYTES - WEIGHT_BYTES) / KV_BYTES_PER_TOKEN / BLOCK_SIZE)  # 30,517


class ConfigError(ValueError):
    """A bad simulator configuration: the message names the key."""


DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"  # the served name unless --model says otherwise

@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Constants of one simulated vLLM engine. Durations are seconds of simulated H100 time."""

    block_size: int = BLOCK_SIZE  # tokens per KV block
    num_gpu_blocks: int = DEFAULT_GPU_BLOCKS  # KV blocks in the pool
    max_num_batched_tokens: int = 8192  # token budget of one step
    max_num_seqs: int = 1024  # sequences running at once
    max_model_len: int = 131072  # prompt + output tokens of one request
    max_loras: int = 1  # distinct LoRA adapters in one step's batch
    enable_prefix_caching: bool = True
    step_overhead_s: float = 0.002  # scheduling, launch and sampling of every step
    forward_base_s: float = 0.008  # one pass over the weights (paid by every step that runs)
    prefill_token_s: float = 1 / 30000  # per uncached prompt token (linear layers)
    attention_pair_s: float = 1.2e-9  # per (new token, context token) pair in prefill
    decode_seq_s: float = 5e-5  # per decoding sequence in the batch
    kv_read_token_s: float = 4e-8  # per context token a decoding sequence reads
    lora_step_s: float = 0.001  # extra per step when the batch uses any LoRA adapter
    mean_output_tokens: int = 200  # mean output length when a request sets no max_tokens
    time_scale: float = 1.0  # real seconds per simulated second (0.1 = ten times faster)

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, f.type, getattr(self, f.name))
        positive = ("block_size", "num_gpu_blocks", "max_num_batched_tokens", "max_num_seqs",
                    "max_model_len", "max_loras", "mean_output_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for f in fields(self):
            if f.name.endswith("_s") and getattr(self, f.name) < 0:
                raise ConfigError(f"{f.name}: must not be negative, got {getattr(self, f.name)}")
        if not self.time_scale > 0:
            raise ConfigError(f"time_scale: must be greater than 0, got {self.time_scale}")

    def replace(self, **changes: Any) -> "EngineConfig":
        return dataclasses.replace(self, **changes)


_TYPES = {"int": int, "float": float, "bool": bool}


def _check_type(name: str, type_name: Any, value: Any) -> None:
    want = _TYPES[type_name if isinstance(type_name, str) else type_name.__name__]
    if want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, bool)
    if not ok:
        raise ConfigError(f"{name}: expected {want.__name__}, got {type(value).__name__} {value!r}")


def config_from_mapping(data: Any, *, source: str = "config") -> EngineConfig:
    """An EngineConfig from a mapping of keys (dashes or underscores) to values; strict."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in fields(EngineConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if name in values:
            raise ConfigError(f"{source}: key {key!r} given twice")
        values[name] = float(value) if _is_float_field(name) and isinstance(value, int) and not isinstance(value, bool) else value
    try:
        return EngineConfig(**values)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _is_float_field(name: str) -> bool:
    for f in fields(EngineConfig):
        if f.name == name:
            return f.type in ("float", float)
    return False


def load_config(path: str | Path) -> EngineConfig:
    """Read a YAML file of settings; errors name the file and the key."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return config_from_mapping(data, source=str(p))
