"""Approximate prefix-cache state kept by the router: chained hashes of a prompt's blocks and an index
of which endpoint was last sent which blocks.

Ported rules (llm-d-router approximate prefix producer, GIE proposal 0602 "prefix cache aware routing";
llm-d-router:pkg/epp/framework/plugins/requestcontrol/dataproducer/prefixhash/hashing.go and
.../approximateprefix/indexer.go):
- the prompt is cut into fixed blocks (64 tokens by default; smaller blocks cost memory for little gain,
  so upstream floors the block size to 64) and only whole blocks are hashed, as engines cache whole blocks;
- block ``i``'s hash is chained on block ``i-1``'s and the chain is seeded with the model (or LoRA adapter)
  name, so a hit on block ``i`` implies the same model saw blocks ``0..i``;
- the index maps hash -> endpoints and keeps a per-endpoint LRU of ``lruCapacityPerServer`` blocks
  (31,250 by default, or sized from the engine's ``vllm:cache_config_info`` when known);
- a match is the longest run of consecutive blocks from the start that one endpoint holds.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Sequence

import xxhash

from mlplane.policy.traffic.request import BYTES_PER_TOKEN
from mlplane.policy.traffic.types import InferenceRequest

DEFAULT_BLOCK_TOKENS = 64
DEFAULT_MAX_BLOCKS = 2048  # maxPrefixBlocksToMatch
DEFAULT_LRU_CAPACITY = 31_250  # lruCapacityPerServer

_hash = xxhash.xxh3_64_intdigest


def chain_seed(model: str, salt: str = "") -> int:
    """The hash the chain starts from: the model/adapter name and the request's cache salt."""
    return _hash(f"{model}\x00{salt}".encode())


def block_hashes(prompt: str | bytes, seed: int, block_tokens: int = DEFAULT_BLOCK_TOKENS,
                 max_blocks: int = DEFAULT_MAX_BLOCKS) -> list[int]:
    """Chained 64-bit hashes of the whole ``block_tokens`` blocks of ``prompt`` (at most ``max_blocks``)."""
    data = prompt.encode() if isinstance(prompt, str) else prompt
    size = block_tokens * BYTES_PER_TOKEN
    count = min(len(data) // size, max_blocks)
    view = memoryview(data)
    hashes = []
    prev = seed
    for i in range(count):
        prev = _hash(view[i * size:(i + 1) * size], prev)
        hashes.append(prev)
    return hashes


def request_hashes(request: InferenceRequest, block_tokens: int = DEFAULT_BLOCK_TOKENS,
                   max_blocks: int = DEFAULT_MAX_BLOCKS) -> list[int]:
    """The request's block hashes, computed once and cached in ``request.state``."""
    key = ("prefix-hashes", block_tokens, max_blocks)
    hashes = request.state.get(key)
    if hashes is None:
        seed = chain_seed(request.lora or request.model, request.state.get("cache_salt", ""))
        hashes = block_hashes(request.prompt, seed, block_tokens, max_blocks)
        request.state[key] = hashes
    return hashes


class PrefixIndex:
    """hash -> endpoints that were sent that block, with a per-endpoint LRU bound."""

    def __init__(self, capacity: int = DEFAULT_LRU_CAPACITY):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._owners: dict[int, set[str]] = {}
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self._capacity: dict[str, int] = {}

    def set_capacity(self, endpoint: str, blocks: int) -> None:
        """Bound ``endpoint``'s LRU to ``blocks`` (e.g. sized from its KV cache); evicts at once if over."""
        blocks = max(1, int(blocks))
        if self._capacity.get(endpoint) == blocks:
            return
        self._capacity[endpoint] = blocks
        lru = self._lru.get(endpoint)
        if lru is not None:
            self._evict(endpoint, lru, blocks)

    def capacity_of(self, endpoint: str) -> int:
        return self._capacity.get(endpoint, self.capacity)

    def match(self, hashes: Sequence[int]) -> dict[str, int]:
        """endpoint -> number of consecutive blocks from the start of ``hashes`` it holds (endpoints with
        no match are left out)."""
        result: dict[str, int] = {}
        if not hashes:
            return result
        owners = self._owners.get(hashes[0])
        if not owners:
            return result
        alive = set(owners)
        i = 1
        for i in range(1, len(hashes)):
            owners = self._owners.get(hashes[i])
            if not owners:
                break
            dropped = alive - owners
            if dropped:
                for name in dropped:
                    result[name] = i
                alive &= owners
                if not alive:
                    return result
        else:
            i = len(hashes)
        for name in alive:
            result[name] = i
        return result

    def insert(self, endpoint: str, hashes: Sequence[int]) -> None:
        """Record that ``endpoint`` now holds ``hashes`` (most recently used). The first block is made the
        most recent so that eviction takes a prompt's tail before its head, as the engine's own LRU does."""
        lru = self._lru.get(endpoint)
        if lru is None:
            lru = self._lru[endpoint] = OrderedDict()
        owners = self._owners
        for h in reversed(hashes):
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                holders = owners.get(h)
                if holders is None:
                    owners[h] = {endpoint}
                else:
                    holders.add(endpoint)
        self._evict(endpoint, lru, self._capacity.get(endpoint, self.capacity))

    def _evict(self, endpoint: str, lru: OrderedDict[int, None], capacity: int) -> None:
        owners = self._owners
        while len(lru) > capacity:
            h, _ = lru.popitem(last=False)
            holders = owners.get(h)
            if holders is not None:
                holders.discard(endpoint)
                if not holders:
                    del owners[h]

    def remove_endpoint(self, endpoint: str) -> None:
        """Forget everything about ``endpoint``."""
        lru = self._lru.pop(endpoint, None)
        self._capacity.pop(endpoint, None)
        if lru is None:
            return
        for h in lru:
            holders = self._owners.get(h)
            if holders is not None:
                holders.discard(endpoint)
                if not holders:
                    del self._owners[h]

    def endpoints(self) -> Iterable[str]:
        return self._lru.keys()

    def size(self, endpoint: str | None = None) -> int:
        """Blocks held by ``endpoint`` (or by all endpoints together)."""
        if endpoint is not None:
            lru = self._lru.get(endpoint)
            return len(lru) if lru is not None else 0
        return sum(len(lru) for lru in self._lru.values())
