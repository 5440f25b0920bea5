"""Typed models of every kind mlplane serves, in the upstream wire shape.

``REGISTRY`` resolves kinds by apiVersion/kind, by model class or by the names a user types.
"""

from mlplane.api import kinds as _kinds  # noqa: F401  (registers the built-in kinds)
from mlplane.api import kueue as _kueue  # noqa: F401  (registers the workload plane's kinds)
from mlplane.api import resource as _resource  # noqa: F401  (registers the device plane's kinds)
from mlplane.api import inference as _inference  # noqa: F401  (registers the traffic plane's kinds)
from mlplane.api.batch import Job
from mlplane.api.core import Event, Namespace, Node, Pod
from mlplane.api.errors import AlreadyExists, ApiError, BadRequest, Conflict, Gone, Invalid, NotFound
from mlplane.api.meta import Condition, Object, ObjectMeta
from mlplane.api.registry import REGISTRY, Kind

__all__ = ["REGISTRY", "Kind", "Object", "ObjectMeta", "Condition", "Namespace", "Node", "Pod", "Event", "Job",
           "ApiError", "AlreadyExists", "BadRequest", "Conflict", "Gone", "Invalid", "NotFound"]
