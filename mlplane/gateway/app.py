"""``mlplane gateway``: pools (static backends, or InferencePools followed in the store), the HTTP server
and the process lifetime (until SIGTERM or SIGINT)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mlplane.gateway.metrics import GatewayMetrics
from mlplane.gateway.pool import PoolRuntime
from mlplane.gateway.proxy import REQUEST_TIMEOUT, Gateway
from mlplane.net.http import Client, run, start_server
from mlplane.policy.traffic.types import Endpoint

log = logging.getLogger("mlplane.gateway")

STATIC_POOL = "default"  # the pool name of --backend endpoints


@dataclass
class GatewayConfig:
    """What ``mlplane gateway`` was asked to run."""

    host: str = "127.0.0.1"
    port: int = 8080
    backends: list[str] = field(default_factory=list)  # URLs or host:port of static model servers
    pools: list[str] = field(default_factory=list)  # NAMESPACE/NAME of InferencePools in the store
    server: str | None = None  # API server URL for --pool
    token: str | None = None
    policy: str = "default"
    config_text: str | None = None  # an EndpointPickerConfig document (overrides policy)
    flow_control: bool = False
    scrape_interval: float = 0.05
    request_timeout: float = REQUEST_TIMEOUT
    objectives: dict[str, int] = field(default_factory=dict)  # --objective NAME=PRIORITY, for every pool


def backend_address(url: str) -> str:
    """``http://host:port[/]`` or ``host:port`` -> ``host:port``; raises ValueError naming the URL."""
    addr = url.strip()
    if "://" in addr:
        scheme, _, addr = addr.partition("://")
        if scheme != "http":
            raise ValueError(f"--backend {url!r}: only http:// model servers are supported")
    addr = addr.split("/", 1)[0]
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--backend {url!r}: expected http://HOST:PORT")
    return addr


def static_endpoints(urls: list[str]) -> list[Endpoint]:
    endpoints = []
    seen = set()
    for url in urls:
        addr = backend_address(url)
        if addr in seen:
            raise ValueError(f"--backend {url!r} is given twice")
        seen.add(addr)
        endpoints.append(Endpoint(name=addr, address=addr, pool=STATIC_POOL))
    return endpoints


def make_policy(cfg: GatewayConfig):
    """(picker, flow controller or None, saturation detector) of one pool, fresh state: the picker from the
    EndpointPickerConfig or the named policy; flow control and the detector from the config's
    ``flowControl`` / ``saturationDetector`` sections. Flow control runs with ``--flow-control`` or the
    config's ``featureGates: [flowControl]``. Unset metrics staleness is at least four scrape intervals."""
    from mlplane.policy.traffic import config as pickercfg
    from mlplane.policy.traffic.flow import FlowConfig, FlowController

    if cfg.config_text is not None:
        epc = pickercfg.load_picker_config(cfg.config_text)
        picker = pickercfg.build_picker(epc)
        flow_cfg = pickercfg.flow_config(epc)
        explicit = any(s.type in ("utilization-detector", "utilization-filter")
                       and "metricsStalenessThreshold" in s.parameters for s in epc.plugins)
        gate = pickercfg.feature_gate(epc, "flowControl")
    else:
        try:
            picker = pickercfg.named_policy(cfg.policy)
        except KeyError as e:
            raise ValueError(f"--policy: {e.args[0]}") from None
        flow_cfg, explicit, gate = FlowConfig(), False, False
    if not explicit:
        flow_cfg.detector.staleness = max(flow_cfg.detector.staleness, 4 * cfg.scrape_interval)
    if cfg.flow_control or gate:
        return picker, FlowController(flow_cfg, pending=picker.pending), flow_cfg.detector
    flow_cfg.detector.pending = picker.pending
    return picker, None, flow_cfg.detector


def make_pool(name: str, cfg: GatewayConfig, client: Client, metrics: GatewayMetrics | None = None) -> PoolRuntime:
    """A PoolRuntime for one pool with the configured policy, flow control and scrape interval."""
    picker, flow, detector = make_policy(cfg)
    return PoolRuntime(name, picker, client, flow=flow, detector=detector, scrape_interval=cfg.scrape_interval,
                       objectives=cfg.objectives, metrics=metrics)


