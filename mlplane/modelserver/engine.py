"""A vLLM-like engine in virtual time: continuous batching over a KV block pool with prefix caching.

Pure: no I/O and no clock. The caller adds requests with ``add(request, now)`` and runs
``step(now)``, which schedules one batch and returns how long it takes on the simulated GPU; the
tokens it produces appear at ``now + duration``.

Scheduling follows vLLM V1 (vllm/v1/core/sched/scheduler.py): every step first gives each running
request its next tokens (one decode token, or the next chunk of an unfinished prefill) within the
token budget ``max_num_batched_tokens``; when the KV pool has no free block for them it preempts the
newest running request, frees its blocks and puts it back at the head of the queue (it recomputes
later). Then, if nothing was preempted, it admits waiting requests first come first served while
there is budget, a free sequence slot (``max_num_seqs``) and KV blocks, with chunked prefill. A
waiting request for a LoRA adapter that is not in the batch is skipped while ``max_loras``
adapters are already in it.

KV pool (vLLM's prefix caching design, docs.vllm.ai/en/latest/design/prefix_caching): a full
prompt block is identified by a chained hash of its tokens and the LoRA name; blocks are ref-counted,
a block whose last user finished stays cached and is evicted least-recently-freed first when a new
block is needed (the tail of a finished prompt before its head). A new request's prefix hit is the
run of leading full blocks found in the cache; those tokens cost no prefill. Simplification: blocks
of generated tokens and the partial last block are not cached, and never-used blocks are handed out
before any cached block is evicted.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import xxhash

from mlplane.modelserver.config import EngineConfig

BYTES_PER_TOKEN = 4  # the simulator's tokenizer: 4 bytes of UTF-8 per token (llm-d's estimate mode)

# Bucket bounds of vLLM's histograms (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                   120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0)


class RequestError(ValueError):
    """A request the engine can never run (too long for the model or the KV pool)."""


def prompt_tokens_of_text(text: bytes) -> int:
    """Tokens of a text prompt: one per 4 bytes, at least one."""
    return max(1, -(-len(text) // BYTES_PER_TOKEN))


def block_hashes_of_text(text: bytes, block_size: int, lora: str | None = None) -> list[int]:
    """Chained hashes of the full token blocks of a text prompt (block i covers bytes
    [i*block_size*4, (i+1)*block_size*4)); the chain starts from the LoRA name."""
    step = block_size * BYTES_PER_TOKEN
    n = len(text) // step
    h = xxhash.xxh64_intdigest((lora or "").encode())
    out = []
    mv = memoryview(text)
    for i in range(n):
        h = xxhash.xxh64_intdigest(mv[i * step:(i + 1) * step], seed=h)
        out.append(h)
    return out


def block_hashes_of_ids(ids: list[int], block_size: int, lora: str | None = None) -> list[int]:
    """Chained hashes of the full blocks of a prompt given as token ids."""
    h = xxhash.xxh64_intdigest((lora or "").encode())
    out = []
    for i in range(len(ids) // block_size):
        chunk = ",".join(map(str, ids[i * block_size:(i + 1) * block_size])).encode()
        h = xxhash.xxh64_intdigest(chunk, seed=h)
        out.append(h)
    return out


def output_length(seed: int, key: bytes, mean: int, limit: int) -> int:
    """A pseudo-random output length for a request without max_tokens: exponential with the given
    mean, from a hash of (seed, prompt) so the same request gets the same length on any server."""
    u = (xxhash.xxh64_intdigest(key, seed=seed & 0xFFFFFFFFFFFFFFFF) + 1) / 2.0**64
    n = int(-mean * math.log(u)) + 1
    return max(1, min(n, limit))


@dataclass(eq=False, slots=True)
class SimRequest:
    """One request inside the engine. ``block_hashes`` are the chained hashes of its full prompt
    blocks; ``max_tokens`` is the exact number of tokens it generates."""

    id: str
    prompt_tokens: int
    max_tokens: int
    block_hashes: list[int] = field(default_factory=list)
    lora: str | None = None
    finish_reason: str = "length"  # what the request reports when it has generated max_tokens
    # Filled by the engine (times are virtual seconds).
    arrival: float = 0.0
    first_token_time: float | None = None
    finish_time: float | None = None
    last_token_time: float = 0.0
    output_tokens: int = 0
    cached_tokens: int = 0  # prefix-cache hit of the first admission
    computed: int = 0  # tokens whose KV is in the pool
    finished: bool = False
    aborted: bool = False
    preemptions: int = 0
    _hashed: list[int] = field(default_factory=list)  # cached blocks this request holds a reference on
    _anon: int = 0  # blocks it holds that are not in the cache
    _nblocks: int = 0  # all blocks it holds
    _next_block: int = 0  # index of the next prompt block to register in the cache
    _admitted: bool = False
    _scheduled: int = 0  # tokens scheduled in the current step

    @property
    def target(self) -> int:
        """Tokens whose KV must exist before the next token can be sampled."""
        return self.prompt_tokens + self.output_tokens


@dataclass(slots=True)
class StepResult:
    """One step: its duration, the requests that got a token at its end (in order) and those that
    finished; ``prefill_tokens`` and ``decode_seqs`` describe the batch."""

    duration: float
    emitted: list[SimRequest]
    finished: list[SimRequest]
    prefill_tokens: int = 0
    decode_seqs: int = 0
    preempted: int = 0


class Histogram:
    """Cumulative-bucket histogram in Prometheus' shape."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += count
        self.sum += value * count
        self.count += count


