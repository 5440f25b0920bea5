"""What this machine offers as a Node: its name, CPU and memory capacity, labels and system info.

Capacity follows the kubelet's sources: the CPUs this process may run on (``sched_getaffinity``,
so a cpuset or ``taskset`` limit is honoured) and ``MemTotal`` from ``/proc/meminfo`` in ``Ki``.
Either can be overridden (``--cpu``, ``--memory``); a bad override is a ``ValueError`` that names
the flag. Allocatable equals capacity: nothing is reserved for system daemons on a local machine.
"""

from __future__ import annotations

import os
import platform
import re
import socket

from mlplane import __version__
from mlplane.api.core import NodeSystemInfo
from mlplane.api.quantity import parse_quantity

# Go's GOARCH names, which Kubernetes uses for the kubernetes.io/arch label
# (https://kubernetes.io/docs/reference/labels-annotations-taints/#kubernetes-io-arch).
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
           "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64", "loongarch64": "loong64"}

RUNTIME_VERSION = f"mlplane://{__version__}"


def architecture(machine: str | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    return _GOARCH.get(machine, machine)


def node_name_from_hostname(hostname: str) -> str:
    """The hostname made a valid DNS subdomain, as the Node name: lowercase, other characters as '-'."""
    labels = []
    for part in hostname.lower().split("."):
        part = re.sub(r"[^a-z0-9-]", "-", part).strip("-")[:63].strip("-")
        if part:
            labels.append(part)
    name = ".".join(labels)[:253].strip(".-")
    return name or "localhost"


def default_node_name() -> str:
    return node_name_from_hostname(socket.gethostname())


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def memory_kib(meminfo: str = "/proc/meminfo") -> int:
    with open(meminfo) as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])  # always reported in kB (KiB)
    raise RuntimeError(f"{meminfo} has no MemTotal line")


def _positive_quantity(flag: str, value: str) -> str:
    try:
        amount = parse_quantity(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"invalid {flag} {value!r}: {e}") from None
    if amount <= 0:
        raise ValueError(f"invalid {flag} {value!r}: must be greater than zero")
    return str(value).strip()


def capacity(cpu: str | None = None, memory: str | None = None, max_pods: int = 110) -> dict[str, str]:
    """The Node's capacity: the machine's own figures, or the validated overrides."""
    if isinstance(max_pods, bool) or not isinstance(max_pods, int) or max_pods < 1:
        raise ValueError(f"invalid --max-pods {max_pods!r}: must be a positive integer")
    return {
        "cpu": _positive_quantity("--cpu", cpu) if cpu is not None else str(cpu_count()),
        "memory": _positive_quantity("--memory", memory) if memory is not None else f"{memory_kib()}Ki",
        "pods": str(max_pods),
    }


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _os_image() -> str:
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return f"{platform.system()} {platform.release()}"


def node_info() -> NodeSystemInfo:
    return NodeSystemInfo(machine_id=(_read("/etc/machine-id") or "").strip() or None,
                          kernel_version=platform.release(), os_image=_os_image(), operating_system="linux",
                          architecture=architecture(), kubelet_version=f"mlplane/{__version__}",
                          container_runtime_version=RUNTIME_VERSION)


def labels(node_name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The well-known node labels, then the caller's (which may override them)."""
    # A label value is at most 63 characters; a longer node name is cut there (at a valid end).
    hostname = re.sub(r"[^a-z0-9]+$", "", node_name[:63])
    return {"kubernetes.io/hostname": hostname, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": architecture(), **(extra or {})}