def validate(cfg: GatewayConfig) -> None:
    """Raise ValueError naming the flag when the configuration cannot run."""
    if bool(cfg.backends) == bool(cfg.pools):
        raise ValueError("give either --backend URL (repeatable) or --pool NAMESPACE/NAME (repeatable)")
    names: dict[str, str] = {}
    for p in cfg.pools:
        ns, _, name = p.partition("/")
        if not ns or not name or "/" in name:
            raise ValueError(f"--pool {p!r}: expected NAMESPACE/NAME")
        if name in names:
            raise ValueError(f"--pool {names[name]} and --pool {p} have the same name (pools are told apart by name)")
        names[name] = p
    if cfg.scrape_interval <= 0:
        raise ValueError(f"--scrape-interval must be positive, got {cfg.scrape_interval}")
    if cfg.request_timeout <= 0:
        raise ValueError(f"--request-timeout must be positive, got {cfg.request_timeout}")
    if cfg.backends:
        static_endpoints(cfg.backends)
    make_policy(cfg)  # a bad policy name or picker config fails here, before anything listens


async def serve(cfg: GatewayConfig, *, on_ready: Callable[[str], None] | None = None,
                stop: asyncio.Event | None = None, store=None) -> None:
    """Run the gateway until ``stop`` is set (or SIGTERM/SIGINT when no event is given); ``on_ready`` gets
    the "gateway listening on ..." line once the server accepts connections. ``--pool`` pools are read
    from ``store``, by default the API server at ``cfg.server``."""
    client = Client(max_idle_per_host=256)
    metrics = GatewayMetrics()
    pools: list[PoolRuntime] = []
    watchers = []
    loop = asyncio.get_running_loop()

    if cfg.backends:
        pool = make_pool(STATIC_POOL, cfg, client, metrics)
        pool.set_endpoints(static_endpoints(cfg.backends))
        pools.append(pool)
    else:
        from mlplane.control.store.http import HTTPStore
        from mlplane.gateway.discovery import PoolWatcher

        if store is None:
            store = HTTPStore(cfg.server, token=cfg.token)
        for ref in cfg.pools:
            ns, _, name = ref.partition("/")
            pool = make_pool(name, cfg, client, metrics)
            pools.append(pool)

            def on_change(endpoints, pool_obj, objectives, pool=pool, ref=ref):
                if pool_obj is None:
                    log.warning("InferencePool %s does not exist (yet): no endpoints", ref)
                loop.call_soon_threadsafe(apply_pool_update, pool, endpoints, objectives, pool_obj)

            watchers.append(PoolWatcher(store, ns, name, on_change).start())
        for ref, w in zip(cfg.pools, watchers):
            if not await asyncio.to_thread(w.wait_synced, 10.0):
                log.warning("could not read InferencePool %s from %s in 10s; starting without endpoints",
                            ref, cfg.server)

    gateway = Gateway(pools, client, metrics, request_timeout=cfg.request_timeout)
    for p in pools:
        await p.start()
    server = await start_server(gateway.handle, cfg.host, cfg.port)
    try:
        await ready_until_stopped(f"gateway listening on http://{cfg.host}:{server.port} "
                                  f"({pools_summary(pools, cfg)})", on_ready, stop)
    finally:
        await server.close()
        for w in watchers:
            await asyncio.to_thread(w.stop)
        for p in pools:
            await p.close()
        await client.aclose()


def pools_summary(pools: Iterable[PoolRuntime], cfg) -> str:
    """"pool NAME: N endpoints, ..., policy P" for the line a server prints when it is ready."""
    parts = [f"pool {p.name}: {len(p.endpoints)} endpoint{'s' if len(p.endpoints) != 1 else ''}" for p in pools]
    return ", ".join([*parts, f"policy {'config' if cfg.config_text is not None else cfg.policy}"])


async def ready_until_stopped(line: str, on_ready: Callable[[str], None] | None,
                              stop: asyncio.Event | None) -> None:
    """Hand ``line`` to ``on_ready``, then wait until ``stop`` is set (by default: SIGINT or SIGTERM)."""
    if on_ready is not None:
        on_ready(line)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def apply_pool_update(pool: PoolRuntime, endpoints: list[Endpoint], objectives: dict[str, int], pool_obj=None) -> None:
    """What a PoolWatcher reported, applied to the pool's runtime (on its event loop)."""
    pool.set_endpoints(endpoints)
    pool.set_objectives(objectives)
    ref = pool_obj.spec.endpoint_picker_ref if pool_obj is not None else None
    pool.fail_open = ref is not None and ref.failure_mode == "FailOpen"
    log.info("pool %s: %d endpoints", pool.name, len(endpoints))


def run_gateway(cfg: GatewayConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Validate, then serve until SIGTERM/SIGINT (uvloop)."""
    validate(cfg)
    run(serve(cfg, on_ready=on_ready))
