"""The Triton python-backend model: decoupled, one response per text delta, continuous batching inside.

Runs inside Triton's python stub process. ``execute`` only validates and enqueues: the engine's scheduler
thread generates, a responder thread sends responses (each send is an IPC round trip, kept off the
scheduler), and a reporter thread publishes the custom metrics.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from llm_runtime import repository as repo
from llm_runtime.engine import Engine, GenerationEvent, Request
from llm_runtime.errors import BadRequestError, OverloadedError, RuntimeRequestError
from llm_runtime.metrics_reporter import MetricsReporter
from llm_runtime.sampling import SamplingParams

log = logging.getLogger("llm_runtime")

# Inputs the model declares (see repository._INPUTS); anything else arriving as a request parameter is a
# client mistake we name rather than ignore.
_KNOWN_INPUTS = frozenset(
    {"text_input", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream", "ignore_eos"}
)
# How often a running request asks Triton whether its client has gone (an IPC round trip each time).
_CANCEL_POLL_S = 0.02


def _error_code(err: RuntimeRequestError) -> Any:
    if isinstance(err, OverloadedError):
        return pb_utils.TritonError.UNAVAILABLE
    if isinstance(err, BadRequestError):
        return pb_utils.TritonError.INVALID_ARG
    return pb_utils.TritonError.INTERNAL


def _scalar(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    arr = tensor.as_numpy()
    if arr.size != 1:
        raise BadRequestError(f"{name} must be a single value, got {arr.size} values")
    return arr.reshape(-1)[0]


def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequestError(f"{name} is not valid UTF-8 (byte {exc.start}): send UTF-8 text") from exc
    return str(value)


def parse_request(request: Any) -> tuple[str, SamplingParams, bool]:
    """Return (prompt, sampling params, stream) or raise BadRequestError naming the field."""
    params = json.loads(request.parameters() or "{}")
    unknown = sorted(k for k in params if k not in _KNOWN_INPUTS and not k.startswith("triton_"))
    if unknown:
        raise BadRequestError(
            f"unknown parameter(s) {', '.join(unknown)}: supported are {', '.join(sorted(_KNOWN_INPUTS))}"
        )
    raw = _scalar(request, "text_input")
    if raw is None:
        raise BadRequestError("text_input is required: send the prompt as text_input")
    prompt = _text(raw, "text_input")
    if not prompt:
        raise BadRequestError("text_input is empty: send a non-empty prompt")
    stop_tensor = pb_utils.get_input_tensor_by_name(request, "stop")
    stop: tuple[str, ...] = ()
    if stop_tensor is not None:
        stop = tuple(_text(s, "stop") for s in stop_tensor.as_numpy().reshape(-1) if len(s))
    max_tokens = _scalar(request, "max_tokens")
    temperature = _scalar(request, "temperature")
    top_p = _scalar(request, "top_p")
    top_k = _scalar(request, "top_k")
    seed = _scalar(request, "seed")
    stream = _scalar(request, "stream")
    ignore_eos = _scalar(request, "ignore_eos")
    sp = SamplingParams(
        max_tokens=None if max_tokens is None else int(max_tokens),
        temperature=1.0 if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        top_k=0 if top_k is None else int(top_k),
        stop=stop,
        seed=None if seed is None else int(seed),
        ignore_eos=bool(ignore_eos) if ignore_eos is not None else False,
    )
    sp.validate()
    return prompt, sp, bool(stream) if stream is not None else False


def _response(text: str, finish_reason: str | None, prompt_tokens: int, completion_tokens: int) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_)),
            pb_utils.Tensor("finish_reason", np.array([(finish_reason or "").encode()], dtype=np.object_)),
            pb_utils.Tensor("prompt_tokens", np.array([prompt_tokens], dtype=np.int32)),
            pb_utils.Tensor("completion_tokens", np.array([completion_tokens], dtype=np.int32)),
        ]
    )


def _error_response(err: RuntimeRequestError) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(err), _error_code(err)))


@dataclass
class _Pending:
    sender: Any
    stream: bool
    text: list[str] = field(default_factory=list)
    last_poll: float = 0.0
    cancelled: bool = False

    def is_cancelled(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.last_poll >= _CANCEL_POLL_S:
            self.last_poll = now
            self.cancelled = bool(self.sender.is_cancelled())
        return self.cancelled


def _check_model_dir(model_dir: str) -> None:
    """Fail the load with one line that says what is wrong with the weights' folder (an empty or unmounted
    volume, a fetch that did not finish), instead of a loader traceback."""
    path = Path(model_dir)
    if not path.is_dir():
        raise pb_utils.TritonModelException(
            f"model directory {model_dir} does not exist: the model volume is not mounted (check spec.model)"
        )
    if not (path / "config.json").is_file():
        found = sorted(p.name for p in path.iterdir())[:10]
        raise pb_utils.TritonModelException(
            f"model directory {model_dir} has no config.json (found: {', '.join(found) or 'nothing'}): the model "
            "volume is empty or the fetch did not finish; it must hold a Hugging Face model folder"
        )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                "llm_runtime needs model_transaction_policy { decoupled: true } in config.pbtxt"
            )
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.exit_timeout_s = float(params.get(repo.PARAM_EXIT_TIMEOUT_S, "30"))
        _check_model_dir(params[repo.PARAM_MODEL_DIR])
        self.engine = Engine.load(
            params[repo.PARAM_MODEL_DIR],
            dtype=params.get(repo.PARAM_DTYPE, "auto"),
            max_batch_size=int(params.get(repo.PARAM_MAX_BATCH_SIZE, "32")),
            max_queue_size=int(params.get(repo.PARAM_MAX_QUEUE_SIZE, "0")),
            queue_timeout_s=int(params.get(repo.PARAM_QUEUE_TIMEOUT_US, "0")) / 1e6,
        )
        self.engine.start()
        self._outbox: queue.SimpleQueue[tuple[Any, Any, int] | None] = queue.SimpleQueue()
        self._responder = threading.Thread(target=self._respond_loop, name="llm-responder", daemon=True)
        self._responder.start()
        self.metrics = MetricsReporter(
            engine=self.engine,
            pb_utils=pb_utils,
            labels={"model": args["model_name"], "version": args["model_version"]},
        )
        self.metrics.start()
        log.info(
            "llm_runtime: serving %s on %s (max batch %d, queue %d, context %d)",
            params[repo.PARAM_MODEL_DIR],
            self.engine.device,
            self.engine.max_batch_size,
            self.engine.max_queue_size,
            self.engine.max_context,
        )

    def _respond_loop(self) -> None:
        while (item := self._outbox.get()) is not None:
            sender, response, flags = item
            try:
                if response is None:
                    sender.send(flags=flags)
                else:
                    sender.send(response, flags=flags)
            except Exception:  # a client that has gone away must not stop responses to everyone else
                log.debug("llm_runtime: dropping a response to a closed request", exc_info=True)
                if flags:
                    # Without the final flag Triton counts the request as in flight forever (and waits
                    # for it at shutdown): send the flag alone.
                    try:
                        sender.send(flags=flags)
                    except Exception:
                        log.debug("llm_runtime: final flag refused", exc_info=True)

    def _on_event(self, pending: _Pending, ev: GenerationEvent) -> None:
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        if ev.error is not None:
            self._outbox.put((pending.sender, _error_response(ev.error), final))
            return
        if pending.stream:
            if ev.finished:
                resp = _response(ev.text, ev.finish_reason, ev.prompt_tokens, ev.completion_tokens)
                self._outbox.put((pending.sender, resp, final))
            elif ev.text:
                resp = _response(ev.text, None, ev.prompt_tokens, ev.completion_tokens)
                self._outbox.put((pending.sender, resp, 0))
            return
        pending.text.append(ev.text)
        if ev.finished:
            if ev.finish_reason == "cancelled":
                self._outbox.put((pending.sender, None, final))
                return
            resp = _response("".join(pending.text), ev.finish_reason, ev.prompt_tokens, ev.completion_tokens)
            self._outbox.put((pending.sender, resp, final))

    def execute(self, requests: list[Any]) -> None:
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            try:
                prompt, params, stream = parse_request(request)
                pending = _Pending(sender=sender, stream=stream)

                def on_event(ev: GenerationEvent, p: _Pending = pending) -> None:
                    self._on_event(p, ev)

                req = Request(
                    request_id=request.request_id() or uuid.uuid4().hex,
                    prompt_ids=self.engine.tokenize(prompt),
                    params=params,
                    on_event=on_event,
                    is_cancelled=pending.is_cancelled,
                )
                self.engine.submit(req)
            except RuntimeRequestError as err:
                self._outbox.put((sender, _error_response(err), final))
            except Exception as exc:  # never leave a request without its final response
                log.exception("llm_runtime: unexpected error while admitting a request")
                self.engine.count_failed()  # answered 500: an error in the canonical vocabulary
                internal = RuntimeRequestError(f"internal error: {exc}")
                self._outbox.put((sender, _error_response(internal), final))
        return None

    def finalize(self) -> None:
        # Triton calls finalize after its own exit timeout has let in-flight requests finish.
        self.metrics.stop()
        self.engine.stop(timeout_s=self.exit_timeout_s)
        self._outbox.put(None)
        self._responder.join(5)
