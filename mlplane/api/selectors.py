"""Label and field selectors in the Kubernetes string syntax.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, comma-joined
(all must hold). Field selectors: ``path=value`` / ``path!=value`` over a small set of indexed fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlplane.api.errors import BadRequest

_TOKEN = re.compile(r"\s*(!?[A-Za-z0-9_./-]+)\s*(==|!=|=|\s+in\s+|\s+notin\s+)?\s*(\([^)]*\)|[A-Za-z0-9_.-]*)\s*")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op in ("=", "in"):
            return labels.get(self.key) in self.values
        # "!=" and "notin" match objects without the key, as Kubernetes does.
        return labels.get(self.key) not in self.values


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


EVERYTHING = Selector()


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def parse_label_selector(text: str | None) -> Selector:
    if not text:
        return EVERYTHING
    reqs = []
    for part in _split_top(text):
        m = _TOKEN.fullmatch(part)
        if not m:
            raise BadRequest(f"unable to parse label selector {text!r}: bad requirement {part!r}")
        key, op, value = m.group(1), (m.group(2) or "").strip(), m.group(3)
        if not op:
            if value:
                raise BadRequest(f"unable to parse label selector {text!r}: bad requirement {part!r}")
            reqs.append(Requirement(key[1:], "!exists") if key.startswith("!") else Requirement(key, "exists"))
            continue
        if key.startswith("!"):
            raise BadRequest(f"unable to parse label selector {text!r}: '!' only applies to a bare key")
        if op in ("in", "notin"):
            if not (value.startswith("(") and value.endswith(")")):
                raise BadRequest(f"unable to parse label selector {text!r}: {op} needs a (list)")
            vals = tuple(v.strip() for v in value[1:-1].split(",") if v.strip())
            reqs.append(Requirement(key, op, vals))
        else:
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
    return Selector(tuple(reqs))


def selector_from_match(match_labels: dict[str, str] | None, match_expressions: list | None = None) -> Selector:
    """A Selector from a metav1.LabelSelector's matchLabels and matchExpressions."""
    reqs = [Requirement(k, "=", (v,)) for k, v in sorted((match_labels or {}).items())]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in match_expressions or []:
        reqs.append(Requirement(expr.key, ops[expr.operator], tuple(expr.values or ())))
    return Selector(tuple(reqs))


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (path, equal, value)

    def matches(self, fields: dict[str, str]) -> bool:
        return all((fields.get(path, "") == value) == equal for path, equal, value in self.terms)


def parse_field_selector(text: str | None, known: frozenset[str]) -> FieldSelector:
    if not text:
        return FieldSelector()
    terms = []
    for part in _split_top(text):
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)", part)
        if not m:
            raise BadRequest(f"invalid field selector {part!r}")
        path, op, value = m.groups()
        if path not in known:
            raise BadRequest(f"field label not supported: {path} (supported: {', '.join(sorted(known))})")
        terms.append((path, op != "!=", value.strip()))
    return FieldSelector(tuple(terms))
