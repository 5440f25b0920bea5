"""`mlplane epp`: the endpoint picker as an Envoy ext_proc service (Gateway API Inference Extension
endpoint-picker protocol), for a Gateway API implementation in front of a pool of model servers."""

from __future__ import annotations

import argparse

from mlplane.cli.gateway import add_picker_flags, picker_settings, serve

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
    p.add_argument("--pool", metavar="NAMESPACE/NAME", help="the InferencePool to follow in the API server")
    add_picker_flags(p)
    p.add_argument("--body-mode", choices=BODY_MODES, default="full-duplex",
                   help="Envoy's request_body_mode when the proxy does not announce it (default full-duplex, "
                        "i.e. FULL_DUPLEX_STREAMED, the mode GIE requires)")
    p.set_defaults(func=cmd_epp)
    return p


def cmd_epp(args: argparse.Namespace) -> int:
    from mlplane.gateway.extproc import EppConfig, run_epp

    return serve(run_epp, lambda: EppConfig(host=args.host, grpc_port=args.grpc_port,
                                            health_port=args.grpc_health_port, metrics_port=args.metrics_port,
                                            pool=args.pool, body_mode=args.body_mode, **picker_settings(args)),
                 busy="the address is already in use (pass --grpc-port, --grpc-health-port or --metrics-port)")
