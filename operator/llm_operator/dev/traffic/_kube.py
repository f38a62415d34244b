"""The emulator's view of the cluster: a list+watch of the operator's model pods.

Which backend a pod runs is read from its revision's model repository (the immutable ConfigMap its
``model-repository`` volume mounts, whose ``config.pbtxt`` names the Triton backend): that is exactly what Triton
would load, and it stays right during a rollout that changes the backend, when the LLMDeployment's spec already
names the new one. Fallbacks, in order: the owning LLMDeployment's ``spec.runtime.backend``, the image name,
``python``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, cast

from llm_operator import api
from llm_operator.api import Backend
from llm_operator.builders import APP_NAME, MANAGER, REVISION_LABEL
from llm_operator.metrics import BACKENDS

from ._model import PodInfo

POD_SELECTOR: Final = f"app.kubernetes.io/managed-by={MANAGER},app.kubernetes.io/name={APP_NAME},{REVISION_LABEL}"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
MODEL_NAME_ANNOTATION: Final = f"{api.GROUP}/model-name"
REPOSITORY_VOLUME: Final = "model-repository"
SERVER_CONTAINER: Final = "triton"

_BACKEND_LINE = re.compile(r'^\s*backend\s*:\s*"([^"]+)"', re.MULTILINE)


def backend_from_repository(files: Mapping[str, str]) -> Backend | None:
    """The backend a Triton model repository (ConfigMap data: key → file text) loads.

    A repository may hold several models (an ensemble with a python pre-processor around a tensorrtllm model):
    the engine backend wins over ``python``."""
    found: set[str] = set()
    for key, text in files.items():
        if key.endswith("config.pbtxt"):
            found.update(_BACKEND_LINE.findall(text))
    for backend in ("tensorrtllm", "vllm", "python"):
        if backend in found:
            return backend
    return None


def backend_from_image(image: str) -> Backend | None:
    """NGC tritonserver image names say the backend (``...-trtllm-python-py3``, ``...-vllm-python-py3``)."""
    name = image.rsplit("/", 1)[-1]
    if "trtllm" in name or "tensorrt" in name:
        return "tensorrtllm"
    if "vllm" in name:
        return "vllm"
    return None


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def repository_configmap(pod: Mapping[str, Any]) -> str | None:
    for vol in pod.get("spec", {}).get("volumes") or []:
        if vol.get("name") == REPOSITORY_VOLUME and vol.get("configMap"):
            name = vol["configMap"].get("name")
            return str(name) if name else None
    return None


def pod_info(pod: Mapping[str, Any], *, backend: Backend, first_seen_ready: float | None) -> PodInfo | None:
    """A PodInfo from a pod object as the API serves it (JSON), or None if it is not a model pod.

    ``ready_since`` is the Ready condition's lastTransitionTime (wall clock), else ``first_seen_ready``."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    revision = labels.get(REVISION_LABEL)
    if not revision:
        return None
    containers = (pod.get("spec") or {}).get("containers") or []
    container = next((c for c in containers if c.get("name") == SERVER_CONTAINER), containers[0] if containers else {})
    ready = False
    ready_since: float | None = None
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
            ready_since = _timestamp(cond.get("lastTransitionTime")) if ready else None
    if ready and ready_since is None:
        ready_since = first_seen_ready
    llmd = labels.get(INSTANCE_LABEL) or str(meta.get("name", ""))
    return PodInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        llmdeployment=llmd,
        revision=str(revision),
        backend=backend,
        image=str(container.get("image", "")),
        model=str((meta.get("annotations") or {}).get(MODEL_NAME_ANNOTATION) or llmd),
        ready=ready,
        ready_since=ready_since,
        terminating=bool(meta.get("deletionTimestamp")),
    )


