"""Claim constraints matchAttribute and distinctAttribute, with undo for backtracking.

Restates matchAttributeConstraint / distinctAttributeConstraint of upstream
``structured/internal/experimental/allocator_experimental.go``: a constraint applies to the
requests it names ("req" or "req/sub"; none named = all requests of the claim). For
matchAttribute the first device fixes the value and every later device must carry the same
typed value; for distinctAttribute every device must carry a value no other device in scope
has (compared by value, as upstream after its commit e5c5ce5). A device without the
attribute fails either constraint. Attribute lookup tries the fully qualified name, then
the bare id when the domain is the device's driver.
"""

from __future__ import annotations

from .model import AttrValue, Constraint, Device, DeviceID


def lookup_attribute(device: Device, device_id: DeviceID, name: str) -> AttrValue | None:
    if name in device.attributes:
        return device.attributes[name]
    domain, sep, ident = name.partition("/")
    if not sep or domain != device_id.driver:
        return None
    return device.attributes.get(ident)


class ConstraintState:
    """Incremental state of one constraint during the search."""

    def __init__(self, spec: Constraint):
        self.spec = spec
        self.attribute = spec.match_attribute or spec.distinct_attribute or ""
        self.kind = "matchAttribute" if spec.match_attribute else "distinctAttribute"
        self.names = frozenset(spec.requests)
        self.values: list[AttrValue] = []

    def describe(self) -> str:
        return f"{self.kind} {self.attribute}"

    def applies(self, base: str, sub: str) -> bool:
        if not self.names:
            return True
        return base in self.names or (bool(sub) and f"{base}/{sub}" in self.names)

    def add(self, base: str, sub: str, device: Device, device_id: DeviceID) -> bool:
        """Record the device if it satisfies the constraint; False (nothing recorded) if not."""
        if not self.applies(base, sub):
            return True
        value = lookup_attribute(device, device_id, self.attribute)
        if value is None:
            return False
        if self.kind == "matchAttribute":
            if self.values and self.values[0] != value:
                return False
        elif value in self.values:
            return False
        self.values.append(value)
        return True

    def remove(self, base: str, sub: str) -> None:
        """Undo the matching successful ``add``."""
        if self.applies(base, sub):
            self.values.pop()
