"""Loading manifests: multi-document YAML (or JSON) from files, folders or stdin, validated strictly.

Every document is checked before anything is returned, so a caller that stores the result either
stores all of it or, on the first error, none of it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlplane.api.errors import ApiError
from mlplane.api.meta import Object
from mlplane.api.registry import REGISTRY


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, as the Kubernetes API does."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class ManifestError(Exception):
    """One or more documents could not be loaded; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Document:
    source: str
    index: int  # 1-based document number within the source
    obj: Object


def parse_yaml(text: str, source: str) -> list[tuple[int, dict]]:
    """The non-empty documents of a YAML stream with their 1-based numbers; List kinds are flattened."""
    try:
        raw = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e)
        raise ManifestError([f"{where}: invalid YAML: {problem}"]) from None
    docs = []
    for i, doc in enumerate(raw, start=1):
        if doc is None:
            continue
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            docs.extend((i, item) for item in doc.get("items") or [])
        else:
            docs.append((i, doc))
    return docs


def _sources(path: str) -> list[tuple[str, str]]:
    if path == "-":
        return [("<stdin>", sys.stdin.read())]
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml", ".json") and f.is_file())
        if not files:
            raise ManifestError([f"{path}: no .yaml, .yml or .json files in this directory"])
        return [(str(f), f.read_text()) for f in files]
    if not p.exists():
        raise ManifestError([f'the path "{path}" does not exist'])
    return [(str(p), p.read_text())]


def load_text(text: str, source: str = "<input>") -> list[Document]:
    errors: list[str] = []
    out: list[Document] = []
    for index, data in parse_yaml(text, source):
        where = f"{source}: document {index}"
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
            where += f" ({data['kind']}/{meta.get('name') or meta.get('generateName') or '?'})"
        try:
            out.append(Document(source, index, REGISTRY.decode(data, where=where)))
        except ApiError as e:
            errors.append(e.message)
    if errors:
        raise ManifestError(errors)
    return out


def load_paths(paths: list[str]) -> list[Document]:
    """Load every document of every path; raise ManifestError listing all problems, or return all."""
    errors: list[str] = []
    out: list[Document] = []
    for path in paths:
        try:
            for source, text in _sources(path):
                try:
                    out.extend(load_text(text, source))
                except ManifestError as e:
                    errors.extend(e.errors)
        except (ManifestError, OSError) as e:
            errors.extend(e.errors if isinstance(e, ManifestError) else [f"{path}: {e.strerror or e}"])
    if errors:
        raise ManifestError(errors)
    return out
