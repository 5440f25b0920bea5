"""The `mlplane` command: kubectl-like verbs against the API server, plus `up` and `demo`."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from mlplane import __version__
from mlplane.api import REGISTRY
from mlplane.api.errors import ApiError, Gone, NotFound
from mlplane.api.loader import ManifestError, load_paths
import mlplane.policy.device  # noqa: F401  (CEL selectors are compiled when manifests load)
from mlplane.api.meta import Object, find_condition
from mlplane.api.registry import Kind
from mlplane.cli import printers
from mlplane.cli.describe import describe
from mlplane.control.store.base import Store

DEFAULT_PORT = 6680


class UsageError(Exception):
    """A mistake in the command line: printed as `error: ...`, exit 1."""


# --- connecting ----------------------------------------------------------------------------

def server_url(args: argparse.Namespace) -> str:
    return args.server or os.environ.get("MLPLANE_SERVER") or f"http://127.0.0.1:{DEFAULT_PORT}"


def connect(args: argparse.Namespace) -> Store:
    from mlplane.control.store.http import HTTPStore

    return HTTPStore(server_url(args), token=args.token or os.environ.get("MLPLANE_TOKEN"))


def _namespace(args: argparse.Namespace) -> str:
    return args.namespace or "default"


def _targets(words: list[str]) -> list[tuple[Kind, str | None]]:
    """`pods`, `pod x y`, `job/train`, `pods,jobs` -> [(kind, name or None)]."""
    if not words:
        raise UsageError("you must specify the type of resource to get, e.g. `mlplane get pods`")
    out: list[tuple[Kind, str | None]] = []
    if "/" in words[0]:
        for w in words:
            if "/" not in w:
                raise UsageError(f"there is no need to specify a resource type as a separate argument when "
                                 f"passing arguments in resource/name form (e.g. 'mlplane get resource/<name>' "
                                 f"instead of 'mlplane get resource resource/<name>'): {w}")
            type_, _, name = w.partition("/")
            out.append((_kind(type_), name))
        return out
    kinds = [_kind(t) for t in words[0].split(",") if t]
    names = words[1:]
    if names and len(kinds) > 1:
        raise UsageError("names cannot be given with several resource types; use TYPE/NAME instead")
    for kind in kinds:
        out.extend([(kind, n) for n in names] or [(kind, None)])
    return out


def _load(paths: list[str]):
    """Every document of the files, or None after printing each problem (file, document, field)."""
    try:
        return load_paths(paths)
    except ManifestError as e:
        for line in e.errors:
            print(f"error: {line}", file=sys.stderr)
        return None


def _kind(name: str) -> Kind:
    try:
        return REGISTRY.by_name(name)
    except ApiError as e:
        raise UsageError(e.message) from None


# --- verbs ---------------------------------------------------------------------------------

def cmd_get(args: argparse.Namespace) -> int:
    store = connect(args)
    ns = None if args.all_namespaces else _namespace(args)
    found: list[tuple[Kind, list[Object]]] = []
    missing = 0
    for kind, name in _targets(args.resource):
        scope = ns if kind.namespaced else None
        if name:
            try:
                found.append((kind, [store.get(kind.model, scope, name)]))
            except NotFound as e:
                print(f"Error from server (NotFound): {e.message}", file=sys.stderr)
                missing += 1
        else:
            items = store.list(kind.model, scope, args.selector, args.field_selector).items
            found.append((kind, items))
    objs = [o for _, items in found for o in items]
    single = len(objs) == 1 and all(n for _, n in _targets(args.resource))
    if args.output in ("yaml", "json"):
        if objs:
            print(printers.dump(objs, args.output, single=single))
    elif args.output == "name":
        for kind, items in found:
            for o in items:
                print(printers.name_output(kind, o))
    else:
        printed = False
        for kind, items in found:
            if not items:
                continue
            if printed:
                print()
            print(printers.print_table(kind, items, wide=args.output == "wide",
                                       namespaces=bool(args.all_namespaces) and kind.namespaced))
            printed = True
        if not printed and not missing:
            where = "" if args.all_namespaces or not any(k.namespaced for k, _ in found) else f" in {ns} namespace"
            print(f"No resources found{where}.", file=sys.stderr)
    return 1 if missing else 0


def cmd_describe(args: argparse.Namespace) -> int:
    store = connect(args)
    ns = _namespace(args)
    blocks = []
    for kind, name in _targets(args.resource):
        scope = ns if kind.namespaced else None
        objs = [store.get(kind.model, scope, name)] if name else \
            store.list(kind.model, scope, args.selector).items
        blocks.extend(describe(store, kind, o) for o in objs)
    if not blocks:
        print(f"No resources found in {ns} namespace.", file=sys.stderr)
        return 1
    print("\n\n".join(blocks))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    docs = _load(args.filename)
    if docs is None:
        print("error: nothing was applied", file=sys.stderr)
        return 1
    objs = []
    for doc in docs:
        kind = REGISTRY.of(doc.obj)
        obj = doc.obj
        if kind.namespaced:
            if args.namespace and obj.metadata.namespace and obj.metadata.namespace != args.namespace:
                raise UsageError(f'{doc.source}: document {doc.index}: the namespace from the provided object '
                                 f'"{obj.metadata.namespace}" does not match the namespace "{args.namespace}". '
                                 f"You must pass '--namespace={obj.metadata.namespace}' to perform this operation.")
            obj.metadata.namespace = obj.metadata.namespace or _namespace(args)
        if not obj.metadata.name:
            raise UsageError(f"{doc.source}: document {doc.index}: apply needs metadata.name "
                             "(use `mlplane create` semantics via generateName only with create)")
        objs.append((kind, obj))
    store = connect(args)
    failed = 0
    for kind, obj in objs:
        ident = f"{kind.singular}/{obj.name}"
        applied = _applied_config(obj)
        try:
            try:
                current = store.get(kind.model, obj.metadata.namespace, obj.name)
            except NotFound:
                obj.metadata.annotations = {**(obj.metadata.annotations or {}), LAST_APPLIED: applied}
                store.create(obj)
                print(f"{ident} created")
                continue
            last = json.loads((current.metadata.annotations or {}).get(LAST_APPLIED, "{}"))
            patch = three_way_patch(last, json.loads(applied))
            patch.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = applied
            patch["metadata"]["resourceVersion"] = current.metadata.resource_version
            updated = store.patch(kind.model, obj.metadata.namespace, obj.name, patch)
            same = updated.metadata.resource_version == current.metadata.resource_version
            print(f"{ident} {'unchanged' if same else 'configured'}")
        except ApiError as e:
            print(f"Error from server ({e.reason}): error when applying {ident}: {e.message}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _applied_config(obj: Object) -> str:
    """What the user wrote (no status, no earlier last-applied), as kubectl records it."""
    data = obj.to_dict()
    data.pop("status", None)
    annotations = data.get("metadata", {}).get("annotations") or {}
    annotations.pop(LAST_APPLIED, None)
    if not annotations:
        data.get("metadata", {}).pop("annotations", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def three_way_patch(last: dict, new: dict) -> dict:
    """The merge patch `apply` sends: set what the user sets now, remove what they applied before
    and have dropped since, and leave alone what others (controllers, the scheduler) own."""
    patch: dict = {}
    for key, value in new.items():
        before = last.get(key) if isinstance(last, dict) else None
        if isinstance(value, dict) and isinstance(before, dict):
            sub = three_way_patch(before, value)
            if sub:
                patch[key] = sub
        else:
            patch[key] = value
    for key in (last or {}):
        if key not in new:
            patch[key] = None
    return patch


def cmd_delete(args: argparse.Namespace) -> int:
    store = connect(args)
    ns = _namespace(args)
    targets: list[tuple[Kind, str | None, str | None]] = []
    if args.filename:
        try:
            docs = load_paths(args.filename)
        except ManifestError as e:
            raise UsageError("\n".join(e.errors)) from None
        for d in docs:
            kind = REGISTRY.of(d.obj)
            targets.append((kind, d.obj.metadata.namespace or ns if kind.namespaced else None, d.obj.name))
    else:
        if not args.resource:
            raise UsageError("you must provide one or more resources by argument or filename")
        for kind, name in _targets(args.resource):
            scope = ns if kind.namespaced else None
            if name:
                targets.append((kind, scope, name))
            elif args.all or args.selector:
                targets.extend((kind, scope, o.name) for o in store.list(kind.model, scope, args.selector).items)
            else:
                raise UsageError("resource(s) were provided, but no name was specified; use --all or -l")
    grace = 0 if args.force else args.grace_period if args.grace_period >= 0 else None
    failed = 0
    for kind, scope, name in targets:
        try:
            store.delete(kind.model, scope, name, propagation=args.cascade_policy, grace_period_seconds=grace)
            print(f'{kind.singular} "{name}" {"force deleted" if args.force else "deleted"}')
        except NotFound as e:
            if not args.ignore_not_found:
                print(f"Error from server (NotFound): {e.message}", file=sys.stderr)
                failed += 1
        except ApiError as e:
            print(f"Error from server ({e.reason}): {e.message}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?|(\d+(?:\.\d+)?)", text)
    if not text or not m:
        raise UsageError(f'invalid duration "{text}": use e.g. 30s, 2m, 1h30m')
    h, mi, s, bare = m.groups()
    if bare:
        return float(bare)
    return float(h or 0) * 3600 + float(mi or 0) * 60 + float(s or 0)


def cmd_wait(args: argparse.Namespace) -> int:
    cond = args.for_
    if cond == "delete":
        want_type, want_status = None, None
    elif cond.startswith("condition="):
        want_type, _, value = cond[len("condition="):].partition("=")
        want_status = (value or "true").lower()
        if not want_type or want_status not in ("true", "false", "unknown"):
            raise UsageError(f"unrecognized condition: {cond!r}; use condition=NAME[=true|false]")
    else:
        raise UsageError(f"unrecognized condition: {cond!r}; supported: --for=condition=NAME[=VALUE], --for=delete")
    timeout = parse_duration(args.timeout)
    store = connect(args)
    targets = _targets(args.resource)
    deadline = time.monotonic() + timeout
    for kind, name in targets:
        if not name:
            raise UsageError("wait needs TYPE/NAME or TYPE NAME")
        scope = _namespace(args) if kind.namespaced else None
        ident = f"{kind.singular}/{name}"
        while True:
            try:
                obj = store.get(kind.model, scope, name)
            except NotFound:
                if want_type is None:
                    print(f"{ident} condition met")
                    break
                raise
            if want_type is not None:
                conds = getattr(getattr(obj, "status", None), "conditions", None)
                c = find_condition(conds, want_type)
                if c is not None and c.status.lower() == want_status:
                    print(f"{ident} condition met")
                    break
                failed = find_condition(conds, "Failed")
                if kind.kind == "Job" and want_type == "Complete" and failed is not None and failed.status == "True":
                    print(f"error: {ident} failed ({failed.reason}: {failed.message}); it will never be Complete",
                          file=sys.stderr)
                    return 1
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"error: timed out waiting for the condition on {kind.plural}/{name}", file=sys.stderr)
                return 1
            try:
                w = store.watch(kind.model, scope, obj.metadata.resource_version,
                                field_selector=f"metadata.name={name}")
            except Gone:  # the object is older than the watch history: any change will do
                w = store.watch(kind.model, scope, None, field_selector=f"metadata.name={name}")
                w.next(timeout=1.0)  # the synthetic ADDED of the current state
            try:
                w.next(timeout=min(left, 5.0))
            except Gone:
                pass
            finally:
                w.stop()
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    store = connect(args)
    ns = _namespace(args)
    target = args.pod
    if "/" in target:
        type_, _, name = target.partition("/")
        kind = _kind(type_)
        if kind.kind == "Job":
            from mlplane.api.core import Pod
            pods = store.list(Pod, ns, f"batch.kubernetes.io/job-name={name}").items
            if not pods:
                raise UsageError(f"no pods found for job/{name} in namespace {ns}")
            if len(pods) > 1:
                print(f"Found {len(pods)} pods, using pod/{pods[0].name}", file=sys.stderr)
            target = pods[0].name
        elif kind.kind == "Pod":
            target = name
        else:
            raise UsageError(f"cannot get logs from {kind.plural}; use a pod or a job")
    out = sys.stdout.buffer
    for chunk in store.logs(ns, target, container=args.container, follow=args.follow, previous=args.previous,
                            tail_lines=args.tail if args.tail is not None and args.tail >= 0 else None):
        out.write(chunk)
        out.flush()
    return 0


def load_kueue_config(path: str):
    """The one Configuration (config.kueue.x-k8s.io/v1beta1) document of ``path``; UsageError otherwise."""
    from mlplane.api.kueue import Configuration

    try:
        docs = load_paths([path])
    except ManifestError as e:
        raise UsageError("--kueue-config: " + "\n".join(e.errors)) from None
    kinds = [f"{type(d.obj).KIND} (document {d.index})" for d in docs if not isinstance(d.obj, Configuration)]
    if kinds or len(docs) != 1:
        found = ", ".join(kinds) if kinds else f"{len(docs)} Configuration documents"
        raise UsageError(f"--kueue-config {path}: expected exactly one Configuration "
                         f"(apiVersion: config.kueue.x-k8s.io/v1beta1) document, found {found}")
    return docs[0].obj


def cmd_up(args: argparse.Namespace) -> int:
    from mlplane.control.plane import ControlPlane, DataDirInUse, PlaneConfig

    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else
                        logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    labels = {}
    for item in args.node_label or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise UsageError(f"--node-label {item!r}: expected KEY=VALUE")
        labels[k] = v
    kueue_config = load_kueue_config(args.kueue_config) if args.kueue_config else None
    config = PlaneConfig(data_dir=Path(args.data_dir), host=args.address, port=args.port,
                         token=args.token or os.environ.get("MLPLANE_TOKEN"), run_node=not args.no_node,
                         node_name=args.node_name, cpu=args.cpu, memory=args.memory, node_labels=labels,
                         job_backoff=args.job_backoff, crash_backoff=args.crash_backoff,
                         kueue_config=kueue_config,
                         node_config=Path(args.node_config) if args.node_config else None)
    plane = ControlPlane(config)
    try:
        plane.start()
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"cannot listen on {args.address}:{args.port}: the address is already in use "
                             "(is another `mlplane up` running? pass --port)") from None
        raise UsageError(str(e)) from None
    except (DataDirInUse, ValueError) as e:
        raise UsageError(str(e)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = ""
    if plane.agent is not None:
        n = plane.agent.node_name
        node = f"\n  node:        {n}"
    print(f"mlplane {__version__} control plane is up\n  API server:  {plane.url}\n  data dir:    "
          f"{plane.data_dir}{node}\nexport MLPLANE_SERVER={plane.url}   # for mlplane in other shells\n"
          "Press Ctrl-C to stop.", flush=True)
    stop.wait()
    print("stopping ...", flush=True)
    plane.stop()
    print("stopped (running containers are left running and adopted on the next start)", flush=True)
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"Client Version: mlplane {__version__}")
    try:
        from mlplane.control.store.http import HTTPStore

        info = HTTPStore(server_url(args), token=args.token or os.environ.get("MLPLANE_TOKEN")).version()
        print(f"Server Version: {info.get('gitVersion', '?')}")
    except (ConnectionError, TimeoutError, ApiError) as e:
        print(f"error: {getattr(e, 'message', e)}", file=sys.stderr)
        return 1
    return 0


def cmd_queue_schedule(args: argparse.Namespace) -> int:
    """Run Kueue scheduling cycles over a file of objects: the workload plane's decision, offline.

    Exit 0 with the JSON result; 2 when the input is invalid (the field is named on stderr).
    """
    from mlplane.policy.workload.kueue.quota import QuotaError
    from mlplane.policy.workload.kueue.snapshot import SnapshotError, schedule

    if args.cycles < 1:
        print(f"error: --cycles must be at least 1, got {args.cycles}", file=sys.stderr)
        return 2
    docs = _load(args.filename)
    if docs is None:
        return 2
    try:
        result = schedule([d.obj for d in docs], time.time(), cycles=args.cycles)
    except (SnapshotError, QuotaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    return 0


def cmd_dra_allocate(args: argparse.Namespace) -> int:
    """Allocate the file's unallocated ResourceClaims together for one node, as the scheduler would.

    Prints {"node", "feasible", "error", "claims"}; exit 0 when it ran (feasible or not), 1 for an
    allocation error (feasible false, error set), 2 for invalid input (the field named on stderr).
    """
    from mlplane.api.core import Node
    from mlplane.api.resource import DeviceClass, ResourceClaim, ResourceSlice
    from mlplane.policy.device.allocator import AllocationError, Allocator, allocated_state

    docs = _load(args.filename)
    if docs is None:
        return 2
    objs = [d.obj for d in docs]
    unsupported = sorted({o.kind for o in objs if not isinstance(o, (DeviceClass, ResourceSlice, ResourceClaim, Node))})
    if unsupported:
        print(f"error: dra allocate reads DeviceClass, ResourceSlice, ResourceClaim and Node objects, not "
              f"{', '.join(unsupported)}", file=sys.stderr)
        return 2
    nodes = [o for o in objs if isinstance(o, Node) and o.name == args.node]
    if not nodes:
        print(f"error: --node {args.node}: no Node with that name in the input", file=sys.stderr)
        return 2
    claims = [o for o in objs if isinstance(o, ResourceClaim)]
    in_use = [c for c in claims if c.status and c.status.allocation is not None]
    pending = [c for c in claims if not (c.status and c.status.allocation is not None)]
    try:
        allocator = Allocator([o for o in objs if isinstance(o, DeviceClass)],
                              [o for o in objs if isinstance(o, ResourceSlice)], allocated_state(in_use))
    except ValueError as e:  # inconsistent input the models alone cannot catch
        print(f"error: {e}", file=sys.stderr)
        return 2
    out: dict = {"node": args.node, "feasible": False, "error": None, "claims": []}
    code = 0
    try:
        results = allocator.allocate(nodes[0], pending)
    except AllocationError as e:
        out["error"], code = str(e), 1
    else:
        if results is not None:
            out["feasible"] = True
            for claim, result in zip(pending, results):
                claim.status.allocation = result
                out["claims"].append(claim.to_dict())
    print(json.dumps(out, indent=2))
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    from mlplane.cli.demo import run_demo

    return run_demo(args.directory, node_config=args.node_config, timeout=parse_duration(args.timeout))


# --- the parser ----------------------------------------------------------------------------

def debug_verb(subparsers, name: str, func, help_: str) -> argparse.ArgumentParser:
    """A verb that runs one policy decision offline on a file (-f) and prints JSON (-o json)."""
    sp = subparsers.add_parser(name, help=help_)
    sp.add_argument("-f", "--filename", action="append", required=True, help="FILE, DIR or - (repeatable)")
    sp.add_argument("-o", "--output", choices=["json"], default="json", help="output format (json)")
    sp.set_defaults(func=func)
    return sp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlplane", description="mlplane: a control plane for ML compute, "
                                "Kubernetes-compatible: Pods and Jobs, Kueue queues, DRA devices, inference routing.")
    p.add_argument("--version", action="version", version=f"mlplane {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="COMMAND")

    def client(sp: argparse.ArgumentParser, namespaced: bool = True) -> None:
        sp.add_argument("--server", "-s", help=f"API server URL (default: $MLPLANE_SERVER or "
                                                f"http://127.0.0.1:{DEFAULT_PORT})")
        sp.add_argument("--token", help="bearer token (default: $MLPLANE_TOKEN)")
        if namespaced:
            sp.add_argument("-n", "--namespace", help="namespace (default: default)")

    up = sub.add_parser("up", help="run the embedded control plane (API server, scheduler, controllers, node)")
    up.add_argument("--data-dir", default=os.environ.get("MLPLANE_DATA_DIR", ".mlplane"),
                    help="where objects (SQLite) and logs live (default: ./.mlplane or $MLPLANE_DATA_DIR)")
    up.add_argument("--address", default="127.0.0.1", help="listen address (non-loopback requires --token)")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"listen port (default {DEFAULT_PORT}; 0 = any)")
    up.add_argument("--token", help="require this bearer token on every request (default: $MLPLANE_TOKEN)")
    up.add_argument("--no-node", action="store_true", help="do not run the local node agent")
    up.add_argument("--node-name", help="name of the local Node (default: the hostname)")
    up.add_argument("--cpu", help="allocatable CPU of the local node, e.g. 4 or 3500m (default: all cores)")
    up.add_argument("--memory", help="allocatable memory of the local node, e.g. 8Gi (default: all memory)")
    up.add_argument("--node-label", action="append", metavar="KEY=VALUE", help="extra label on the local Node")
    up.add_argument("--job-backoff", type=float, default=10.0, metavar="SECONDS",
                    help="base delay before a failed Job pod is replaced (upstream: 10s)")
    up.add_argument("--crash-backoff", type=float, default=10.0, metavar="SECONDS",
                    help="base CrashLoopBackOff delay for in-place container restarts (upstream: 10s)")
    up.add_argument("--kueue-config", metavar="FILE", help="Kueue Configuration (config.kueue.x-k8s.io/v1beta1) "
                    "for the workload plane: fairSharing, waitForPodsReady")
    up.add_argument("--node-config", metavar="FILE", help="devices of the local node, published as ResourceSlices "
                    "(YAML; see examples/dra/node.yaml; default: NVIDIA GPUs found through NVML)")
    up.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    up.set_defaults(func=cmd_up)

    ap = sub.add_parser("apply", help="create or update objects from YAML files, folders or stdin (-)")
    client(ap)
    ap.add_argument("-f", "--filename", action="append", required=True, help="FILE, DIR or - (repeatable)")
    ap.set_defaults(func=cmd_apply)

    gp = sub.add_parser("get", help="list objects: get KIND [NAME...] or KIND/NAME")
    client(gp)
    gp.add_argument("resource", nargs="+", metavar="KIND [NAME...]")
    gp.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    gp.add_argument("-l", "--selector", help="label selector, e.g. app=train,tier!=dev")
    gp.add_argument("--field-selector", help="field selector, e.g. status.phase=Running")
    gp.add_argument("-o", "--output", choices=["wide", "yaml", "json", "name"], help="output format")
    gp.set_defaults(func=cmd_get)

    dp = sub.add_parser("describe", help="show an object with its conditions and events")
    client(dp)
    dp.add_argument("resource", nargs="+", metavar="KIND [NAME...]")
    dp.add_argument("-l", "--selector")
    dp.set_defaults(func=cmd_describe)

    lp = sub.add_parser("logs", help="print a container's logs: logs POD [-c C] [-f], or logs job/NAME")
    client(lp)
    lp.add_argument("pod", metavar="POD|job/NAME")
    lp.add_argument("-c", "--container")
    lp.add_argument("-f", "--follow", action="store_true", help="stream until the pod ends")
    lp.add_argument("-p", "--previous", action="store_true", help="the previous run of a restarted container")
    lp.add_argument("--tail", type=int, help="only the last N lines")
    lp.set_defaults(func=cmd_logs)

    xp = sub.add_parser("delete", help="delete objects by KIND NAME, KIND/NAME, -f FILE, -l or --all")
    client(xp)
    xp.add_argument("resource", nargs="*", metavar="KIND [NAME...]")
    xp.add_argument("-f", "--filename", action="append")
    xp.add_argument("-l", "--selector")
    xp.add_argument("--all", action="store_true")
    xp.add_argument("--ignore-not-found", action="store_true")
    xp.add_argument("--grace-period", type=int, default=-1, metavar="SECONDS",
                    help="seconds a running pod gets to stop (default: its terminationGracePeriodSeconds)")
    xp.add_argument("--force", action="store_true", help="remove pods at once, without waiting for them to stop")
    xp.add_argument("--cascade", dest="cascade_policy", default="background", type=lambda v: {
        "background": "Background", "foreground": "Foreground", "orphan": "Orphan"}.get(v, v),
        help="background (default), foreground or orphan")
    xp.set_defaults(func=cmd_delete)

    wp = sub.add_parser("wait", help="wait for a condition: wait --for=condition=Complete job/NAME --timeout=60s")
    client(wp)
    wp.add_argument("resource", nargs="+", metavar="KIND/NAME")
    wp.add_argument("--for", dest="for_", required=True, help="condition=NAME[=VALUE] or delete")
    wp.add_argument("--timeout", default="30s", help="give up after this long (default 30s)")
    wp.set_defaults(func=cmd_wait)

    vp = sub.add_parser("version", help="print client and server versions")
    client(vp, namespaced=False)
    vp.set_defaults(func=cmd_version)

    qp = sub.add_parser("queue", help="debug the workload plane's decisions on a file")
    qsub = qp.add_subparsers(dest="queue_verb", metavar="VERB", required=True)
    qs = debug_verb(qsub, "schedule", cmd_queue_schedule, "run Kueue scheduling cycles over ResourceFlavors, "
                    "ClusterQueues, LocalQueues, Cohorts and Workloads from a file; print the decisions")
    qs.add_argument("--cycles", type=int, default=1, help="scheduling cycles to run (default 1)")

    dra = sub.add_parser("dra", help="debug the device plane's decisions on a file")
    dsub = dra.add_subparsers(dest="dra_verb", metavar="VERB", required=True)
    da = debug_verb(dsub, "allocate", cmd_dra_allocate, "allocate a file's ResourceClaims for one node from its "
                    "DeviceClasses and ResourceSlices; print the allocations")
    da.add_argument("--node", required=True, help="the Node (in the file) to allocate for")

    demo = sub.add_parser("demo", help="start a throwaway control plane, run the examples, summarise, shut down")
    demo.add_argument("directory", nargs="*", default=["examples"], help="manifest folders or files (default: examples)")
    demo.add_argument("--node-config", help="devices for the local node (see examples-dra/node.yaml)")
    demo.add_argument("--timeout", default="300s")
    demo.set_defaults(func=cmd_demo)

    # The traffic plane's verbs and the benchmarks live in their own modules.
    from mlplane.cli import bench, epp, gateway, serve_sim
    for verb in (gateway, epp, serve_sim, bench):
        verb.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return args.func(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ApiError as e:
        print(f"Error from server ({e.reason}): {e.message}", file=sys.stderr)
        return 1
    except (ConnectionError, TimeoutError) as e:
        print(f"error: {e or 'the API server did not answer in time'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
