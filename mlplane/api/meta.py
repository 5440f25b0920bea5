"""Shared object machinery: the strict base model, ObjectMeta, conditions and owner references."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


class Model(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields and wrong types rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True,
                              validate_assignment=False)


_last_stamp: tuple[int, str] = (0, "")


def now() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    global _last_stamp
    second = int(time.time())
    if _last_stamp[0] != second:  # formatting is the slow part; it changes once a second
        _last_stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _last_stamp[1]


def now_micro() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(f"{value!r}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                         "characters, '-' or '.', and must start and end with an alphanumeric character")
    return value


def dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(f"{value!r}: a lowercase RFC 1123 label must consist of lower case alphanumeric "
                         "characters or '-', start and end with an alphanumeric character, and be at most 63 long")
    return value


def _qualified_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix:
        _dns_subdomain(prefix)
    if not name or len(name) > 63 or not _QUALIFIED.match(name):
        raise ValueError(f"{key!r}: name part must consist of alphanumeric characters, '-', '_' or '.', "
                         "and must start and end with an alphanumeric character (at most 63 long)")


def _labels(value: dict[str, str] | None) -> dict[str, str] | None:
    for k, v in (value or {}).items():
        _qualified_key(k)
        if len(v) > 63 or not _LABEL_VALUE.match(v):
            raise ValueError(f"label {k}={v!r}: a valid label value must be 63 characters or less and consist "
                             "of alphanumeric characters, '-', '_' or '.'")
    return value


def _annotation_keys(value: dict[str, str] | None) -> dict[str, str] | None:
    for k in value or {}:
        _qualified_key(k)
    return value


Name = Annotated[str, AfterValidator(_dns_subdomain)]
Labels = Annotated[dict[str, str], AfterValidator(_labels)]
Annotations = Annotated[dict[str, str], AfterValidator(_annotation_keys)]
NonNegative = Annotated[int, Field(ge=0)]


class OwnerReference(Model):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    name: Name | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    labels: Labels | None = None
    annotations: Annotations | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None
    managed_fields: list[dict[str, Any]] | None = None  # accepted from exported manifests, not interpreted


class Condition(Model):
    """A status condition; the same shape serves metav1.Condition, PodCondition and JobCondition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    last_probe_time: str | None = None
    last_heartbeat_time: str | None = None
    observed_generation: int | None = None


class LabelSelectorRequirement(Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(Model):
    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class Object(Model):
    """A top-level API object. Subclasses set API_VERSION and KIND and declare spec/status."""

    API_VERSION: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    api_version: str = ""
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    def model_post_init(self, _context: Any) -> None:
        if not self.api_version:
            self.api_version = self.API_VERSION
        if not self.kind:
            self.kind = self.KIND

    # -- convenience accessors ------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""

    @property
    def uid(self) -> str:
        return self.metadata.uid or ""

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.labels or {}

    @property
    def key(self) -> str:
        """"namespace/name" (or "name" for cluster-scoped objects), the work-queue key."""
        return f"{self.metadata.namespace}/{self.metadata.name}" if self.metadata.namespace else self.name

    def semantic_errors(self) -> list[tuple[str, str]]:
        """Cross-field checks that types alone cannot express: (field path, message) pairs."""
        return []

    def to_dict(self) -> dict:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def copy_deep(self):
        return type(self).model_validate_json(self.to_json())


def find_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    for c in conditions or []:
        if c.type == type_:
            return c
    return None


def is_true(conditions: list[Condition] | None, type_: str) -> bool:
    c = find_condition(conditions, type_)
    return c is not None and c.status == "True"


def set_condition(conditions: list[Condition] | None, type_: str, status: str, reason: str | None = None,
                  message: str | None = None, *, probe: bool = False) -> list[Condition]:
    """Set a condition in place of the old one; lastTransitionTime moves only when status changes."""
    conditions = list(conditions or [])
    ts = now()
    for i, c in enumerate(conditions):
        if c.type == type_:
            changed = c.status != status
            conditions[i] = c.model_copy(update={
                "status": status, "reason": reason, "message": message,
                "last_transition_time": ts if changed or not c.last_transition_time else c.last_transition_time,
                "last_probe_time": ts if probe else c.last_probe_time})
            return conditions
    conditions.append(Condition(type=type_, status=status, reason=reason, message=message,
                                last_transition_time=ts, last_probe_time=ts if probe else None))
    return conditions


def owner_reference(owner: Object, controller: bool = True) -> OwnerReference:
    return OwnerReference(api_version=owner.api_version, kind=owner.kind, name=owner.name, uid=owner.uid,
                          controller=controller, block_owner_deletion=True)


def controller_of(obj: Object) -> OwnerReference | None:
    for ref in obj.metadata.owner_references or []:
        if ref.controller:
            return ref
    return None
