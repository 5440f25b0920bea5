"""`mlplane gateway`: the OpenAI-compatible inference gateway in front of model servers or InferencePools."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path
from typing import Callable

DEFAULT_API_PORT = 6680


def add_parser(sub) -> argparse.ArgumentParser:
    gw = sub.add_parser(
        "gateway", help="run the inference gateway (OpenAI API) in front of model servers or InferencePools",
        description="Route OpenAI /v1/completions and /v1/chat/completions requests to model servers with an "
                    "endpoint picker that reads their queues, KV caches and prefix caches.")
    gw.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    gw.add_argument("--port", type=int, default=8080, help="listen port (default 8080; 0 = any)")
    gw.add_argument("--pool", action="append", default=[], metavar="NAMESPACE/NAME",
                    help="an InferencePool to follow in the API server (repeatable)")
    add_picker_flags(gw)
    gw.add_argument("--request-timeout", type=float, default=300.0, metavar="SECONDS",
                    help="how long to wait for a model server's response head, and for each piece of its "
                         "body (default 300)")
    gw.set_defaults(func=cmd_gateway)
    return gw


def add_picker_flags(p: argparse.ArgumentParser) -> None:
    """Where the pool's endpoints come from and how they are picked (shared with `mlplane epp`)."""
    p.add_argument("--backend", action="append", default=[], metavar="URL",
                   help="a model server, e.g. http://127.0.0.1:8000 (repeatable)")
    p.add_argument("--server", "-s", help=f"API server URL for --pool (default: $MLPLANE_SERVER or "
                                          f"http://127.0.0.1:{DEFAULT_API_PORT})")
    p.add_argument("--token", help="bearer token for the API server (default: $MLPLANE_TOKEN)")
    p.add_argument("--policy", default=None,
                   help="routing policy: round-robin, least-load, prefix-only or default (default: default)")
    p.add_argument("--config", metavar="FILE", help="an EndpointPickerConfig (llm-d.ai/v1alpha1) YAML file")
    p.add_argument("--flow-control", action="store_true",
                   help="queue requests by priority while the pool is saturated (llm-d flow control)")
    p.add_argument("--objective", action="append", default=[], metavar="NAME=PRIORITY",
                   help="an InferenceObjective's priority, named by header x-llm-d-inference-objective "
                        "(repeatable; negative = sheddable: 429 while the pool is saturated)")
    p.add_argument("--scrape-interval", type=float, default=0.05, metavar="SECONDS",
                   help="how often each model server's /metrics is read (default 0.05)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")


def picker_settings(args: argparse.Namespace) -> dict:
    """The settings add_picker_flags collected, as GatewayConfig/EppConfig fields; sets up logging.
    Raises ValueError naming the flag when they don't make sense."""
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else
                        logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.policy is not None and args.config:
        raise ValueError("--policy and --config cannot be combined (the config defines the policy)")
    config_text = None
    if args.config:
        try:
            config_text = Path(args.config).read_text()
        except OSError as e:
            raise ValueError(f"--config {args.config}: {e.strerror or e}") from None
    return dict(backends=args.backend, config_text=config_text, flow_control=args.flow_control,
                objectives=parse_objectives(args.objective),
                server=args.server or os.environ.get("MLPLANE_SERVER") or f"http://127.0.0.1:{DEFAULT_API_PORT}",
                token=args.token or os.environ.get("MLPLANE_TOKEN"), policy=args.policy or "default",
                scrape_interval=args.scrape_interval)


def cmd_gateway(args: argparse.Namespace) -> int:
    from mlplane.gateway.app import GatewayConfig, run_gateway

    return serve(run_gateway, lambda: GatewayConfig(host=args.host, port=args.port, pools=args.pool,
                                                    request_timeout=args.request_timeout, **picker_settings(args)),
                 busy=f"cannot listen on {args.host}:{args.port}: the address is already in use (pass --port)")


def serve(run: Callable, make_config: Callable, busy: str) -> int:
    """Run a traffic-plane server (gateway, EPP) until stopped, printing its ready line; a bad
    setting or a busy address is an error message and exit 1."""
    try:
        run(make_config(), on_ready=lambda line: print(line, flush=True))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"error: {busy}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 130
    return 0


def parse_objectives(values: list[str]) -> dict[str, int]:
    """``--objective NAME=PRIORITY`` values -> {name: priority}; ValueError naming the flag."""
    out: dict[str, int] = {}
    for v in values:
        name, sep, prio = v.partition("=")
        name, prio = name.strip(), prio.strip()
        if not sep or not name:
            raise ValueError(f"--objective {v!r}: expected NAME=PRIORITY (e.g. batch=-1)")
        try:
            out[name] = int(prio)
        except ValueError:
            raise ValueError(f"--objective {v!r}: the priority must be an integer") from None
    return out