@dataclass(slots=True)
class EngineStats:
    """Counters behind the server's /metrics (token counts, not requests, for the prefix cache)."""

    prefix_queries: int = 0
    prefix_hits: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    success: dict = field(default_factory=dict)  # finished_reason -> count
    aborted: int = 0
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    queue_time: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))


class BlockPool:
    """KV blocks: never-used ones are a count, cached ones are ref-counted by hash, and cached ones
    nobody uses wait in LRU order for eviction."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.empty = num_blocks  # blocks holding nothing reusable
        self.refs: dict[int, int] = {}  # hash -> reference count, for every cached block
        self.evictable: OrderedDict[int, None] = OrderedDict()  # cached, ref 0, oldest first
        self.evictions = 0

    @property
    def free(self) -> int:
        return self.empty + len(self.evictable)

    @property
    def used(self) -> int:
        return self.num_blocks - self.free

    def usage(self) -> float:
        return self.used / self.num_blocks

    def hits(self, hashes: list[int], limit: int) -> int:
        """Leading blocks of ``hashes`` (at most ``limit``) that are cached."""
        refs = self.refs
        n = 0
        for h in hashes:
            if n >= limit or h not in refs:
                break
            n += 1
        return n

    def take_cached(self, hashes: list[int]) -> None:
        """Reference cached blocks (a prefix hit)."""
        for h in hashes:
            r = self.refs[h]
            if r == 0:
                del self.evictable[h]
            self.refs[h] = r + 1

    def take_new(self, n: int) -> bool:
        """Claim ``n`` blocks for new content, evicting least-recently-freed cached ones; False (and
        nothing claimed) when fewer than ``n`` are free."""
        if n > self.empty + len(self.evictable):
            return False
        from_empty = min(n, self.empty)
        self.empty -= from_empty
        for _ in range(n - from_empty):
            h, _ = self.evictable.popitem(last=False)
            del self.refs[h]
            self.evictions += 1
        return True

    def register(self, h: int) -> bool:
        """Turn a claimed block into the cached block ``h`` (ref 1); False if ``h`` is already
        cached (the block stays anonymous, as vLLM keeps duplicates out of the cache)."""
        if h in self.refs:
            return False
        self.refs[h] = 1
        return True

    def release(self, hashed: list[int], anon: int) -> None:
        """Drop a request's references; its tail blocks become evictable before its head."""
        refs = self.refs
        for h in reversed(hashed):
            r = refs[h] - 1
            refs[h] = r
            if r == 0:
                self.evictable[h] = None
        self.empty += anon


