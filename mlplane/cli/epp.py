"""`mlplane epp`: the endpoint picker as an Envoy ext_proc service (Gateway API Inference Extension
endpoint-picker protocol), for a Gateway API implementation in front of a pool of model servers."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

DEFAULT_API_PORT = 6680
DEFAULT_GRPC_PORT = 9002  # the EPP's ext_proc port (llm-d-router pkg/epp/server/options.go)
BODY_MODES = ("full-duplex", "buffered")  # mlplane.gateway.extproc.BODY_MODES (not imported: grpc is slow to load)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "epp", help="run the endpoint picker as an Envoy ext_proc gRPC service (x-gateway-destination-endpoint)",
        description="Serve the Gateway API Inference Extension endpoint-picker protocol: Envoy's ext_proc filter "
                    "sends each request's headers and body, the picker answers with the chosen endpoint in the "
                    "x-gateway-destination-endpoint header and envoy.lb dynamic metadata (fallbacks after "
                    "commas), or with 400/429/503.")
    p.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    p.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                   help=f"ext_proc and gRPC health port (default {DEFAULT_GRPC_PORT}; 0 = any)")
    p.add_argument("--grpc-health-port", type=int, default=None, metavar="PORT",
                   help="also serve gRPC health alone on this port (upstream EPP uses 9003)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus /metrics over HTTP on this port (upstream EPP uses 9090)")
    p.add_argument("--backend", action="append", default=[], metavar="URL",
                   help="a model server of the pool, e.g. http://10.0.0.5:8000 (repeatable)")
    p.add_argument("--pool", metavar="NAMESPACE/NAME", help="the InferencePool to follow in the API server")
    p.add_argument("--server", "-s", help=f"API server URL for --pool (default: $MLPLANE_SERVER or "
                                          f"http://127.0.0.1:{DEFAULT_API_PORT})")
    p.add_argument("--token", help="bearer token for the API server (default: $MLPLANE_TOKEN)")
    p.add_argument("--policy", default=None,
                   help="routing policy: round-robin, least-load, prefix-only or default (default: default)")
    p.add_argument("--config", metavar="FILE", help="an EndpointPickerConfig (llm-d.ai/v1alpha1) YAML file")
    p.add_argument("--flow-control", action="store_true",
                   help="queue requests by priority while the pool is saturated (llm-d flow control)")
    p.add_argument("--scrape-interval", type=float, default=0.05, metavar="SECONDS",
                   help="how often each model server's /metrics is read (default 0.05)")
    p.add_argument("--body-mode", choices=BODY_MODES, default="full-duplex",
                   help="Envoy's request_body_mode when the proxy does not announce it (default full-duplex, "
                        "i.e. FULL_DUPLEX_STREAMED, the mode GIE requires)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    p.set_defaults(func=cmd_epp)
    return p


def cmd_epp(args: argparse.Namespace) -> int:
    from mlplane.gateway.extproc import EppConfig, run_epp

    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else
                        logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.policy is not None and args.config:
        print("error: --policy and --config cannot be combined (the config defines the policy)", file=sys.stderr)
        return 1
    config_text = None
    if args.config:
        try:
            config_text = Path(args.config).read_text()
        except OSError as e:
            print(f"error: --config {args.config}: {e.strerror or e}", file=sys.stderr)
            return 1
    cfg = EppConfig(
        host=args.host, grpc_port=args.grpc_port, health_port=args.grpc_health_port,
        metrics_port=args.metrics_port, backends=args.backend, pool=args.pool,
        server=args.server or os.environ.get("MLPLANE_SERVER") or f"http://127.0.0.1:{DEFAULT_API_PORT}",
        token=args.token or os.environ.get("MLPLANE_TOKEN"), policy=args.policy or "default",
        config_text=config_text, flow_control=args.flow_control, scrape_interval=args.scrape_interval,
        body_mode=args.body_mode)
    try:
        run_epp(cfg, on_ready=lambda line: print(line, flush=True))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"error: {e.strerror or e}: the address is already in use (pass --grpc-port, "
                  "--grpc-health-port or --metrics-port)", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 130
    return 0
