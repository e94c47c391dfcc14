"""Reading configuration files into validated models.

``load_paths`` reads YAML files and directories of them (multi-document YAML,
``kind: List``), validates every document it knows against the models in
:mod:`meshproxy.config.models`, and returns a :class:`ConfigSet`: the loaded
documents per kind, in document order (Istio's "oldest wins" rules use creation
order, and file order is our proxy for it), the MeshConfig, and every issue
found.  Issues name the file, the document and the field as the user wrote it::

    config/vs.yaml: document 3 (VirtualService default/reviews): spec.http[0].route[1].weight: weight -5 must not be negative

Nothing raises on bad input; callers who want all-or-nothing call
:meth:`ConfigSet.raise_on_errors` (or raise :class:`ConfigError` themselves).
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Sequence, TypeVar, Union

import yaml
from pydantic import BaseModel, ValidationError

from .models import (
    ConfigMap,
    DestinationRule,
    Gateway,
    STRICT_DURATIONS,
    MeshConfig,
    Pod,
    Service,
    ServiceEntry,
    VirtualService,
    WorkloadEntry,
)

__all__ = [
    "DocRef",
    "ConfigIssue",
    "Loaded",
    "ConfigSet",
    "ConfigError",
    "load_paths",
    "load_text",
    "ISTIO_NETWORKING_VERSIONS",
    "MESH_CONFIGMAP_NAME",
    "MESH_CONFIGMAP_NAMESPACE",
]

M = TypeVar("M", bound=BaseModel)

ISTIO_NETWORKING_GROUP = "networking.istio.io"
ISTIO_NETWORKING_VERSIONS = ("v1alpha3", "v1beta1", "v1")
MESH_CONFIGMAP_NAME = "istio"
MESH_CONFIGMAP_NAMESPACE = "istio-system"
MESH_CONFIGMAP_KEY = "mesh"

# (API group, kind) -> (model, ConfigSet attribute).  The core group is "".
_KINDS: dict[tuple[str, str], tuple[type[BaseModel], str]] = {
    (ISTIO_NETWORKING_GROUP, "VirtualService"): (VirtualService, "virtual_services"),
    (ISTIO_NETWORKING_GROUP, "DestinationRule"): (DestinationRule, "destination_rules"),
    (ISTIO_NETWORKING_GROUP, "Gateway"): (Gateway, "gateways"),
    (ISTIO_NETWORKING_GROUP, "ServiceEntry"): (ServiceEntry, "service_entries"),
    (ISTIO_NETWORKING_GROUP, "WorkloadEntry"): (WorkloadEntry, "workload_entries"),
    ("", "Service"): (Service, "services"),
    ("", "Pod"): (Pod, "pods"),
    ("", "ConfigMap"): (ConfigMap, "config_maps"),
}
_CONTEXT = {STRICT_DURATIONS: True}
_VERSIONS: dict[str, tuple[str, ...]] = {ISTIO_NETWORKING_GROUP: ISTIO_NETWORKING_VERSIONS, "": ("v1",)}


# --------------------------------------------------------------------------------------------
# Result types


@dataclass(frozen=True)
class DocRef:
    """Where a document came from.  ``index`` is the 0-based position of the document in its
    file (``-1`` for issues about the file as a whole); ``str()`` shows it 1-based."""

    file: str
    index: int
    kind: str = ""
    namespace: str = ""
    name: str = ""

    def __str__(self) -> str:
        text = self.file
        if self.index >= 0:
            text += f": document {self.index + 1}"
        if self.kind:
            ident = f"{self.namespace}/{self.name}" if self.namespace and self.name else self.name
            text += f" ({self.kind} {ident})" if ident else f" ({self.kind})"
        return text


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found while loading.  ``field`` is the dotted path as the user wrote it
    (camelCase, list indices: ``spec.http[0].route[1].weight``), empty for whole-document or
    whole-file problems.  ``line`` (1-based) is the YAML line of the field when known."""

    ref: DocRef
    field: str
    message: str
    severity: Literal["error", "warning"] = "error"
    line: int | None = None

    def __str__(self) -> str:
        if self.field:
            return f"{self.ref}: {self.field}: {self.message}"
        return f"{self.ref}: {self.message}"


