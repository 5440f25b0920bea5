"""Quantity strings for amounts kept in milli-units, written as Kubernetes canonicalises them.

Kueue builds its quantities with ``resources.ResourceQuantity`` (pkg/resources): CPU as a
milli-quantity in DecimalSI, memory and hugepages in BinarySI, everything else in DecimalSI.
Kubernetes then prints the canonical form (k8s.io/apimachinery resource.Quantity.String):
BinarySI uses the largest power-of-1024 suffix that divides the value exactly (values below 1Ki
are written as DecimalSI), DecimalSI the largest power-of-1000 suffix; a fractional value is
written in milli-units ("500m").
"""

from __future__ import annotations

from mlplane.api.quantity import milli

_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = ("", "k", "M", "G", "T", "P", "E")


def _binary_si(resource: str) -> bool:
    return resource in ("memory", "ephemeral-storage") or resource.startswith("hugepages-")


def format_quantity(resource: str, amount: int) -> str:
    """``amount`` (milli-units of ``resource``) as a canonical Kubernetes quantity string."""
    if amount % 1000:
        return f"{amount}m"
    value = amount // 1000
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    value = abs(value)
    base, suffixes = (1024, _BINARY) if _binary_si(resource) else (1000, _DECIMAL)
    if base == 1024 and value < 1024:
        # Kubernetes prints small BinarySI values in DecimalSI ("1k", not "1000").
        base, suffixes = 1000, _DECIMAL
    i = 0
    while i + 1 < len(suffixes) and value % base == 0:
        value //= base
        i += 1
    return f"{sign}{value}{suffixes[i]}"


def parse_amount(value: str | int | float) -> int:
    """A quantity as milli-units (rounded up); raises ValueError naming the bad input."""
    return milli(value)
