"""`llmctl render`: load and validate LLMDeployments from a file and print their children like `helm template`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .. import api
from .._crd import dump_yaml
from .workload import build_children

# ------------------------------------------------------------------------------------------ render


class RenderError(ValueError):
    """A manifest file could not be rendered; the message names the file, document and field."""


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: `spec.model.uri: <message>` (camelCase paths, as written in the manifest)."""
    lines: list[str] = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        lines.extend(f"{loc}: {part}" for part in msg.split("\n"))  # several failed rules: one line each
    return "\n".join(lines)


def load_file(path: str | Path) -> list[api.LLMDeployment]:
    """Parse and validate every LLMDeployment in a (multi-document) YAML file; other kinds are skipped."""
    path = Path(path)
    try:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise RenderError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise RenderError(f"{path}: not valid YAML: {exc}") from exc
    out: list[api.LLMDeployment] = []
    errors: list[str] = []  # every document's problems, not just the first document's (as kubectl apply does)
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        try:
            llmd = _load_document(path, index, doc)
        except RenderError as exc:
            errors.append(str(exc))
            continue
        if llmd is not None:
            out.append(llmd)
    if errors:
        count = f"{len(errors)} invalid documents:\n" if len(errors) > 1 else ""
        raise RenderError(count + "\n".join(errors))
    return out


def _load_document(path: Path, index: int, doc: Any) -> api.LLMDeployment | None:
    """One document: an LLMDeployment, None for another kind, or RenderError with every problem found."""
    where = f"{path}: document {index + 1}"
    if not isinstance(doc, dict):
        raise RenderError(f"{where}: expected a mapping, got {type(doc).__name__}")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    ours = isinstance(api_version, str) and api_version.startswith(f"{api.GROUP}/")
    if kind != api.KIND and not ours:
        # Secrets/PVCs that an example ships next to its LLMDeployment are the user's, not children.
        return None
    if kind != api.KIND or api_version != api.API_VERSION:
        raise RenderError(
            f"{where}: expected apiVersion {api.API_VERSION} kind {api.KIND}, got {api_version} {kind}"
        )
    name = (doc.get("metadata") or {}).get("name")
    if name:
        where += f" ({name})"
    problems = [] if name else ["metadata.name is required"]
    try:
        llmd = api.parse(doc)
    except ValidationError as exc:
        problems += format_validation_error(exc).splitlines()
    if len(problems) == 1 and not name:
        raise RenderError(f"{where}: metadata.name is required")
    if problems:
        raise RenderError(f"{where}: invalid LLMDeployment:\n" + "\n".join(problems))
    return llmd


def _dump_all(manifests: Iterable[dict[str, Any]]) -> str:
    parts = []
    for m in manifests:
        header = f"# Source: {m['kind']}/{m['metadata']['name']}\n"
        parts.append("---\n" + header + dump_yaml(m))
    return "".join(parts)


def render_file(path: str | Path, *, monitoring_crds: bool = True) -> str:
    """Render every LLMDeployment in `path` to its child manifests as multi-document YAML, like
    `helm template`. Namespace comes from metadata.namespace (default `default`); owner references are
    included only when the object carries a metadata.uid (i.e. was read back from a cluster)."""
    rendered: list[dict[str, Any]] = []
    found = load_file(path)
    if not found:
        # An empty render would look like success (a wrong file, a typo in `kind`, a Helm values file).
        raise RenderError(f"{path}: no LLMDeployment ({api.API_VERSION}, kind {api.KIND}) in the file; "
                          "nothing to render")
    for llmd in found:
        uid = llmd.metadata.get("uid")
        rendered += build_children(
            llmd,
            namespace=llmd.namespace or "default",
            owner_uid=uid if isinstance(uid, str) and uid else None,
            monitoring_crds=monitoring_crds,
        )
    return _dump_all(rendered)
