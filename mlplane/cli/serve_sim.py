"""`mlplane serve-sim`: run simulated vLLM servers (OpenAI API + vLLM metrics) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from mlplane.modelserver.config import DEFAULT_MODEL, ConfigError, EngineConfig, load_config


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve-sim", help="run simulated vLLM model servers (OpenAI API, vLLM metrics)",
                       description="Simulated vLLM servers: continuous batching, chunked prefill, a KV block pool "
                                   "with prefix caching and LoRA slots, in real time scaled by --time-scale. "
                                   "Defaults model an 8B model on one H100.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port of the first server (default 8000; 0: from the OS)")
    p.add_argument("--servers", type=int, default=1, help="servers in this process, on consecutive ports (default 1)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"served model name (default {DEFAULT_MODEL})")
    p.add_argument("--lora", action="append", default=[], metavar="NAME",
                   help="a LoRA adapter to serve (repeatable; NAME or NAME=PATH as with vLLM's --lora-modules)")
    p.add_argument("--max-loras", type=int, help="adapters in one batch (default from the config, 1)")
    p.add_argument("--config", help="YAML file of engine constants (see mlplane/modelserver/config.py)")
    p.add_argument("--seed", type=int, default=0, help="seed of output lengths and text (default 0)")
    p.add_argument("--time-scale", type=float,
                   help="real seconds per simulated second (0.1 runs ten times faster than an H100)")
    p.set_defaults(func=cmd_serve_sim)
    return p


def build_config(args: argparse.Namespace) -> EngineConfig:
    """The engine config from --config with --max-loras and --time-scale applied; ConfigError if bad."""
    cfg = load_config(args.config) if args.config else EngineConfig()
    changes = {}
    if args.max_loras is not None:
        changes["max_loras"] = args.max_loras
    if args.time_scale is not None:
        changes["time_scale"] = args.time_scale
    if changes:
        try:
            cfg = cfg.replace(**changes)
        except ConfigError as e:
            flag = "--max-loras" if "max_loras" in str(e) else "--time-scale"
            raise ConfigError(f"{flag}: {str(e).split(': ', 1)[1]}") from None
    return cfg


def cmd_serve_sim(args: argparse.Namespace) -> int:
    try:
        cfg = build_config(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.servers < 1:
        print(f"error: --servers must be at least 1, got {args.servers}", file=sys.stderr)
        return 1
    if not 0 <= args.port <= 65535 or (args.port and args.port + args.servers - 1 > 65535):
        print(f"error: --port {args.port} with --servers {args.servers} is out of range", file=sys.stderr)
        return 1
    loras = [name.split("=", 1)[0] for name in args.lora]
    if any(not n for n in loras):
        print("error: --lora needs a name", file=sys.stderr)
        return 1
    from mlplane.net.http import run

    return run(_main(cfg, args, loras))


async def _main(cfg: EngineConfig, args: argparse.Namespace, loras: list[str]) -> int:
    from mlplane.modelserver.server import serve

    try:
        servers = await serve(cfg, servers=args.servers, host=args.host, port=args.port, model=args.model,
                              loras=loras, seed=args.seed)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for s in servers:
        print(f"serving {args.model} on {s.url}", flush=True)
    await stop.wait()
    for s in servers:
        await s.close()
    return 0


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="mlplane")
    add_parser(_p.add_subparsers())
    _args = _p.parse_args(["serve-sim", *sys.argv[1:]])
    sys.exit(_args.func(_args))