@dataclass(frozen=True)
class Loaded(Generic[M]):
    """A validated document and where it came from."""

    doc: M
    ref: DocRef

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def namespace(self) -> str:
        return self.ref.namespace


class ConfigError(Exception):
    """Raised by callers that want all-or-nothing loading; carries every issue."""

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid configuration")


@dataclass
class ConfigSet:
    virtual_services: list[Loaded[VirtualService]] = field(default_factory=list)
    destination_rules: list[Loaded[DestinationRule]] = field(default_factory=list)
    gateways: list[Loaded[Gateway]] = field(default_factory=list)
    service_entries: list[Loaded[ServiceEntry]] = field(default_factory=list)
    workload_entries: list[Loaded[WorkloadEntry]] = field(default_factory=list)
    services: list[Loaded[Service]] = field(default_factory=list)
    pods: list[Loaded[Pod]] = field(default_factory=list)
    config_maps: list[Loaded[ConfigMap]] = field(default_factory=list)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    issues: list[ConfigIssue] = field(default_factory=list)
    mesh_source: DocRef | None = None
    """Where ``mesh`` came from (the istio ConfigMap or the mesh config file); None = defaults."""

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    def raise_on_errors(self) -> None:
        """Raise :class:`ConfigError` listing every error, if there is any."""
        if self.errors:
            raise ConfigError(self.errors)


# --------------------------------------------------------------------------------------------
# YAML


class _YAMLLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that keeps timestamps as strings (as Kubernetes does) and rejects duplicate keys."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if key_node.value in seen:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"found duplicate key {key_node.value!r}", key_node.start_mark,
                        )
                    seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _YAMLLoader.yaml_implicit_resolvers.items()
}


def _yaml_error_message(exc: yaml.YAMLError) -> tuple[str, int | None]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context and not problem.startswith("found duplicate key"):
        problem = f"{problem} ({context})"
    if mark is not None:
        return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}", mark.line + 1
    return f"YAML syntax error: {problem}", None


def _iter_documents(text: str, file: str, issues: list[ConfigIssue]):
    """Yield ``(index, node, data)`` per YAML document; a syntax error ends the file."""
    loader = _YAMLLoader(text)
    index = 0
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
                data = loader.construct_document(node)
            except yaml.YAMLError as exc:
                message, line = _yaml_error_message(exc)
                issues.append(ConfigIssue(DocRef(file, index), "", message, "error", line))
                return
            yield index, node, data
            index += 1
    finally:
        loader.dispose()


