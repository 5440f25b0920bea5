"""Consumable capacity (KEP-5075): how much of a device a request consumes.

Restates upstream ``structured/internal/consumablecapacity.go``: a device that allows
multiple allocations gives each allocation ``roundUp(request or policy.default or the whole
capacity)``; the sum over all allocations must stay within the capacity's value, and the
rounded amount must satisfy the capacity's requestPolicy (validValues or validRange with
step). For a device that does not allow multiple allocations a capacity request is only a
filter: the device must have at least that much.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from .model import Capacity, RequestPolicy

_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))
_DECIMAL = (("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3))


def format_quantity(value: Decimal, binary: bool = False) -> str:
    """Canonical-looking Kubernetes quantity text for ``value``."""
    if value == value.to_integral_value():
        n = int(value)
        for suffix, size in (_BINARY if binary else _DECIMAL):
            if n and n % size == 0:
                return f"{n // size}{suffix}"
        return str(n)
    m = value * 1000
    if m == m.to_integral_value():
        return f"{int(m)}m"
    return format(value.normalize(), "f")


def _round_up(requested: Decimal, policy: RequestPolicy) -> Decimal:
    if policy.valid_values:
        for v in policy.valid_values:
            if v >= requested:
                return v
        return requested  # above every valid value: rejected by violates_policy
    if policy.range_min is not None:
        if requested <= policy.range_min:
            return policy.range_min
        if policy.range_step:
            steps = ((requested - policy.range_min) / policy.range_step).to_integral_value(ROUND_CEILING)
            return policy.range_min + steps * policy.range_step
    return requested


def consumed_amount(requested: Decimal | None, cap: Capacity) -> Decimal:
    """What one allocation consumes of ``cap`` (upstream calculateConsumedCapacity)."""
    policy = cap.policy
    if requested is None:
        if policy is not None and policy.default is not None:
            return policy.default
        return cap.value
    if policy is None:
        return requested
    return _round_up(requested, policy)


def violates_policy(amount: Decimal, policy: RequestPolicy | None) -> bool:
    if policy is None:
        return False
    if policy.valid_values:
        return amount not in policy.valid_values
    if policy.range_min is not None:
        if amount < policy.range_min:
            return True
        if policy.range_max is not None and amount > policy.range_max:
            return True
        if policy.range_step and (amount - policy.range_min) % policy.range_step != 0:
            return True
    return False


def consumption(requests: dict[str, Decimal] | None, capacity: dict[str, Capacity]) -> dict[str, Decimal]:
    """Per capacity name, what a shared allocation consumes (every capacity of the device)."""
    requests = requests or {}
    return {name: consumed_amount(requests.get(name), cap) for name, cap in sorted(capacity.items())}


def check_capacity(requests: dict[str, Decimal] | None, capacity: dict[str, Capacity], shared: bool,
                   already: list[dict[str, Decimal]]) -> str | None:
    """None when the request fits the device, else the reason it does not.

    ``already`` holds the consumption of existing and in-flight allocations of a shared device.
    """
    requests = requests or {}
    for name in sorted(requests):
        if name not in capacity:
            return f"capacity {name} not defined"
    if not shared:
        for name in sorted(requests):
            if capacity[name].value < requests[name]:
                return f"insufficient capacity {name}"
        return None
    for name, cap in sorted(capacity.items()):
        amount = consumed_amount(requests.get(name), cap)
        if violates_policy(amount, cap.policy):
            return f"capacity request {name} outside the requestPolicy"
        total = amount + sum((c.get(name, Decimal(0)) for c in already), Decimal(0))
        if total > cap.value:
            return f"insufficient capacity {name}"
    return None
