"""The one place that talks to the Kubernetes API: server-side apply, reads, deletes, request counting.

The kind registry (_kinds.py) replaces discovery, so the operator makes no requests it does not need.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter as PromCounter

from llm_operator import FIELD_MANAGER
from llm_operator import _kinds as registry

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_REQUESTS = PromCounter("llmop_api_requests_total", "Kubernetes API requests made by the operator's reconciler",
                           ["verb"])


def honour_current_kubeconfig() -> None:
    """The kubernetes library reads $KUBECONFIG once, when first imported; use the value it has now."""
    from kubernetes.config import kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = os.environ.get("KUBECONFIG", "~/.kube/config")


class KubeError(RuntimeError):
    """An API call failed; ``status`` is the HTTP status (0 for transport errors)."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _path(api_version: str, kind: str, namespace: str | None, name: str | None, subresource: str | None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    registered = registry.kind(kind)
    parts = [base]
    if namespace and registered.namespaced:
        parts.append(f"namespaces/{namespace}")
    parts.append(registered.plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class KubeAPI(Protocol):
    """What reconcile() needs from a client: `Kube` against a real API server, or a fake in unit tests."""

    @property
    def writes(self) -> int: ...

    def get(self, *, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None: ...

    def list(
        self, *, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]: ...

    def apply(self, obj: dict[str, Any], *, subresource: str | None = None, force: bool = True) -> dict[str, Any]: ...

    def patch(
        self, *, api_version: str, kind: str, namespace: str | None, name: str, body: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]: ...

    def delete(
        self, *, api_version: str, kind: str, namespace: str | None, name: str, uid: str | None = None
    ) -> bool: ...

    def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...


class Kube:
    """A thin synchronous client. Thread-safe: kopf runs sync handlers in a thread pool."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                honour_current_kubeconfig()
                config.load_kube_config()
            api_client = client.ApiClient()
        self._api = api_client
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.writes_by_namespace: Counter[str] = Counter()
        # Reads per namespace: tests check that a resync really looked at a namespace while writing nothing.
        self.gets_by_namespace: Counter[str] = Counter()
        self.calls: set[tuple[str, str]] = set()  # (verb, path) ever made: the RBAC test checks them all
        # Set by leader election: writes are refused while it returns False (followers, or a leader past its
        # renew deadline).
        self.write_gate: Callable[[], bool] | None = None

    def record_call(self, verb: str, path: str) -> None:
        """A request made outside ``_call`` (the caches' lists and watches): the RBAC test checks them all."""
        with self._lock:
            self.calls.add((verb, path))

    @property
    def writes(self) -> int:
        with self._lock:
            return sum(n for verb, n in self.requests.items() if verb in WRITE_VERBS)

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if method in WRITE_VERBS and self.write_gate is not None and not self.write_gate():
            # Leader election: a replica that is not (or no longer surely) the leader sends no write at all.
            raise KubeError(f"{method} {path}: not the leader; write refused", status=0, reason="NotLeader")
        API_REQUESTS.labels(method).inc()
        with self._lock:
            self.requests[method] += 1
            self.calls.add((method, path))
            if "/namespaces/" in path:
                namespace = path.split("/namespaces/", 1)[1].split("/", 1)[0]
                if method in WRITE_VERBS:
                    self.writes_by_namespace[namespace] += 1
                elif method == "GET":
                    self.gets_by_namespace[namespace] += 1
        return self.send(method, path, body=body, query=query, content_type=content_type)

    def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request, neither counted nor gated: the leader election's own Lease calls use it directly."""
        try:
            method_, url, headers, body_, _ = self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self._api.call_api(method_, url, header_params=headers, body=body_, _request_timeout=30)
            data = resp.read()
        except ApiException as exc:
            raise self._error(method, path, int(exc.status or 0), exc.body or b"") from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            # Transport failures (apiserver down, connection refused or reset). urllib3 raises them as
            # MaxRetryError/ProtocolError, which are not OSError: uncaught, every reconcile during an apiserver
            # outage was logged as "crashed" with a traceback instead of "failed" (bench/chaos.py).
            raise KubeError(f"{method} {path}: {exc}", status=0) from exc
        if not 200 <= resp.status < 300:
            raise self._error(method, path, resp.status, data)
        return json.loads(data) if data else None

    def stream(self, path: str, *, query: list[tuple[str, str]], read_timeout: float,
               on_open: Callable[[Any], None] | None = None) -> Iterator[dict[str, Any]]:
        """A watch: one JSON event per line until the server ends it. ``on_open`` gets the raw response, so
        another thread can close it (the informer's stop)."""
        try:
            method, url, headers, body, _ = self._api.param_serialize(
                method="GET", resource_path=path, query_params=query,
                header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
            resp = self._api.call_api(method, url, header_params=headers, body=body,
                                      _request_timeout=(10, read_timeout))
        except ApiException as exc:
            raise self._error("WATCH", path, int(exc.status or 0), exc.body or b"") from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(f"WATCH {path}: {exc}", status=0) from exc
        raw = resp.response
        if on_open is not None:
            on_open(raw)
        try:
            if resp.status != 200:
                raise self._error("WATCH", path, resp.status, raw.read())
            buf = b""
            try:
                for chunk in raw.stream(amt=None, decode_content=True):
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.strip():
                            yield json.loads(line)
            except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
                raise KubeError(f"WATCH {path}: {exc}", status=0) from exc
        finally:
            # Closed, not released: a half-read stream must not go back into the connection pool.
            raw.close()
            raw.release_conn()

    @staticmethod
    def _error(method: str, path: str, status: int, raw: bytes | str) -> KubeError:
        reason, message = "", raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        try:
            payload = json.loads(raw or b"{}")
            reason, message = payload.get("reason", ""), payload.get("message", message)
        except ValueError:
            pass
        return KubeError(f"{method} {path}: {status} {message}", status=status, reason=reason)

    # ------------------------------------------------------------------ verbs

    def get(self, *, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("GET", _path(api_version, kind, namespace, name, None)))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, *, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items = self._call("GET", _path(api_version, kind, namespace, None, None), query=query)["items"]
        # List items come without apiVersion/kind; restore them so items compare like single GETs.
        return [{"apiVersion": api_version, "kind": kind, **item} for item in items]

    def apply(self, obj: dict[str, Any], *, subresource: str | None = None, force: bool = True) -> dict[str, Any]:
        meta = obj["metadata"]
        path = _path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], subresource)
        query = [("fieldManager", FIELD_MANAGER)] + ([("force", "true")] if force else [])
        # JSON is valid YAML, so the apply-patch content type takes JSON, serialized here without ASCII escapes:
        # the client's json.dumps writes an emoji as a UTF-16 surrogate pair (\ud83e\udd99), which the API
        # server's YAML decoder refuses ("found invalid Unicode character escape code"), so a Unicode annotation
        # made every apply of the object fail.
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return dict(self._call("PATCH", path, body=body, query=query, content_type="application/apply-patch+yaml"))

    def patch(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        path = _path(api_version, kind, namespace, name, subresource)
        query = [("fieldManager", FIELD_MANAGER)]
        return dict(self._call("PATCH", path, body=body, query=query, content_type="application/merge-patch+json"))

    def delete(
        self, *, api_version: str, kind: str, namespace: str | None, name: str, uid: str | None = None
    ) -> bool:
        """Delete, dependents in the background; with `uid`, only that very object (a precondition: a newer
        one of the same name is left alone, answered 409)."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", _path(api_version, kind, namespace, name, None), body=body)
        except KubeError as exc:
            if exc.status in (404, 409) and (exc.status == 404 or uid):
                return False
            raise
        return True

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return dict(self._call("POST", _path(obj["apiVersion"], obj["kind"], meta.get("namespace"), None, None),
                               body=obj))
