"""Semantic versions (semver.org 2.0.0), the value of DRA ``version`` attributes in CEL.

Parsing and precedence follow github.com/blang/semver/v4, which Kubernetes' CEL semver library
(k8s.io/apiserver/pkg/cel/library/semverlib.go) wraps: strict ``MAJOR.MINOR.PATCH[-pre][+build]``,
no leading zeros, build metadata ignored for precedence and equality. ``normalize=True`` is the
library's relaxed form: an optional ``v`` prefix, missing minor/patch filled with 0 and leading zeros
dropped from the three numbers.
"""

from __future__ import annotations

import re

_NUM = re.compile(r"0|[1-9][0-9]*")
_IDENT = re.compile(r"[0-9A-Za-z-]+")


class Semver:
    """An immutable parsed semantic version."""

    __slots__ = ("major", "minor", "patch", "pre", "build")

    def __init__(self, major: int, minor: int, patch: int, pre: tuple = (), build: tuple = ()):
        self.major, self.minor, self.patch, self.pre, self.build = major, minor, patch, pre, build

    @classmethod
    def parse(cls, text: str, normalize: bool = False) -> "Semver":
        """Parse ``text``; raise ValueError with the reason when it is not a valid version."""
        s = text
        if normalize:
            s = s[1:] if s.startswith("v") else s
            core_end = len(s)
            for sep in "-+":
                idx = s.find(sep)
                if idx != -1:
                    core_end = min(core_end, idx)
            parts = s[:core_end].split(".")
            if len(parts) < 3:
                parts += ["0"] * (3 - len(parts))
            parts = [p.lstrip("0") or "0" if p.isdigit() else p for p in parts]
            s = ".".join(parts) + s[core_end:]
        main, _, build_s = s.partition("+")
        core, dash, pre_s = main.partition("-")
        nums = core.split(".")
        if len(nums) != 3:
            raise ValueError(f"No Major.Minor.Patch elements found in {text!r}")
        values = []
        for label, n in zip(("Major", "Minor", "Patch"), nums):
            if not n.isdigit() or not n.isascii():
                raise ValueError(f"Invalid character(s) found in {label.lower()} number {n!r}")
            if not _NUM.fullmatch(n):
                raise ValueError(f"{label} number must not contain leading zeroes {n!r}")
            values.append(int(n))
        pre: list[int | str] = []
        if dash:
            for part in pre_s.split("."):
                if not _IDENT.fullmatch(part):
                    raise ValueError(f"Invalid character(s) found in prerelease {part!r}")
                if part.isdigit():
                    if not _NUM.fullmatch(part):
                        raise ValueError(f"Prerelease version segment must not contain leading zeroes {part!r}")
                    pre.append(int(part))
                else:
                    pre.append(part)
        build: tuple = ()
        if build_s or s.endswith("+"):
            build = tuple(build_s.split("."))
            if any(not _IDENT.fullmatch(b) for b in build):
                raise ValueError(f"Invalid character(s) found in build meta data {build_s!r}")
        return cls(values[0], values[1], values[2], tuple(pre), build)

    def compare(self, other: "Semver") -> int:
        """-1, 0 or 1 by semver precedence."""
        a, b = (self.major, self.minor, self.patch), (other.major, other.minor, other.patch)
        if a != b:
            return -1 if a < b else 1
        if self.pre == other.pre:
            return 0
        if not self.pre:
            return 1
        if not other.pre:
            return -1
        for x, y in zip(self.pre, other.pre):
            if x == y:
                continue
            if type(x) is not type(y):  # numeric identifiers sort before alphanumeric ones
                return -1 if isinstance(x, int) else 1
            return -1 if x < y else 1
        return -1 if len(self.pre) < len(other.pre) else 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Semver) and self.compare(other) == 0

    def __hash__(self) -> int:
        return hash((self.major, self.minor, self.patch, self.pre))

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            s += "-" + ".".join(str(p) for p in self.pre)
        if self.build:
            s += "+" + ".".join(self.build)
        return s

    def __repr__(self) -> str:
        return f"Semver({str(self)!r})"
