"""The emulator process: the model behind a lock, a pod source, and an HTTP server for metrics and control.

Endpoints (JSON bodies use camelCase keys; unknown keys are refused with 400):

* ``GET /metrics``: every started pod's backend series (Prometheus text format).
* ``GET /healthz``: ``ok``.
* ``GET /state``: loads, capacities, behaviours and every pod's model state.
* ``PUT /load`` ``{"namespace", "name", "rps", "promptTokens"?, "outputTokens"?}``: an LLMDeployment's offered load.
* ``PUT /capacity`` ``{"namespace", "name", "tokensPerSecond"?, "batchSlots"?, "prefillTokensPerSecond"?,
  "kvCacheTokens"?, "maxQueue"?}``: what each of its pods can do.
* ``PUT /behaviour`` ``{"revision" | "imageTagSuffix", "behaviour": NAME | {"name"?, "ttftFactor"?, "itlFactor"?,
  "errorRatio"?} | null}``: how pods of a revision (or whose image tag ends so) behave.
* ``PUT /slo`` ``{"namespace", "name", "ttftSeconds"}``: count an LLMDeployment's requests against a TTFT SLO
  from now on (its tally in ``GET /state`` starts again).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import yaml

from ._exposition import CONTENT_TYPE, Exported, render
from ._model import Behaviour, Capacity, PodInfo, TrafficModel


class PodSource(Protocol):
    """Where the emulator learns which model pods exist (the Kubernetes API, or a fake in tests)."""

    def pods(self) -> list[PodInfo]: ...


class ControlError(ValueError):
    """A control request is invalid; the message says which field and why."""


_LOAD_KEYS = {"namespace", "name", "rps", "promptTokens", "outputTokens"}
_CAPACITY_KEYS = {"namespace", "name", "tokensPerSecond", "batchSlots", "prefillTokensPerSecond", "kvCacheTokens",
                  "maxQueue"}
_BEHAVIOUR_KEYS = {"revision", "imageTagSuffix", "behaviour"}
_BEHAVIOUR_FIELDS = {"name", "ttftFactor", "itlFactor", "errorRatio"}
_SLO_KEYS = {"namespace", "name", "ttftSeconds"}


def _check_keys(body: Mapping[str, Any], allowed: set[str], what: str) -> None:
    if not isinstance(body, Mapping):
        raise ControlError(f"{what}: the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ControlError(f"{what}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _string(body: Mapping[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ControlError(f"{what}: {key} must be a non-empty string")
    return value


def _number(body: Mapping[str, Any], key: str, what: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"{what}: {key} must be a number, got {value!r}")
    return float(value)


class Emulator:
    """Ties the model, the pod source and the clock together; every method is thread-safe."""

    def __init__(self, *, model: TrafficModel, source: PodSource, clock: Callable[[], float]) -> None:
        self.model = model
        self.source = source
        self.clock = clock
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Take the source's pods and advance the model to now."""
        pods = self.source.pods()
        with self._lock:
            self.model.sync_pods(pods)
            self.model.advance(to=self.clock())

    # ------------------------------------------------------------------ reads

    def metrics_text(self) -> str:
        self.refresh()
        with self._lock:
            exported = []
            for state in self.model.exporting():
                cap = self.model.capacity_of(namespace=state.info.namespace, name=state.info.llmdeployment)
                exported.append(Exported(state=state, batch_slots=cap.batch_slots, kv_cache_tokens=cap.kv_cache_tokens))
            return render(exported)

    def state(self) -> dict[str, Any]:
        self.refresh()
        with self._lock:
            m = self.model
            pods = []
            for view in m.views():
                s, info = view.state, view.state.info
                pods.append({
                    "namespace": info.namespace,
                    "pod": info.name,
                    "llmdeployment": info.llmdeployment,
                    "revision": info.revision,
                    "backend": info.backend,
                    "image": info.image,
                    "model": info.model,
                    "ready": info.ready,
                    "terminating": info.terminating,
                    "started": view.started,
                    "serving": view.serving,
                    "exporting": view.exporting,
                    "behaviour": view.behaviour,
                    "arrivalRps": s.arrival_rps,
                    "queueDepth": s.queue,
                    "runningRequests": s.running,
                    "generationTokensPerSecond": s.generation_tps,
                    "kvCacheUtilization": s.kv_cache_utilization,
                    "cpuUtilization": s.cpu_utilization,
                    "ttftSeconds": s.last_ttft,
                    "interTokenLatencySeconds": s.last_itl,
                    "finished": s.finished,
                    "failed": s.failed,
                    "rejected": s.rejected,
                })
            return {
                "time": m.now,
                "startupDelaySeconds": m.startup_delay,
                "loads": [
                    {"namespace": ns, "name": name, "rps": ld.rps, "promptTokens": ld.prompt_tokens,
                     "outputTokens": ld.output_tokens}
                    for (ns, name), ld in sorted(m.loads.items())
                ],
                "capacities": [
                    {"namespace": ns, "name": name, **_capacity_json(c)}
                    for (ns, name), c in sorted(m.capacities.items())
                ],
                "defaultCapacity": _capacity_json(m.default_capacity),
                "behaviours": {name: _behaviour_json(b) for name, b in sorted(m.behaviours.items())},
                "revisionBehaviours": dict(sorted(m.revision_behaviours.items())),
                "imageTagSuffixBehaviours": dict(sorted(m.image_tag_suffixes.items())),
                "pods": pods,
                "llmdeployments": [
                    {"namespace": ns, "name": name, "ttftSloSeconds": t.ttft_slo_seconds, "arrived": t.arrived,
                     "unserved": t.unserved, "admitted": t.admitted, "rejected": t.rejected, "ttftMet": t.ttft_met,
                     "ttftMetShare": t.ttft_met_share}
                    for (ns, name), t in sorted(m.tallies.items())
                ],
            }

    # ------------------------------------------------------------------ control

    def put_load(self, body: Mapping[str, Any]) -> dict[str, Any]:
        what = "PUT /load"
        _check_keys(body, _LOAD_KEYS, what)
        namespace, name = _string(body, "namespace", what), _string(body, "name", what)
        changes = {
            "rps": _number(body, "rps", what),
            "prompt_tokens": _number(body, "promptTokens", what),
            "output_tokens": _number(body, "outputTokens", what),
        }
        self.refresh()
        with self._lock:
            current = self.model.load_of(namespace=namespace, name=name)
            try:
                load = replace(current, **{k: v for k, v in changes.items() if v is not None})
            except ValueError as exc:
                raise ControlError(f"{what}: {exc}") from None
            self.model.set_load(namespace=namespace, name=name, load=load)
        return {"namespace": namespace, "name": name, "rps": load.rps, "promptTokens": load.prompt_tokens,
                "outputTokens": load.output_tokens}

    def put_capacity(self, body: Mapping[str, Any]) -> dict[str, Any]:
        what = "PUT /capacity"
        _check_keys(body, _CAPACITY_KEYS, what)
        namespace, name = _string(body, "namespace", what), _string(body, "name", what)
        changes: dict[str, Any] = {
            "tokens_per_second": _number(body, "tokensPerSecond", what),
            "prefill_tokens_per_second": _number(body, "prefillTokensPerSecond", what),
            "kv_cache_tokens": _number(body, "kvCacheTokens", what),
        }
        for key, field_name in (("batchSlots", "batch_slots"), ("maxQueue", "max_queue")):
            value = _number(body, key, what)
            if value is not None:
                if value != int(value):
                    raise ControlError(f"{what}: {key} must be an integer, got {value}")
                changes[field_name] = int(value)
        self.refresh()
        with self._lock:
            current = self.model.capacity_of(namespace=namespace, name=name)
            try:
                capacity = replace(current, **{k: v for k, v in changes.items() if v is not None})
            except ValueError as exc:
                raise ControlError(f"{what}: {exc}") from None
            self.model.set_capacity(namespace=namespace, name=name, capacity=capacity)
        return {"namespace": namespace, "name": name, **_capacity_json(capacity)}

    def put_behaviour(self, body: Mapping[str, Any]) -> dict[str, Any]:
        what = "PUT /behaviour"
        _check_keys(body, _BEHAVIOUR_KEYS, what)
        if "behaviour" not in body:
            raise ControlError(f"{what}: behaviour is required (a name, an object, or null)")
        revision = body.get("revision")
        suffix = body.get("imageTagSuffix")
        if (revision is None) == (suffix is None):
            raise ControlError(f"{what}: give exactly one of revision and imageTagSuffix")
        target = _string(body, "revision" if revision is not None else "imageTagSuffix", what)
        spec = body["behaviour"]
        self.refresh()
        with self._lock:
            name: str | None
            if spec is None or isinstance(spec, str):
                name = spec
            elif isinstance(spec, Mapping):
                _check_keys(spec, _BEHAVIOUR_FIELDS, f"{what} behaviour")
                name = spec.get("name") or f"custom:{target}"
                if not isinstance(name, str):
                    raise ControlError(f"{what}: behaviour.name must be a string")
                fields = {
                    "ttft_factor": _number(spec, "ttftFactor", what),
                    "itl_factor": _number(spec, "itlFactor", what),
                    "error_ratio": _number(spec, "errorRatio", what),
                }
                try:
                    behaviour = Behaviour(**{k: v for k, v in fields.items() if v is not None})
                except ValueError as exc:
                    raise ControlError(f"{what}: {exc}") from None
                self.model.define_behaviour(name=name, behaviour=behaviour)
            else:
                raise ControlError(f"{what}: behaviour must be a name, an object or null")
            try:
                if revision is not None:
                    self.model.assign_behaviour(behaviour=name, revision=target)
                else:
                    self.model.assign_behaviour(behaviour=name, image_tag_suffix=target)
            except ValueError as exc:
                raise ControlError(f"{what}: {exc}") from None
            defined = self.model.behaviours.get(name) if name else None
        key = "revision" if revision is not None else "imageTagSuffix"
        return {key: target, "behaviour": name, "definition": _behaviour_json(defined) if defined else None}

    def put_slo(self, body: Mapping[str, Any]) -> dict[str, Any]:
        what = "PUT /slo"
        _check_keys(body, _SLO_KEYS, what)
        namespace, name = _string(body, "namespace", what), _string(body, "name", what)
        seconds = _number(body, "ttftSeconds", what)
        if seconds is None:
            raise ControlError(f"{what}: ttftSeconds is required")
        self.refresh()
        with self._lock:
            try:
                self.model.set_ttft_slo(namespace=namespace, name=name, seconds=seconds)
            except ValueError as exc:
                raise ControlError(f"{what}: {exc}") from None
        return {"namespace": namespace, "name": name, "ttftSeconds": seconds}

    def apply_config(self, doc: Mapping[str, Any]) -> None:
        """Apply a control file: ``{"loads": [...], "capacities": [...], "behaviours": [...], "slos": [...]}``
        with the same bodies as PUT /load, /capacity, /behaviour and /slo."""
        _check_keys(doc, {"loads", "capacities", "behaviours", "slos"}, "control file")
        for body in doc.get("capacities") or []:
            self.put_capacity(body)
        for body in doc.get("slos") or []:
            self.put_slo(body)
        for body in doc.get("behaviours") or []:
            self.put_behaviour(body)
        for body in doc.get("loads") or []:
            self.put_load(body)