class Engine:
    """One simulated vLLM engine."""

    def __init__(self, config: EngineConfig | None = None):
        self.config = config or EngineConfig()
        self.pool = BlockPool(self.config.num_gpu_blocks)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.stats = EngineStats()
        self.steps = 0

    # --- requests -------------------------------------------------------------------------

    def check(self, prompt_tokens: int, max_tokens: int) -> None:
        """Raise RequestError if a request of this size can never run (vLLM's 400 messages)."""
        c = self.config
        total = prompt_tokens + max_tokens
        if total > c.max_model_len:
            raise RequestError(
                f"This model's maximum context length is {c.max_model_len} tokens. However, you requested "
                f"{total} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). "
                f"Please reduce the length of the messages or completion.")
        if -(-total // c.block_size) > c.num_gpu_blocks:
            raise RequestError(
                f"the request needs {total} tokens of KV cache but the cache holds "
                f"{c.num_gpu_blocks * c.block_size} tokens ({c.num_gpu_blocks} blocks of {c.block_size})")

    def add(self, req: SimRequest, now: float) -> None:
        """Queue a request (raises RequestError if it can never run)."""
        if req.max_tokens < 1:
            raise RequestError("max_tokens must be at least 1")
        self.check(req.prompt_tokens, req.max_tokens)
        req.arrival = now
        self.waiting.append(req)

    def abort(self, req: SimRequest) -> None:
        """Stop a request (its client went away) and free its blocks."""
        if req.finished:
            return
        if req in self.running:
            self.running.remove(req)
        else:
            try:
                self.waiting.remove(req)
            except ValueError:
                return
        self._free(req)
        req.finished = req.aborted = True
        self.stats.aborted += 1

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def kv_usage(self) -> float:
        return self.pool.usage()

    def running_loras(self) -> set[str]:
        return {r.lora for r in self.running if r.lora}

    def waiting_loras(self) -> set[str]:
        return {r.lora for r in self.waiting if r.lora}

    # --- the step -----------------------------------------------------------------------------

    def step(self, now: float) -> StepResult:
        """Schedule and run one batch starting at ``now``."""
        c = self.config
        bs = c.block_size
        pool = self.pool
        budget = c.max_num_batched_tokens
        scheduled: list[SimRequest] = []
        preempted = 0
        # the batch's shape, for its cost
        prefill_tokens = 0
        pairs = 0.0
        decode_seqs = 0
        context = 0
        any_lora = False

        # 1. running requests, oldest first: a decode token or the next prefill chunk each.
        i = 0
        running = self.running
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.computed
            remaining = req.prompt_tokens + req.output_tokens - computed
            n = remaining if remaining < budget else budget
            need = -(-(computed + n) // bs) - req._nblocks
            if need > 0:
                while not pool.take_new(need):
                    victim = running.pop()  # the newest running request
                    self._preempt(victim)
                    preempted += 1
                    if victim is req:
                        break
                else:
                    req._anon += need
                    req._nblocks += need
                    need = 0
                if need:
                    break  # the request itself was preempted
            req._scheduled = n
            budget -= n
            scheduled.append(req)
            if n == 1 and remaining == 1 and req.output_tokens:
                decode_seqs += 1
                context += computed
            else:
                prefill_tokens += n
                pairs += n * computed + n * n / 2
            if req.lora:
                any_lora = True
            i += 1

        # 2. waiting requests, first come first served, unless this step preempted.
        if not preempted:
            loras = {r.lora for r in scheduled if r.lora}
            skipped: list[SimRequest] = []
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < c.max_num_seqs:
                req = waiting[0]
                if req.lora and req.lora not in loras and len(loras) >= c.max_loras:
                    skipped.append(waiting.popleft())
                    continue
                target = req.prompt_tokens + req.output_tokens
                hit = 0
                if c.enable_prefix_caching and req.block_hashes:
                    # at least one token must be computed to sample from (vLLM: num_tokens - 1)
                    hit = pool.hits(req.block_hashes, (target - 1) // bs)
                computed = hit * bs
                n = min(target - computed, budget)
                need = -(-(computed + n) // bs) - hit
                if hit:
                    pool.take_cached(req.block_hashes[:hit])
                if not pool.take_new(need):
                    if hit:
                        pool.release(req.block_hashes[:hit], 0)
                    break
                waiting.popleft()
                if not req._admitted:
                    req._admitted = True
                    req.cached_tokens = computed
                    self.stats.prefix_queries += req.prompt_tokens
                    self.stats.prefix_hits += computed
                    self.stats.queue_time.observe(now - req.arrival)
                req._hashed = req.block_hashes[:hit]
                req._next_block = hit
                req._anon = need
                req._nblocks = hit + need
                req.computed = computed
                req._scheduled = n
                budget -= n
                running.append(req)
                scheduled.append(req)
                prefill_tokens += n
                pairs += n * computed + n * n / 2
                if req.lora:
                    loras.add(req.lora)
                    any_lora = True
            if skipped:
                waiting.extendleft(reversed(skipped))

        # 3. cost of the batch.
        duration = c.step_overhead_s
        if scheduled:
            duration += (c.forward_base_s + prefill_tokens * c.prefill_token_s + pairs * c.attention_pair_s
                         + decode_seqs * c.decode_seq_s + context * c.kv_read_token_s)
            if any_lora:
                duration += c.lora_step_s
        end = now + duration

        # 4. commit: KV written, full prompt blocks cached, tokens sampled.
        emitted: list[SimRequest] = []
        finished: list[SimRequest] = []
        stats = self.stats
        caching = c.enable_prefix_caching
        gaps: dict[float, int] = {}  # inter-token gaps of this step -> count
        for req in scheduled:
            computed = req.computed = req.computed + req._scheduled
            if caching and req._next_block < len(req.block_hashes):
                full = min(computed // bs, len(req.block_hashes))
                while req._next_block < full:
                    h = req.block_hashes[req._next_block]
                    req._next_block += 1
                    if pool.register(h):
                        req._hashed.append(h)
                        req._anon -= 1
            if computed < req.prompt_tokens + req.output_tokens:
                continue  # prefill chunk, no token yet
            if req.output_tokens == 0:
                stats.prompt_tokens += req.prompt_tokens
            req.output_tokens += 1
            if req.first_token_time is None:
                req.first_token_time = end
                stats.ttft.observe(end - req.arrival)
            else:
                last = req.last_token_time
                gaps[last] = gaps.get(last, 0) + 1
            req.last_token_time = end
            emitted.append(req)
            if req.output_tokens >= req.max_tokens:
                req.finished = True
                req.finish_time = end
                finished.append(req)
                stats.success[req.finish_reason] = stats.success.get(req.finish_reason, 0) + 1
                stats.e2e.observe(end - req.arrival)
        stats.generation_tokens += len(emitted)
        for last, count in gaps.items():
            stats.itl.observe(end - last, count)
        if finished:
            done = set(map(id, finished))
            self.running = [r for r in self.running if id(r) not in done]
            for req in finished:
                self._free(req)
        self.steps += 1
        return StepResult(duration, emitted, finished, prefill_tokens, decode_seqs, preempted)

    def _free(self, req: SimRequest) -> None:
        self.pool.release(req._hashed, req._anon)
        req._hashed = []
        req._anon = 0
        req._nblocks = 0
        req._next_block = 0

    def _preempt(self, req: SimRequest) -> None:
        self._free(req)
        req.computed = 0
        req.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(req)