def _node_line(node: Any, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest node along ``loc`` (the key's line for mapping entries)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for element in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(element, str):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == element:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(element, int) and element < len(node.value):
            node = node.value[element]
            line = node.start_mark.line + 1
        else:
            return line
    return line


# --------------------------------------------------------------------------------------------
# Validation errors -> issues

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(loc: Sequence[str | int]) -> str:
    """``("spec", "http", 0, "route", 1, "weight")`` -> ``"spec.http[0].route[1].weight"``;
    map keys that are not identifiers are quoted: ``labels["app.kubernetes.io/name"]``."""
    out = ""
    for element in loc:
        if isinstance(element, int):
            out += f"[{element}]"
        elif _IDENT.match(element):
            out += f".{element}" if out else element
        else:
            out += f"[{json.dumps(element)}]"
    return out


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class found by following ``loc`` (aliases, indices, map keys) from ``model``."""
    tp: Any = model
    for element in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(element, str):
            for name, info in tp.model_fields.items():
                if element in (info.alias, name):
                    tp = info.annotation
                    break
            else:
                return None
        elif origin in (list, tuple) and isinstance(element, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _error_message(err: dict[str, Any], model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        message = "unknown field"
        parent = _model_at(model, loc[:-1])
        if parent is not None and isinstance(loc[-1], str):
            names = {(info.alias or name).lower(): info.alias or name for name, info in parent.model_fields.items()}
            close = difflib.get_close_matches(loc[-1].lower(), list(names), n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {names[close[0]]!r}?"
        return message
    if kind == "missing":
        return "required field is missing"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {_type_name(value)}"
    if kind == "list_type":
        return f"expected a list, got {_type_name(value)}"
    if kind == "string_type":
        return f"expected a string, got {_type_name(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {value!r}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {value!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {value!r}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}, got {value!r}"
    return err["msg"]


def _validation_issues(exc: ValidationError, model: type[BaseModel], ref: DocRef,
                       prefix: tuple[str | int, ...], node: Any) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        subloc = (err.get("ctx") or {}).get("subloc") or ()
        full = loc + tuple(subloc)
        message = _error_message(err, model, loc)
        issues.append(ConfigIssue(ref, format_path(prefix + full), message, "error", _node_line(node, prefix + full)))
    return issues


# --------------------------------------------------------------------------------------------
# Documents


class _Builder:
    def __init__(self) -> None:
        self.result = ConfigSet()
        self._seen: dict[tuple[str, str, str], DocRef] = {}

    def issue(self, ref: DocRef, fld: str, message: str, severity: Literal["error", "warning"] = "error",
              line: int | None = None) -> None:
        self.result.issues.append(ConfigIssue(ref, fld, message, severity, line))

    def add_text(self, text: str, file: str) -> None:
        for index, node, data in _iter_documents(text, file, self.result.issues):
            if data is None:
                continue
            self.add_document(data, file, index, node, ())

    def add_document(self, data: Any, file: str, index: int, node: Any, prefix: tuple[str | int, ...]) -> None:
        ref = DocRef(file, index)
        where = format_path(prefix)
        if not isinstance(data, dict):
            self.issue(ref, where, f"document must be a mapping, got {_type_name(data)}",
                       line=_node_line(node, prefix))
            return
        kind = data.get("kind")
        api_version = data.get("apiVersion")
        for key, value in (("apiVersion", api_version), ("kind", kind)):
            if not isinstance(value, str) or not value:
                message = "required field is missing" if value is None else f"expected a string, got {_type_name(value)}"
                self.issue(ref, format_path(prefix + (key,)), message, line=_node_line(node, prefix + (key,)))
                return
        assert isinstance(kind, str) and isinstance(api_version, str)

        metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        name = metadata.get("name") if isinstance(metadata.get("name"), str) else ""
        namespace = metadata.get("namespace") if isinstance(metadata.get("namespace"), str) else ""
        ref = DocRef(file, index, kind, namespace or "default", name)

        if kind == "List" or (kind.endswith("List") and isinstance(data.get("items"), list)):
            items = data.get("items")
            if items is None:
                return
            if not isinstance(items, list):
                self.issue(ref, format_path(prefix + ("items",)), f"expected a list, got {_type_name(items)}",
                           line=_node_line(node, prefix + ("items",)))
                return
            for i, item in enumerate(items):
                self.add_document(item, file, index, node, prefix + ("items", i))
            return

        group, _, version = api_version.rpartition("/")
        entry = _KINDS.get((group, kind))
        if entry is None:
            self.issue(ref, "", f"unsupported kind {kind} ({api_version}); document skipped", "warning",
                       line=_node_line(node, prefix))
            return
        if version not in _VERSIONS[group]:
            expected = ", ".join(f"{group}/{v}" if group else v for v in _VERSIONS[group])
            self.issue(ref, format_path(prefix + ("apiVersion",)),
                       f"unsupported apiVersion {api_version!r} for {kind}; expected {expected}",
                       line=_node_line(node, prefix + ("apiVersion",)))
            return

        model, attr = entry
        try:
            doc = model.model_validate(data, context=_CONTEXT)
        except ValidationError as exc:
            self.result.issues.extend(_validation_issues(exc, model, ref, prefix, node))
            return

        key = (kind, ref.namespace, ref.name)
        first = self._seen.get(key)
        if first is not None:
            self.issue(ref, format_path(prefix + ("metadata", "name")),
                       f"duplicate {kind} {ref.namespace}/{ref.name}: already defined in {first}",
                       line=_node_line(node, prefix + ("metadata", "name")))
            return
        self._seen[key] = ref
        getattr(self.result, attr).append(Loaded(doc, ref))

    # -- MeshConfig --------------------------------------------------------------------------

    def mesh_from_configmaps(self) -> None:
        for loaded in self.result.config_maps:
            meta = loaded.doc.metadata
            if meta.name == MESH_CONFIGMAP_NAME and meta.namespace == MESH_CONFIGMAP_NAMESPACE:
                text = loaded.doc.data.get(MESH_CONFIGMAP_KEY)
                if text is not None:
                    self._set_mesh(text, loaded.ref, ("data", MESH_CONFIGMAP_KEY))
                return

    def mesh_from_file(self, path: str) -> None:
        ref = DocRef(path, 0, "MeshConfig")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            self.issue(DocRef(path, -1), "", "mesh config file not found")
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.issue(DocRef(path, -1), "", f"cannot read mesh config file: {exc}")
            return
        # A ConfigMap (as `kubectl get cm istio -n istio-system -o yaml` prints it) is accepted too.
        try:
            data = yaml.load(text, Loader=_YAMLLoader)  # noqa: S506 - a safe loader
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict) and data.get("kind") == "ConfigMap" and isinstance(data.get("data"), dict):
            mesh_text = data["data"].get(MESH_CONFIGMAP_KEY)
            if not isinstance(mesh_text, str):
                self.issue(ref, "data.mesh", "required field is missing")
                return
            self._set_mesh(mesh_text, ref, ("data", MESH_CONFIGMAP_KEY))
            return
        self._set_mesh(text, ref, ())

    def _set_mesh(self, text: str, ref: DocRef, prefix: tuple[str | int, ...]) -> None:
        issues: list[ConfigIssue] = []
        docs = [(i, n, d) for i, n, d in _iter_documents(text, ref.file, issues)]
        if issues:
            for issue in issues:
                self.issue(ref, format_path(prefix), issue.message, line=issue.line if not prefix else None)
            return
        documents = [(n, d) for _, n, d in docs if d is not None]
        if len(documents) > 1:
            self.issue(ref, format_path(prefix), "mesh config must be a single YAML document")
            return
        node, data = documents[0] if documents else (None, {})
        if not isinstance(data, dict):
            self.issue(ref, format_path(prefix), f"mesh config must be a mapping, got {_type_name(data)}")
            return
        try:
            mesh = MeshConfig.model_validate(data, context=_CONTEXT)
        except ValidationError as exc:
            for issue in _validation_issues(exc, MeshConfig, ref, (), node):
                fld = f"{format_path(prefix)}.{issue.field}" if prefix and issue.field else issue.field
                self.issue(ref, fld, issue.message, line=None if prefix else issue.line)
            return
        self.result.mesh = mesh
        self.result.mesh_source = ref


def _expand(path: Path, builder: _Builder) -> list[Path]:
    if path.is_dir():
        # Like ``kubectl apply -f DIR``: the directory's own files, not its subdirectories
        # (config/bookinfo/variants/ holds alternatives that replace a default file).
        files = sorted(
            (p for p in path.iterdir()
             if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        if not files:
            builder.issue(DocRef(str(path), -1), "", "no *.yaml or *.yml files in directory", "warning")
        return files
    return [path]


def load_paths(paths: Sequence[str | Path], mesh_config_file: str | Path | None = None) -> ConfigSet:
    """Load YAML files and directories (each directory's own ``*.yaml``/``*.yml`` files, sorted by name) in the given order.

    MeshConfig comes from ``mesh_config_file`` when given (a plain MeshConfig YAML file, or the
    ConfigMap itself), else from the ``istio`` ConfigMap in ``istio-system`` (its ``mesh`` key)
    when present, else defaults.  A ConfigMap's mesh is validated even when the file wins.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    builder = _Builder()
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not path.exists():
            builder.issue(DocRef(str(given), -1), "", "file not found")
            continue
        for file in _expand(path, builder):
            resolved = file.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                builder.issue(DocRef(str(file), -1), "", f"cannot read file: {exc}")
                continue
            builder.add_text(text, str(file))
    return _finish(builder, mesh_config_file)


def load_text(text: str, file: str = "<string>", mesh_config_file: str | Path | None = None) -> ConfigSet:
    """Like :func:`load_paths` for YAML already in memory; ``file`` names it in issues."""
    builder = _Builder()
    builder.add_text(text, file)
    return _finish(builder, mesh_config_file)


def _finish(builder: _Builder, mesh_config_file: str | Path | None) -> ConfigSet:
    builder.mesh_from_configmaps()
    if mesh_config_file is not None:  # the file wins over the ConfigMap
        builder.mesh_from_file(str(mesh_config_file))
    return builder.result