def _capacity_json(c: Capacity) -> dict[str, Any]:
    return {"tokensPerSecond": c.tokens_per_second, "batchSlots": c.batch_slots,
            "prefillTokensPerSecond": c.prefill_tokens_per_second, "kvCacheTokens": c.kv_cache_tokens,
            "maxQueue": c.max_queue}


def _behaviour_json(b: Behaviour) -> dict[str, float]:
    d = asdict(b)
    return {"ttftFactor": d["ttft_factor"], "itlFactor": d["itl_factor"], "errorRatio": d["error_ratio"]}


class ControlFile:
    """A control file applied at start and again whenever its modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None

    def poll(self, emulator: Emulator) -> bool:
        """Apply the file if it changed since the last poll; True when it was applied."""
        mtime = self.path.stat().st_mtime
        if mtime == self._mtime:
            return False
        doc = yaml.safe_load(self.path.read_text()) or {}
        emulator.apply_config(doc)
        self._mtime = mtime
        return True


def _handler(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "llmops-traffic-emulator"

        def log_message(self, format: str, *args: Any) -> None:
            # Prometheus scrapes every few seconds; access logs would drown everything else.
            return

        def _send(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, doc: Any) -> None:
            self._send(status, json.dumps(doc, indent=1, sort_keys=True) + "\n", "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, emulator.metrics_text(), CONTENT_TYPE)
            elif path == "/healthz":
                self._send(HTTPStatus.OK, "ok\n", "text/plain")
            elif path == "/state":
                self._json(HTTPStatus.OK, emulator.state())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {path}: use /metrics, /healthz, /state"})

        def do_PUT(self) -> None:
            path = self.path.split("?", 1)[0]
            actions: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
                "/load": emulator.put_load,
                "/capacity": emulator.put_capacity,
                "/behaviour": emulator.put_behaviour,
                "/slo": emulator.put_slo,
            }
            action = actions.get(path)
            if action is None:
                self._json(HTTPStatus.NOT_FOUND,
                           {"error": f"no such endpoint {path}: PUT /load, /capacity, /behaviour, /slo"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"})
                return
            try:
                self._json(HTTPStatus.OK, action(body))
            except ControlError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

    return Handler


class TrafficServer:
    """The HTTP server plus a ticker that keeps the model and the pod list current between scrapes."""

    def __init__(
        self,
        *,
        emulator: Emulator,
        host: str = "127.0.0.1",
        port: int = 0,
        tick_seconds: float = 1.0,
        control_file: ControlFile | None = None,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.emulator = emulator
        self.httpd = ThreadingHTTPServer((host, port), _handler(emulator))
        self.httpd.daemon_threads = True
        self.tick_seconds = tick_seconds
        self.control_file = control_file
        self.log = log
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> TrafficServer:
        if self.control_file is not None:
            self.control_file.poll(self.emulator)
        self.emulator.refresh()
        for target, name in ((self._serve, "traffic-http"), (self._tick, "traffic-tick")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _serve(self) -> None:
        # A short poll interval so that stop() returns promptly.
        self.httpd.serve_forever(poll_interval=0.1)

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                if self.control_file is not None and self.control_file.poll(self.emulator):
                    self.log(f"applied {self.control_file.path}")
                self.emulator.refresh()
            except (OSError, ValueError, yaml.YAMLError) as exc:
                self.log(f"tick: {exc}")

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> TrafficServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
