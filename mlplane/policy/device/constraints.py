"""Claim constraints matchAttribute and distinctAttribute, with undo for backtracking.

Restates matchAttributeConstraint / distinctAttributeConstraint of upstream
``structured/internal/experimental/constraint.go``: a constraint applies to the requests it
names ("req" or "req/sub"; none named = all requests of the claim). A device without the
attribute fails either constraint. Attribute lookup tries the fully qualified name, then the
bare id when the domain is the device's driver.

Values compare as sets of typed values (a scalar is a set of one), as upstream does with
DRAListTypeAttributes: matchAttribute needs a value common to all devices in scope (for
scalars: the same value), distinctAttribute needs each device's set disjoint from every other
device's (for scalars: a value no other device has). Without the feature a list value, and
always an attribute without any value, is an error ("unsupported attribute value").
"""

from __future__ import annotations

from .model import AttrValue, Constraint, Device, DeviceID

_LIST_KINDS = {"ints": "int", "bools": "bool", "strings": "string", "versions": "version"}


class UnsupportedAttribute(ValueError):
    """An attribute value that constraints cannot compare."""


def lookup_attribute(device: Device, device_id: DeviceID, name: str) -> AttrValue | None:
    if name in device.attributes:
        return device.attributes[name]
    domain, sep, ident = name.partition("/")
    if not sep or domain != device_id.driver:
        return None
    return device.attributes.get(ident)


def _as_set(value: AttrValue, list_types: bool) -> frozenset:
    kind, v = value
    if kind in _LIST_KINDS and list_types:
        base = _LIST_KINDS[kind]
        return frozenset((base, x) for x in v)
    if kind in ("int", "bool", "string", "version"):
        return frozenset([(kind, v)])
    raise UnsupportedAttribute("unsupported attribute value")


class ConstraintState:
    """Incremental state of one constraint during the search."""

    def __init__(self, spec: Constraint, list_types: bool = True):
        self.spec = spec
        self.attribute = spec.match_attribute or spec.distinct_attribute or ""
        self.kind = "matchAttribute" if spec.match_attribute else "distinctAttribute"
        self.names = frozenset(spec.requests)
        self.list_types = list_types
        # matchAttribute: the values common to the devices so far, one entry per device;
        # distinctAttribute: each device's values.
        self.values: list[frozenset] = []

    def describe(self) -> str:
        return f"{self.kind} {self.attribute}"

    def applies(self, base: str, sub: str) -> bool:
        if not self.names:
            return True
        return base in self.names or (bool(sub) and f"{base}/{sub}" in self.names)

    def add(self, base: str, sub: str, device: Device, device_id: DeviceID) -> bool:
        """Record the device if it satisfies the constraint; False (nothing recorded) if not.
        Raises UnsupportedAttribute for a value that cannot be compared."""
        if not self.applies(base, sub):
            return True
        value = lookup_attribute(device, device_id, self.attribute)
        if value is None:
            return False
        values = _as_set(value, self.list_types)
        if self.kind == "matchAttribute":
            if self.values:
                values = self.values[-1] & values
                if not values:
                    return False
        elif any(values & seen for seen in self.values):
            return False
        self.values.append(values)
        return True

    def remove(self, base: str, sub: str) -> None:
        """Undo the matching successful ``add``."""
        if self.applies(base, sub):
            self.values.pop()