class KubePodSource:
    """List+watch of model pods across all namespaces, in a background thread."""

    def __init__(
        self,
        *,
        kubeconfig: str | None,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda _msg: None,
        retry_seconds: float = 30.0,
    ) -> None:
        from kubernetes import client, config

        self._api_client = config.new_client_from_config(config_file=kubeconfig)
        self._core = client.CoreV1Api(self._api_client)
        self._custom = client.CustomObjectsApi(self._api_client)
        self._clock = clock
        self._log = log
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._raw: dict[tuple[str, str], dict[str, Any]] = {}
        self._first_seen_ready: dict[tuple[str, str], float] = {}
        self._backends: dict[tuple[str, str], Backend] = {}
        self._misses: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ PodSource

    def pods(self) -> list[PodInfo]:
        with self._lock:
            raw = list(self._raw.items())
        out = []
        for key, pod in raw:
            info = pod_info(pod, backend=self._backend(pod), first_seen_ready=self._first_seen_ready.get(key))
            if info is not None:
                out.append(info)
        return out

    # ------------------------------------------------------------------ backend resolution

    def _backend(self, pod: Mapping[str, Any]) -> Backend:
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        cm = repository_configmap(pod)
        if cm is not None:
            key = (namespace, f"configmap/{cm}")
            if key in self._backends:
                return self._backends[key]
            if self._clock() >= self._misses.get(key, 0.0):
                found = self._read(lambda: self._core.read_namespaced_config_map(cm, namespace).data or {})
                backend = backend_from_repository(found) if isinstance(found, Mapping) else None
                if backend is not None:
                    # Revision ConfigMaps are immutable: the answer never changes.
                    self._backends[key] = backend
                    return backend
                self._misses[key] = self._clock() + self._retry_seconds
        llmd = (meta.get("labels") or {}).get(INSTANCE_LABEL)
        if llmd:
            key = (namespace, f"llmd/{llmd}")
            if self._clock() >= self._misses.get(key, 0.0):
                obj = self._read(lambda: self._custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, llmd))
                spec_backend = ((obj or {}).get("spec") or {}).get("runtime", {}).get("backend", "python") \
                    if isinstance(obj, Mapping) else None
                if spec_backend in BACKENDS:
                    return cast(Backend, spec_backend)
                self._misses[key] = self._clock() + self._retry_seconds
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        return backend_from_image(str(containers[0].get("image", ""))) or "python"

    def _read(self, call: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return call()
        except ApiException as exc:
            self._log(f"read failed ({exc.status} {exc.reason}); falling back")
            return None

    # ------------------------------------------------------------------ list + watch

    def start(self) -> KubePodSource:
        self._thread = threading.Thread(target=self._run, name="traffic-pods", daemon=True)
        self._thread.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # The watch may sit in a socket read for up to its 30 s timeout; the thread is a daemon, so an
            # exiting process does not wait for it.
            self._thread.join(timeout=1)
        self._api_client.close()

    def _list(self) -> str:
        resp: Any = self._core.list_pod_for_all_namespaces(label_selector=POD_SELECTOR, _preload_content=False)
        doc = json.loads(resp.data)
        with self._lock:
            self._raw = {}
            for pod in doc.get("items") or []:
                self._store(pod)
        self._synced.set()
        return str(doc["metadata"]["resourceVersion"])

    def _store(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        self._raw[key] = pod
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (pod.get("status") or {}).get("conditions") or [])
        if ready:
            self._first_seen_ready.setdefault(key, self._clock())
        else:
            self._first_seen_ready.pop(key, None)

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            try:
                version = self._list()
                w = watch.Watch()
                for event in w.stream(self._core.list_pod_for_all_namespaces, label_selector=POD_SELECTOR,
                                      resource_version=version, timeout_seconds=30, allow_watch_bookmarks=True):
                    if self._stop.is_set():
                        w.stop()
                        break
                    kind, obj = event["type"], event["raw_object"]
                    if kind == "BOOKMARK":
                        continue
                    if kind == "ERROR":
                        break  # usually 410 Gone: relist
                    meta = obj.get("metadata") or {}
                    key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
                    with self._lock:
                        if kind == "DELETED":
                            self._raw.pop(key, None)
                            self._first_seen_ready.pop(key, None)
                        else:
                            self._store(obj)
            except ApiException as exc:
                self._log(f"pod watch: {exc.status} {exc.reason}; relisting")
                self._stop.wait(1.0)
            except Exception as exc:
                # The watch must outlive transport errors: log, then relist.
                self._log(f"pod watch: {type(exc).__name__}: {exc}; relisting")
                self._stop.wait(1.0)
