"""The device plane's policy: DRA (resource.k8s.io/v1) device selection.

cel.py evaluates CEL device selectors in the Kubernetes DRA environment; allocator.py allocates
ResourceClaims from ResourceSlices as upstream's structured allocator does.

Importing this package registers the CEL compile check with the API's selector validation, so that
an invalid expression is rejected when a DeviceClass or claim is applied, with its position.
"""

from mlplane.api import resource as _resource
from mlplane.policy.device.cel import CELCompileError, SelectorCache

_compiled = SelectorCache()


def _compile_check(expression: str) -> str | None:
    try:
        _compiled.get(expression)
    except CELCompileError as e:
        return f"Invalid value: {expression!r}: {e}"
    return None


if _compile_check not in _resource.SELECTOR_VALIDATORS:
    _resource.SELECTOR_VALIDATORS.append(_compile_check)
