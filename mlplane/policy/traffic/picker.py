"""The endpoint picker: filters -> weighted scorers -> picker over a pool's endpoints, plus the request
hooks that keep the router-side state (in-flight counts, uncached tokens in flight, the prefix index).

A pick follows llm-d's scheduling cycle (llm-d-router:docs/architecture.md): the candidates pass the
filters in order, each scorer gives them a score in [0, 1], the total is ``Σ weight × score``, and the
picker orders them. ``Decision.endpoints`` is the destination followed by up to ``fallbacks`` more (the
proxy retries on them when nothing reached the first one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mlplane.policy.traffic import prefix as prefixmod
from mlplane.policy.traffic.plugins import Filter, MaxScorePicker, Picker, Plugin, Scorer
from mlplane.policy.traffic.types import Decision, Endpoint, InferenceRequest

MAX_FALLBACKS = 2


@dataclass(slots=True)
class PrefixSettings:
    """The router-side prefix index (llm-d approximate prefix producer parameters)."""

    block_tokens: int = prefixmod.DEFAULT_BLOCK_TOKENS  # blockSizeTokens (floored to 64 upstream)
    max_blocks: int = prefixmod.DEFAULT_MAX_BLOCKS  # maxPrefixBlocksToMatch
    lru_capacity: int = prefixmod.DEFAULT_LRU_CAPACITY  # lruCapacityPerServer
    auto_tune: bool = True  # size each endpoint's LRU from vllm:cache_config_info when reported


class Cycle:
    """What the plugins of one pick share: the request, the time, prefix matches (computed once) and
    the router's counts of requests sent since each endpoint's last scrape."""

    __slots__ = ("picker", "request", "now", "notes", "escaped", "_matches", "block_tokens")

    def __init__(self, picker: EndpointPicker, request: InferenceRequest, now: float):
        self.picker = picker
        self.request = request
        self.now = now
        self.notes: list[str] = []
        self.escaped = False
        self._matches: dict[str, int] | None = None
        self.block_tokens = picker.prefix.block_tokens

    def note(self, text: str) -> None:
        self.notes.append(text)

    def hashes(self) -> list[int]:
        p = self.picker.prefix
        return prefixmod.request_hashes(self.request, p.block_tokens, p.max_blocks)

    def total_blocks(self) -> int:
        return len(self.hashes())

    def matched_blocks(self, endpoint: Endpoint) -> int:
        if self._matches is None:
            self._matches = self.picker.index.match(self.hashes())
            self.request.state["prefix-matches"] = self._matches
        return self._matches.get(endpoint.name, 0)

    def cached_tokens(self, endpoint: Endpoint) -> int:
        return min(self.request.prompt_tokens, self.matched_blocks(endpoint) * self.block_tokens)

    def uncached_tokens(self, endpoint: Endpoint) -> int:
        return self.request.prompt_tokens - self.cached_tokens(endpoint)

    def pending(self, endpoint: Endpoint) -> tuple[int, int]:
        return self.picker.pending(endpoint)


class EndpointPicker:
    """Pick endpoints for requests and track what the router has in flight."""

    def __init__(self, filters: Sequence[Filter] = (), scorers: Sequence[tuple[Scorer, float]] = (),
                 picker: Picker | None = None, prefix: PrefixSettings | None = None,
                 fallbacks: int = MAX_FALLBACKS, name: str = ""):
        for scorer, weight in scorers:
            if weight < 0:
                raise ValueError(f"weight of {scorer.name} must be at least 0, got {weight}")
        self.name = name
        self.filters = list(filters)
        self.scorers = [(s, float(w)) for s, w in scorers]
        self.picker = picker or MaxScorePicker()
        self.prefix = prefix or PrefixSettings()
        self.fallbacks = fallbacks
        plugins: list[Plugin] = [*self.filters, *(s for s, _ in self.scorers), self.picker]
        self.uses_prefix = any(p.uses_prefix for p in plugins)
        self.index = prefixmod.PrefixIndex(self.prefix.lru_capacity)
        # endpoint name -> [scrape time seen, requests sent since, uncached tokens sent since]
        self._pending: dict[str, list] = {}

    # ------------------------------------------------------------ picking

    def pick(self, request: InferenceRequest, endpoints: Sequence[Endpoint], now: float) -> Decision:
        """The destination and fallbacks for ``request`` among ``endpoints``, best first."""
        if not endpoints:
            return Decision([], reason="no endpoints in the pool")
        cycle = Cycle(self, request, now)
        candidates = list(endpoints)
        for f in self.filters:
            candidates = f.filter(cycle, candidates)
            if not candidates:
                notes = "; ".join(cycle.notes)
                return Decision([], reason=f"no endpoint left after filter {f.name}" + (f" ({notes})" if notes else ""))
        totals = {e.name: 0.0 for e in candidates}
        for scorer, weight in self.scorers:
            if weight == 0:
                continue
            scores = scorer.score(cycle, candidates)
            for name in totals:
                s = scores.get(name, 0.0)
                totals[name] += weight * (0.0 if s < 0 else 1.0 if s > 1 else s)
        ordered = self.picker.order(cycle, candidates, totals)
        chosen = ordered[: 1 + self.fallbacks]
        reason = "; ".join(cycle.notes) if cycle.notes else self.picker.TYPE
        return Decision(chosen, scores=totals, reason=reason)

    # ------------------------------------------------------------ request hooks

    def on_sent(self, request: InferenceRequest, endpoint: Endpoint, now: float) -> None:
        """``request`` was sent to ``endpoint``: count it in flight, with its uncached prompt tokens, and
        record its prefix blocks as held by the endpoint (speculatively, before the engine reports)."""
        uncached = request.prompt_tokens
        if self.uses_prefix:
            p = self.prefix
            hashes = prefixmod.request_hashes(request, p.block_tokens, p.max_blocks)
            matches = request.state.get("prefix-matches")
            if matches is None:
                matches = self.index.match(hashes)
            cached = min(request.prompt_tokens, matches.get(endpoint.name, 0) * p.block_tokens)
            uncached -= cached
            if p.auto_tune:
                m = endpoint.metrics
                if m.num_gpu_blocks > 0 and m.block_size > 0:
                    self.index.set_capacity(endpoint.name, m.num_gpu_blocks * m.block_size // p.block_tokens)
            self.index.insert(endpoint.name, hashes)
            request.state.pop("prefix-matches", None)  # the index changed: a retry must match afresh
        endpoint.inflight += 1
        endpoint.inflight_tokens += uncached
        request.state.setdefault("sent", {})[endpoint.name] = uncached
        rec = self._pending.get(endpoint.name)
        if rec is None or rec[0] != endpoint.metrics.updated_at:
            rec = self._pending[endpoint.name] = [endpoint.metrics.updated_at, 0, 0]
        rec[1] += 1
        rec[2] += uncached
        # which scrape window counted it: (scrape time, still counted as waiting, tokens)
        request.state.setdefault("pending", {})[endpoint.name] = [rec[0], True, uncached]

    def on_first_token(self, request: InferenceRequest, endpoint: Endpoint, now: float) -> None:
        """The first token came back: the prompt's prefill is done, release its tokens."""
        self._release_tokens(request, endpoint)
        self._unpend(request, endpoint, done=False)

    def _unpend(self, request: InferenceRequest, endpoint: Endpoint, done: bool) -> None:
        """Take the request out of the since-the-scrape counts once it is no longer waiting (first token)
        and its KV no longer held (done), if no scrape has seen it meanwhile."""
        mine = request.state.get("pending", {}).get(endpoint.name)
        if mine is None:
            return
        rec = self._pending.get(endpoint.name)
        if rec is not None and rec[0] == mine[0]:
            if mine[1]:
                rec[1] = max(0, rec[1] - 1)
            if done:
                rec[2] = max(0, rec[2] - mine[2])
        mine[1] = False
        if done:
            del request.state["pending"][endpoint.name]

    def on_done(self, request: InferenceRequest, endpoint: Endpoint, now: float, ok: bool) -> None:
        """The request finished at ``endpoint`` (``ok`` False: it failed)."""
        sent = request.state.get("sent")
        if sent is None or endpoint.name not in sent:
            return
        self._release_tokens(request, endpoint)
        self._unpend(request, endpoint, done=True)
        del sent[endpoint.name]
        endpoint.inflight = max(0, endpoint.inflight - 1)

    def _release_tokens(self, request: InferenceRequest, endpoint: Endpoint) -> None:
        sent = request.state.get("sent")
        if not sent:
            return
        tokens = sent.get(endpoint.name)
        if tokens:
            endpoint.inflight_tokens = max(0, endpoint.inflight_tokens - tokens)
            sent[endpoint.name] = 0

    def on_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """The pool now has ``endpoints``: forget the state of those that left."""
        names = {e.name for e in endpoints}
        for name in [n for n in self.index.endpoints() if n not in names]:
            self.index.remove_endpoint(name)
        for name in [n for n in self._pending if n not in names]:
            del self._pending[name]

    def pending(self, endpoint: Endpoint) -> tuple[int, int]:
        """What ``endpoint``'s last scrape cannot have seen: (requests sent since then that have not
        produced a first token, uncached prompt tokens sent since then of requests not finished)."""
        rec = self._pending.get(endpoint.name)
        if rec is None or rec[0] != endpoint.metrics.updated_at:
            return 0, 0
        return rec[1], rec[2]

    def describe(self) -> str:
        parts = [f.name for f in self.filters]
        parts += [f"{s.name}×{w:g}" for s, w in self.scorers]
        parts.append(self.picker.name)
        return " -> ".join(parts)
