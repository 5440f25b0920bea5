"""One InferencePool at run time: its endpoints, a scraper per endpoint, the endpoint picker and the
optional flow controller. Shared by the HTTP gateway (``proxy.py``) and the ext_proc service; nothing
here knows about the transport the requests came in on.

Lifecycle of a request: ``await acquire(request)`` runs admission (dispatch now, wait in the flow
control queue, or shed), picks, and counts the request as sent to ``decision.endpoints[0]``; the
caller then reports ``first_token`` and ``done`` for the endpoint that served it, or ``retarget``
when it moves the request to a fallback. Scraping a model server's ``/metrics`` every
``scrape_interval`` (50 ms, llm-d's refresh tick) keeps ``Endpoint.metrics`` fresh; a failed scrape
or connection marks the endpoint unhealthy until the next good scrape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from mlplane.gateway.metrics import GatewayMetrics
from mlplane.gateway.scrape import MetricsFormatError, parse_metrics, parse_models
from mlplane.net.http import Client, ClientError
from mlplane.policy.traffic.types import Decision, Endpoint, InferenceRequest

log = logging.getLogger("mlplane.gateway")

MODELS_INTERVAL = 5.0  # how often each endpoint's /v1/models is read again
MODELS_RETRY = 1.0  # ... and how soon after a failed read


class PickError(Exception):
    """A request the pool cannot serve now; ``status`` is the HTTP answer, ``reason`` the metric label."""

    status = 503
    reason = "error"

    def __init_subclass__(cls, *, status: int, reason: str, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.status, cls.reason = status, reason


class NoEndpoints(PickError, status=503, reason="no_endpoints"):
    """No ready endpoint (or none the picker accepts): 503."""


class Shed(PickError, status=429, reason="shed"):
    """A sheddable request (priority < 0) while the pool is saturated, or the queue is full: 429."""


class Expired(PickError, status=503, reason="queue_expired"):
    """The request waited in the flow control queue longer than its TTL: 503."""


class ClientGone(PickError, status=499, reason="client_gone"):
    """The client disconnected while its request waited in the queue."""


@dataclass(slots=True, eq=False)
class _Waiter:
    """A request parked in the flow control queue until ``pop_ready`` releases it."""

    future: asyncio.Future
    request: InferenceRequest
    subset: Collection[str] | None = None


class PoolRuntime:
    """Endpoints, scrapers, picker and flow control of one pool."""

    def __init__(self, name: str, picker, client: Client, *, flow=None, detector=None,
                 scrape_interval: float = 0.05, scrape_timeout: float | None = None,
                 models_interval: float = MODELS_INTERVAL, objectives: Mapping[str, int] | None = None,
                 metrics: GatewayMetrics | None = None, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.picker = picker
        self.client = client
        self.flow = flow
        if detector is None and flow is None:
            from mlplane.policy.traffic.flow import SaturationDetector

            detector = SaturationDetector(pending=picker.pending)
        self.detector = detector
        self.scrape_interval = scrape_interval
        self.scrape_timeout = scrape_timeout if scrape_timeout is not None else max(1.0, 20 * scrape_interval)
        self.models_interval = models_interval
        self.flag_objectives: dict[str, int] = dict(objectives or {})  # given at start (--objective)
        self.objectives: dict[str, int] = dict(self.flag_objectives)
        self.metrics = metrics
        self.clock = clock
        self.endpoints: list[Endpoint] = []
        self.models: dict[str, list[dict]] = {}  # endpoint name -> model cards from its /v1/models
        self.base: frozenset[str] = frozenset()  # base model ids (cards without a parent) of all endpoints
        self.adapters: frozenset[str] = frozenset()  # LoRA adapter ids (cards with a parent) of all endpoints
        self._tasks: dict[str, asyncio.Task] = {}
        self._started = False
        self._ready: list[Endpoint] | None = None  # healthy endpoints, rebuilt after any change
        self._by_model: dict[str, list[Endpoint]] = {}  # model id -> ready endpoints that list it
        self._known: frozenset[str] = frozenset()  # model ids any endpoint lists, ready or not
        self._waiting: set[_Waiter] = set()
        self._ticker: asyncio.Task | None = None
        self._metrics_key = (name,)
        # The InferencePool's endpointPickerRef.failureMode: when the picker cannot decide (it fails,
        # or no candidate has fresh metrics), FailOpen still routes the request, FailClose refuses it.
        self.fail_open = False
        self._rotation = 0

    # --- membership -------------------------------------------------------------------------

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the member list; endpoints that stay (same name and address) keep their state."""
        old = {e.name: e for e in self.endpoints}
        kept: list[Endpoint] = []
        for e in endpoints:
            cur = old.get(e.name)
            if cur is not None and cur.address == e.address:
                cur.labels = e.labels
                cur.pool = e.pool or self.name
                kept.append(cur)
            else:
                if not e.pool:
                    e.pool = self.name
                kept.append(e)
        keep_ids = {id(e) for e in kept}
        for e in old.values():
            if id(e) not in keep_ids:
                task = self._tasks.pop(e.name, None)
                if task is not None:
                    task.cancel()
                if self.models.pop(e.name, None) is not None:
                    self._models_changed()
        self.endpoints = kept
        self.picker.on_endpoints(kept)
        if self._started:
            for e in kept:
                self._start_scraper(e)
        self._changed()

    def set_objectives(self, objectives: Mapping[str, int]) -> None:
        """The pool's InferenceObjectives (name -> priority), on top of those given at start."""
        self.objectives = {**self.flag_objectives, **objectives}

    def priority(self, objective: str | None) -> int:
        """The priority of the named InferenceObjective (0 when unnamed or unknown, as in llm-d)."""
        if not objective:
            return 0
        return self.objectives.get(objective, 0)

    def _changed(self) -> None:
        self._ready = None

    def _models_changed(self) -> None:
        cards = [c for cs in self.models.values() for c in cs]
        self.base = frozenset(c["id"] for c in cards if not c.get("parent"))
        self.adapters = frozenset(c["id"] for c in cards if c.get("parent"))
        self._known = frozenset(c["id"] for c in cards)
        self._ready = None

    def _index(self) -> list[Endpoint]:
        ready = [e for e in self.endpoints if e.healthy]
        by_model: dict[str, list[Endpoint]] = {}
        for e in ready:
            for card in self.models.get(e.name, ()):
                by_model.setdefault(card["id"], []).append(e)
        self._by_model = by_model
        self._ready = ready
        return ready

    def ready(self) -> list[Endpoint]:
        """The healthy endpoints."""
        ready = self._ready
        return ready if ready is not None else self._index()

    def candidates(self, model: str) -> list[Endpoint]:
        """Healthy endpoints that list ``model`` in /v1/models; all healthy ones when no endpoint lists it
        (model lists not read yet, or a server that does not list its models)."""
        ready = self.ready()
        found = self._by_model.get(model)
        if found is not None:
            return found
        return [] if model in self._known else ready

    def served_models(self) -> list[dict]:
        """The model cards the pool's endpoints list, one per id."""
        seen: dict[str, dict] = {}
        for cards in self.models.values():
            for card in cards:
                seen.setdefault(card["id"], card)
        return list(seen.values())

    def is_adapter(self, model: str) -> bool:
        """Whether some endpoint lists ``model`` as a LoRA adapter (a model card with a parent)."""
        return model in self.adapters

    def serves(self, model: str) -> bool:
        """Whether an endpoint of the pool (ready or not) lists ``model``."""
        return model in self._known

    def mark_failed(self, endpoint: Endpoint, why: str = "") -> None:
        """A connection to ``endpoint`` failed: leave it out until a scrape succeeds again, and forget the
        prompt prefixes it held (a server that refuses connections has usually restarted, cache empty)."""
        self.picker.index.remove_endpoint(endpoint.name)
        if endpoint.healthy:
            endpoint.healthy = False
            log.warning("pool %s: endpoint %s (%s) is unhealthy: %s", self.name, endpoint.name,
                        endpoint.address, why or "connection failed")
            self._changed()

    # --- requests ---------------------------------------------------------------------------

    async def acquire(self, request: InferenceRequest, gone: Callable[[], asyncio.Event] | None = None,
                      subset: Collection[str] | None = None) -> Decision:
        """Admit and pick; the request counts as sent to ``decision.endpoints[0]``. ``gone()`` (only called
        when the request has to wait) gives an event set when the client goes away; ``subset`` (the
        proxy's ``x-gateway-destination-endpoint-subset`` hint, "ip:port" addresses) limits the choice.

        Raises ``NoEndpoints`` (503), ``Shed`` (429), ``Expired`` (503) or ``ClientGone``."""
        candidates = self._candidates(request, subset)
        if self.fail_open and self._blind(candidates):
            return self._pick(request, candidates)  # no metrics to admit on: let it through
        flow = self.flow
        if flow is not None:
            verdict = flow.admit(request, candidates, self.clock())
            if verdict == "queue":
                return await self._wait(request, gone, subset)
            if verdict == "reject":
                self._count_shed()
                raise Shed(f"pool {self.name} is saturated: request with priority {request.priority} "
                           "was shed")
        elif request.priority < 0 and self.detector.saturated(candidates, self.clock()):
            self._count_shed()
            raise Shed(f"pool {self.name} is saturated: sheddable request (priority {request.priority}) "
                       "was shed")
        return self._pick(request, candidates)

    def _candidates(self, request: InferenceRequest, subset: Collection[str] | None) -> list[Endpoint]:
        candidates = self.candidates(request.model)
        if subset is not None:
            candidates = [e for e in candidates if e.address in subset]
            if not candidates:
                raise NoEndpoints(f"no ready endpoint of pool {self.name} is in the subset hint "
                                  f"({', '.join(sorted(subset))})")
        elif not candidates:
            raise NoEndpoints(f"no ready endpoints in pool {self.name}")
        return candidates

    def _count_shed(self) -> None:
        if self.metrics is not None:
            self.metrics.shed.inc(self._metrics_key)

    def _blind(self, candidates: list[Endpoint]) -> bool:
        """Whether no candidate has metrics fresh enough to judge saturation by."""
        now, staleness = self.clock(), self.detector.staleness
        return all(now - e.metrics.updated_at > staleness for e in candidates)

    def _pick(self, request: InferenceRequest, candidates: list[Endpoint]) -> Decision:
        t0 = time.perf_counter()
        try:
            decision = self.picker.pick(request, candidates, self.clock())
        except Exception as e:  # a picker bug must not take the pool down with it when it may fail open
            log.exception("pool %s: the endpoint picker failed", self.name)
            if not self.fail_open:
                raise NoEndpoints(f"pool {self.name}: the endpoint picker failed ({e}) and the pool's "
                                  "failureMode is FailClose") from None
            self._rotation += 1
            decision = Decision([candidates[self._rotation % len(candidates)]], reason="picker failed: FailOpen")
        if self.metrics is not None:
            self.metrics.picker.observe((), time.perf_counter() - t0)
        if not decision.endpoints:
            why = f": {decision.reason}" if decision.reason else ""
            raise NoEndpoints(f"no ready endpoints in pool {self.name}{why}")
        self.picker.on_sent(request, decision.endpoints[0], self.clock())
        return decision

    async def _wait(self, request: InferenceRequest, gone: Callable[[], asyncio.Event] | None,
                    subset: Collection[str] | None) -> Decision:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), request, subset)
        self.flow.enqueue(waiter, request, self.clock())
        self._waiting.add(waiter)
        self.release()  # it may have queued only behind others of its band that can go now
        if self._waiting and (self._ticker is None or self._ticker.done()):
            self._ticker = loop.create_task(self._tick())
        watch = None
        if gone is not None:
            event = gone()
            watch = loop.create_task(event.wait())
            watch.add_done_callback(lambda _: waiter.future.cancel())
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self.flow.cancel(waiter)
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.done(request, fut.result().endpoints[0], False)  # released, then cancelled: undo on_sent
            if watch is not None and watch.done() and not watch.cancelled():
                raise ClientGone("the client went away while its request waited in the queue") from None
            raise
        finally:
            self._waiting.discard(waiter)
            if watch is not None:
                watch.cancel()

    async def _tick(self) -> None:
        """While requests wait: expire them by TTL and release those flow control lets through."""
        while self._waiting:
            self.release()
            await asyncio.sleep(self.scrape_interval)

    def release(self) -> None:
        """Fail expired waiters and dispatch those ``pop_ready`` lets go (picked one at a time, so each
        dispatch counts in the next admission)."""
        flow = self.flow
        if flow is None or not self._waiting:
            return
        now = self.clock()
        for waiter in flow.expire(now):
            self._waiting.discard(waiter)
            if not waiter.future.done():
                waiter.future.set_exception(Expired(f"request waited in the queue of pool {self.name} "
                                                    "longer than its time to live"))
        while self._waiting:
            ready = self.ready()
            waiter = flow.pop_ready(ready, now)
            if waiter is None:
                break
            self._waiting.discard(waiter)
            if waiter.future.done():  # the client went away while it waited
                continue
            try:
                candidates = self._candidates(waiter.request, waiter.subset)
                waiter.future.set_result(self._pick(waiter.request, candidates))
            except PickError as e:
                waiter.future.set_exception(e)

    def pick_again(self, request: InferenceRequest, exclude: Iterable[Endpoint]) -> list[Endpoint]:
        """Endpoints to try after those in ``exclude`` failed to connect (no admission, nothing counted)."""
        skip = {id(e) for e in exclude}
        candidates = [e for e in self.candidates(request.model) if id(e) not in skip]
        if not candidates:
            return []
        try:
            return self.picker.pick(request, candidates, self.clock()).endpoints
        except Exception:  # noqa: BLE001 - a picker bug ends the retries, not the request's bookkeeping
            log.exception("pool %s: the endpoint picker failed on a retry", self.name)
            return []

    def retarget(self, request: InferenceRequest, old: Endpoint, new: Endpoint) -> None:
        """The request moved from ``old`` (nothing came back) to ``new``."""
        now = self.clock()
        self.picker.on_done(request, old, now, False)
        self.picker.on_sent(request, new, now)

    def first_token(self, request: InferenceRequest, endpoint: Endpoint) -> None:
        self.picker.on_first_token(request, endpoint, self.clock())

    def done(self, request: InferenceRequest, endpoint: Endpoint, ok: bool) -> None:
        self.picker.on_done(request, endpoint, self.clock(), ok)
        if self._waiting:
            self.release()

    def release_all(self, request: InferenceRequest) -> None:
        """Count ``request`` done (failed) at every endpoint it is still counted at."""
        sent = request.state.get("sent")
        if not sent:
            return
        by_name = {e.name: e for e in self.endpoints}
        for name in list(sent):
            e = by_name.get(name)
            if e is not None:
                self.done(request, e, False)
            else:
                sent.pop(name, None)

    def queued(self) -> int:
        """Requests waiting in the flow control queue."""
        return len(self._waiting)

    # --- scraping ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start one scraper per endpoint (call inside the running loop)."""
        self._started = True
        for e in self.endpoints:
            self._start_scraper(e)

    def _start_scraper(self, endpoint: Endpoint) -> None:
        task = self._tasks.get(endpoint.name)
        if task is None or task.done():
            self._tasks[endpoint.name] = asyncio.get_running_loop().create_task(
                self._scrape_loop(endpoint), name=f"scrape {endpoint.name}")

    async def close(self) -> None:
        self._started = False
        tasks = list(self._tasks.values())
        if self._ticker is not None:
            tasks.append(self._ticker)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        for waiter in list(self._waiting):
            if not waiter.future.done():
                waiter.future.set_exception(NoEndpoints(f"pool {self.name} is shutting down"))
        self._waiting.clear()

    async def scrape(self, endpoint: Endpoint) -> bool:
        """Read ``endpoint``'s /metrics once; True when it answered. A server without /metrics (404) is
        reachable but reports nothing."""
        try:
            resp = await self.client.request("GET", endpoint.address, "/metrics", timeout=self.scrape_timeout)
            body = await resp.read()
            if resp.status == 404:
                endpoint.metrics.updated_at = self.clock()
            elif resp.status != 200:
                raise ClientError(f"/metrics answered HTTP {resp.status}")
            else:
                endpoint.metrics = parse_metrics(body, self.clock())
        except (ClientError, MetricsFormatError, OSError, asyncio.TimeoutError) as e:
            if endpoint.healthy:
                self.mark_failed(endpoint, f"scrape failed: {e or type(e).__name__}")
            return False
        if not endpoint.healthy:
            endpoint.healthy = True
            log.warning("pool %s: endpoint %s (%s) is ready again", self.name, endpoint.name, endpoint.address)
            self._changed()
        if self._waiting:
            self.release()
        return True

    async def fetch_models(self, endpoint: Endpoint) -> bool:
        """Read ``endpoint``'s /v1/models; True when it answered with a model list."""
        try:
            resp = await self.client.request("GET", endpoint.address, "/v1/models", timeout=self.scrape_timeout)
            body = await resp.read()
            if resp.status != 200:
                return False
            cards = parse_models(body)
        except (ClientError, ValueError, OSError, asyncio.TimeoutError):
            return False
        if self.models.get(endpoint.name) != cards:
            self.models[endpoint.name] = cards
            self._models_changed()
        return True

    async def _scrape_loop(self, endpoint: Endpoint) -> None:
        next_models = 0.0
        interval = self.scrape_interval
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            try:
                ok = await self.scrape(endpoint)
                if ok and start >= next_models:
                    got = await self.fetch_models(endpoint)
                    next_models = start + (self.models_interval if got else MODELS_RETRY)
            except Exception:  # noqa: BLE001 - a bug must not stop scraping for good
                log.exception("pool %s: scraping %s failed", self.name, endpoint.address)
            await asyncio.sleep(max(0.0, start + interval - loop.time()))

    # --- gauges -----------------------------------------------------------------------------

    def gauges(self) -> dict[str, float]:
        """GIE's inference_pool_* values: ready endpoints, average queue, KV usage and running."""
        ready = self.ready()
        n = len(ready)
        return {
            "ready": n,
            "queue": sum(e.metrics.waiting for e in ready) / n if n else 0.0,
            "kv": sum(e.metrics.kv_usage for e in ready) / n if n else 0.0,
            "running": sum(e.metrics.running for e in ready) / n if n else 0.0,
        }
