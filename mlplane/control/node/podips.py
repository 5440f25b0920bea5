"""Pod IPs in local mode: each pod gets its own loopback address in 127.0.0.0/8.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a process can bind 127.a.b.c with no
setup, and many replicas of one server can all listen on the same port (an InferencePool's
targetPort) at their own pod IPs. Addresses come from 127.1.0.1 .. 127.254.255.254: 127.0.x.x is
left to the host (127.0.0.1 is where the plane itself listens), and .0/.255 final octets are skipped.

A pod's first candidate is derived from its uid, so two planes on one machine (tests, a second
`mlplane up`) almost never pick the same address; within one node a taken address moves on to the
next free one. The agent saves the address in the pod's record and its status, so an agent that
restarts gives adopted pods the same address, and frees it when the pod ends.
"""

from __future__ import annotations

import hashlib
import ipaddress

SECOND = range(1, 255)  # 127.<1..254>
THIRD = range(0, 256)
FOURTH = range(1, 255)  # 127.x.y.<1..254>
SPACE = len(SECOND) * len(THIRD) * len(FOURTH)


def address(index: int) -> str:
    """The ``index``-th address of the space (0 <= index < SPACE)."""
    index %= SPACE
    rest, d = divmod(index, len(FOURTH))
    b, c = divmod(rest, len(THIRD))
    return f"127.{SECOND[b]}.{THIRD[c]}.{FOURTH[d]}"


def usable(ip: str | None) -> bool:
    """Whether ``ip`` is an address this allocator hands out."""
    try:
        parts = ipaddress.IPv4Address(ip or "").packed
    except ValueError:
        return False
    return parts[0] == 127 and parts[1] in SECOND and parts[3] in FOURTH


class PodIPs:
    """The addresses held by this node's pods, by pod uid. Not thread-safe: the caller locks."""

    def __init__(self) -> None:
        self._by_uid: dict[str, str] = {}
        self._taken: set[str] = set()

    def __len__(self) -> int:
        return len(self._by_uid)

    def get(self, uid: str) -> str | None:
        return self._by_uid.get(uid)

    def assign(self, uid: str, preferred: str | None = None) -> str:
        """The pod's address: the one it holds, else ``preferred`` (an address it had before) when free,
        else the first free one from its uid's starting point."""
        held = self._by_uid.get(uid)
        if held is not None:
            return held
        if preferred is not None and usable(preferred) and preferred not in self._taken:
            ip = preferred
        else:
            start = int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "big")
            for step in range(SPACE):
                ip = address(start + step)
                if ip not in self._taken:
                    break
            else:
                raise RuntimeError("no free pod IP left in 127.0.0.0/8")
        self._by_uid[uid] = ip
        self._taken.add(ip)
        return ip

    def release(self, uid: str) -> str | None:
        ip = self._by_uid.pop(uid, None)
        if ip is not None:
            self._taken.discard(ip)
        return ip
