"""The open registry of kinds: which models exist, how they are addressed, and how to decode them.

Each plane registers its kinds here (``register(Kind(...))``); the store, the API server, the loader
and the CLI all look kinds up through it, so adding a kind never touches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pydantic import ValidationError

from mlplane.api.errors import BadRequest, Invalid, NotFound
from mlplane.api.meta import Object


def _no_fields(_obj: Object) -> dict[str, str]:
    return {}


class ConversionError(ValueError):
    """A manifest of an older served version that cannot be converted; ``causes`` as (path, message)."""

    def __init__(self, causes: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {m}" for p, m in causes))
        self.causes = causes


@dataclass(frozen=True)
class Kind:
    model: type[Object]
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # Extra field-selector values (beyond metadata.name/namespace) from an object of this kind.
    fields: Callable[[Object], dict[str, str]] = _no_fields
    field_names: frozenset[str] = frozenset()
    # Checks on update: (old, new) -> list of (path, message) for changes that are not allowed.
    update_errors: Callable[[Object, Object], list[tuple[str, str]]] | None = None
    # Fields the server sets on update from the old object (upstream's strategy PrepareForUpdate).
    prepare_update: Callable[[Object, Object], None] | None = None
    # Older apiVersions also accepted for this kind: (apiVersion, function turning that version's wire
    # dict into this kind's wire dict, or raising ConversionError). Objects are always the model's version.
    conversions: tuple[tuple[str, Callable[[dict], dict]], ...] = ()
    # Graceful deletion: the seconds a delete should wait for this object to stop (None: delete at once).
    graceful: Callable[[Object], int | None] | None = None

    @property
    def kind(self) -> str:
        return self.model.KIND

    @property
    def api_version(self) -> str:
        return self.model.API_VERSION

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def resource(self) -> str:
        """"jobs.batch" or "pods", as kubectl prints it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.model.model_fields

    def selectable(self) -> frozenset[str]:
        return frozenset({"metadata.name", "metadata.namespace"}) | self.field_names

    def field_values(self, obj: Object) -> dict[str, str]:
        values = {"metadata.name": obj.metadata.name or "", "metadata.namespace": obj.metadata.namespace or ""}
        values.update(self.fields(obj))
        return values

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection, or of one object."""
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base

    def decode(self, data: dict, *, where: str = "") -> Object:
        """Validate a wire-shape dict into this kind's model, or raise Invalid naming each bad field."""
        name = (data.get("metadata") or {}).get("name") if isinstance(data.get("metadata"), dict) else None
        for api_version, convert in self.conversions:
            if data.get("apiVersion") == api_version:
                try:
                    data = convert(data)
                except ConversionError as e:
                    raise self.invalid(name or "", e.causes, where) from None
                break
        try:
            obj = self.model.model_validate(data)
        except ValidationError as e:
            raise self.invalid(name or "", _causes(e), where) from None
        errors = obj.semantic_errors()
        if errors:
            raise self.invalid(obj.name, errors, where)
        return obj

    def decode_json(self, text: str | bytes) -> Object:
        return self.model.model_validate_json(text)

    def invalid(self, name: str, causes: list[tuple[str, str]], where: str = "") -> Invalid:
        detail = "; ".join(f"{path}: {msg}" if path else msg for path, msg in causes)
        prefix = f"{where}: " if where else ""
        return Invalid(f'{prefix}{self.kind}.{self.group or "core"} "{name}" is invalid: {detail}'
                       .replace(".core ", " "), kind=self.kind, name=name, causes=causes)


def _causes(error: ValidationError) -> list[tuple[str, str]]:
    causes: dict[str, str] = {}
    for err in error.errors():
        parts: list[str] = []
        for loc in err["loc"]:
            if isinstance(loc, int):
                parts.append(f"[{loc}]")
            elif loc in ("str", "int", "float", "bool") or "[" in loc or loc.startswith("function-"):
                continue  # union member tags and validator names are noise to a user
            else:
                parts.append(("." if parts else "") + loc)
        path = "".join(parts)
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = f'unknown field "{path}"'
        elif kind == "missing":
            msg = "Required value"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if kind not in ("value_error",) and "input" in err and not isinstance(err["input"], (dict, list)):
                msg = f"Invalid value: {err['input']!r}: {msg}"
        causes.setdefault(path, msg)
    return list(causes.items())


@dataclass
class Registry:
    kinds: list[Kind] = field(default_factory=list)
    _by_gvk: dict[tuple[str, str], Kind] = field(default_factory=dict)
    _by_model: dict[type, Kind] = field(default_factory=dict)
    _by_name: dict[str, Kind] = field(default_factory=dict)
    _by_path: dict[tuple[str, str], Kind] = field(default_factory=dict)

    def register(self, kind: Kind) -> Kind:
        self.kinds.append(kind)
        self._by_gvk[(kind.api_version, kind.kind)] = kind
        for api_version, _convert in kind.conversions:
            self._by_gvk[(api_version, kind.kind)] = kind
        self._by_model[kind.model] = kind
        self._by_path[(kind.api_version, kind.plural)] = kind
        for alias in (kind.plural, kind.kind.lower(), kind.resource, kind.singular, *kind.short_names):
            self._by_name.setdefault(alias.lower(), kind)
        return kind

    def of(self, model_or_obj: type | Object) -> Kind:
        model = model_or_obj if isinstance(model_or_obj, type) else type(model_or_obj)
        try:
            return self._by_model[model]
        except KeyError:
            raise BadRequest(f"{model.__name__} is not a registered kind") from None

    def by_gvk(self, api_version: str, kind: str) -> Kind:
        found = self._by_gvk.get((api_version, kind))
        if found is None:
            known = ", ".join(sorted(f"{k.kind} ({k.api_version})"
                              for k in self.kinds))
            raise BadRequest(f'no matches for kind "{kind}" in version "{api_version}" (known kinds: {known})')
        return found

    def by_path(self, api_version: str, plural: str) -> Kind:
        found = self._by_path.get((api_version, plural))
        if found is None:
            raise NotFound(f"the server could not find the requested resource ({api_version} {plural})")
        return found

    def by_name(self, name: str) -> Kind:
        """Resolve what a user types: "pods", "pod", "po", "jobs.batch", "Job"."""
        found = self._by_name.get(name.lower())
        if found is None:
            raise BadRequest(f'the server doesn\'t have a resource type "{name}"')
        return found

    def decode(self, data: dict, *, where: str = "") -> Object:
        if not isinstance(data, dict):
            raise BadRequest(f"{where + ': ' if where else ''}expected a mapping with apiVersion and kind, "
                             f"got {type(data).__name__}")
        api_version, kind = data.get("apiVersion"), data.get("kind")
        if not api_version or not kind:
            missing = "apiVersion" if not api_version else "kind"
            raise Invalid(f"{where + ': ' if where else ''}Object '{missing}' is missing", causes=[(missing,
                          "Required value")])
        try:
            k = self.by_gvk(str(api_version), str(kind))
        except BadRequest as e:
            raise BadRequest(f"{where + ': ' if where else ''}{e.message}") from None
        return k.decode(data, where=where)


REGISTRY = Registry()
