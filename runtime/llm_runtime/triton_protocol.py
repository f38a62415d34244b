"""How the OpenAI front talks to each Triton backend: the input tensors it sends, and how it reads a response.

One front serves every backend the operator deploys, so clients see the same OpenAI API whatever runs
behind it. Each backend names its tensors differently:

- ``python`` (this project's ``llm_runtime`` model): text in, text out, token counts and finish reason as
  outputs.
- ``vllm`` (Triton's vLLM backend): ``text_input``, ``stream``, ``exclude_input_in_output`` and a JSON
  ``sampling_parameters`` string; ``text_output`` (the delta when streaming), and, when asked with the
  ``return_*`` inputs, ``finish_reason``, ``num_input_tokens`` and ``num_output_tokens``.
- ``tensorrtllm`` (the ``tensorrt_llm`` model of TensorRT-LLM's inflight-batching repository, which the
  operator renders): token ids in, token ids out. The front tokenizes the prompt and detokenizes the output
  with the model's tokenizer, and applies stop strings itself.

Pure: building inputs and reading outputs never touches the network, so every protocol is unit-tested
without a Triton server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from llm_runtime.detok import TextStream

BackendName = Literal["python", "vllm", "tensorrtllm"]
BACKENDS: tuple[BackendName, ...] = ("python", "vllm", "tensorrtllm")

# TensorRT-LLM needs an output length on every request; chat requests without max_tokens get this many.
TRTLLM_DEFAULT_MAX_TOKENS = 1024


@dataclass
class Chunk:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass
class GenParams:
    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    stop: list[str]
    seed: int | None
    ignore_eos: bool


@dataclass(frozen=True)
class Tensor:
    name: str
    data: np.ndarray[Any, Any]
    datatype: str


class Result(Protocol):
    """What the front reads from a Triton response (tritonclient's InferResult satisfies it)."""

    def as_numpy(self, name: str) -> np.ndarray[Any, Any] | None: ...


@dataclass
class Reply:
    """One Triton response read: the chunk to send, and whether Triton has ended the request."""

    chunk: Chunk
    final: bool


Decoder = Callable[[Result, bool], Reply]
"""Reads one response; the flag says whether Triton marked it as the request's last one."""


class TritonProtocol(Protocol):
    def inputs(self, *, prompt: str, params: GenParams, stream: bool) -> list[Tensor]: ...

    def decoder(self, *, prompt: str, params: GenParams, stream: bool) -> Decoder: ...


def _str(result: Result, name: str) -> str | None:
    arr = result.as_numpy(name)
    if arr is None or arr.size == 0:
        return None
    v = arr.reshape(-1)[0]
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)


def _int(result: Result, name: str) -> int | None:
    arr = result.as_numpy(name)
    if arr is None or arr.size == 0:
        return None
    return int(arr.reshape(-1)[0])


class PythonProtocol:
    """This project's python model (runtime/llm_runtime/triton_model.py)."""

    def inputs(self, *, prompt: str, params: GenParams, stream: bool) -> list[Tensor]:
        out = [
            Tensor("text_input", np.array([prompt.encode("utf-8")], dtype=np.object_), "BYTES"),
            Tensor("temperature", np.array([params.temperature], dtype=np.float32), "FP32"),
            Tensor("top_p", np.array([params.top_p], dtype=np.float32), "FP32"),
            Tensor("top_k", np.array([params.top_k], dtype=np.int32), "INT32"),
            Tensor("stream", np.array([stream], dtype=bool), "BOOL"),
            Tensor("ignore_eos", np.array([params.ignore_eos], dtype=bool), "BOOL"),
        ]
        if params.max_tokens is not None:
            out.append(Tensor("max_tokens", np.array([params.max_tokens], dtype=np.int32), "INT32"))
        if params.seed is not None:
            out.append(Tensor("seed", np.array([params.seed], dtype=np.int64), "INT64"))
        if params.stop:
            out.append(Tensor("stop", np.array([s.encode() for s in params.stop], dtype=np.object_), "BYTES"))
        return out

    def decoder(self, *, prompt: str, params: GenParams, stream: bool) -> Decoder:
        def read(result: Result, final: bool) -> Reply:
            reason = _str(result, "finish_reason") or None
            chunk = Chunk(
                text=_str(result, "text_output") or "",
                finish_reason=reason,
                prompt_tokens=_int(result, "prompt_tokens") or 0,
                completion_tokens=_int(result, "completion_tokens") or 0,
            )
            # The model sends its finish reason on its last response; Triton 2.51 leaks a request that is
            # cancelled after it finished, so this, not the final flag alone, ends the request.
            return Reply(chunk, final or bool(reason))

        return read


class VllmProtocol:
    """Triton's vLLM backend (`model.py` of triton-inference-server/vllm_backend)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @staticmethod
    def sampling_parameters(params: GenParams) -> dict[str, Any]:
        sp: dict[str, Any] = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            # vLLM disables top-k with -1; the OpenAI-side 0 means the same.
            "top_k": params.top_k if params.top_k > 0 else -1,
            "ignore_eos": params.ignore_eos,
        }
        if params.max_tokens is not None:
            sp["max_tokens"] = params.max_tokens
        if params.seed is not None:
            sp["seed"] = params.seed
        if params.stop:
            sp["stop"] = list(params.stop)
        return sp

    def inputs(self, *, prompt: str, params: GenParams, stream: bool) -> list[Tensor]:
        def flag(name: str, value: bool) -> Tensor:
            return Tensor(name, np.array([value], dtype=bool), "BOOL")

        sp = json.dumps(self.sampling_parameters(params))
        return [
            Tensor("text_input", np.array([prompt.encode("utf-8")], dtype=np.object_), "BYTES"),
            flag("stream", stream),
            flag("exclude_input_in_output", True),
            Tensor("sampling_parameters", np.array([sp.encode()], dtype=np.object_), "BYTES"),
            flag("return_finish_reason", True),
            flag("return_num_input_tokens", True),
            flag("return_num_output_tokens", True),
        ]

    def decoder(self, *, prompt: str, params: GenParams, stream: bool) -> Decoder:
        state = {"completion": 0, "prompt": -1}

        def read(result: Result, final: bool) -> Reply:
            text = _str(result, "text_output") or ""
            reason = _str(result, "finish_reason") or None
            prompt_tokens = _int(result, "num_input_tokens")
            if prompt_tokens is None:
                if state["prompt"] < 0:
                    state["prompt"] = len(self.tokenizer.encode(prompt))
                prompt_tokens = state["prompt"]
            produced = _int(result, "num_output_tokens")
            if produced is None:
                produced = len(self.tokenizer.encode(text, add_special_tokens=False)) if text else 0
            # The backend reports tokens per response: a delta when streaming, the whole answer otherwise.
            state["completion"] = state["completion"] + produced if stream else produced
            chunk = Chunk(text, reason, prompt_tokens, state["completion"])
            return Reply(chunk, final or bool(reason))

        return read


class TrtllmProtocol:
    """The `tensorrt_llm` model of TensorRT-LLM's inflight-batching repository (operator/llm_operator/
    builders/repository.py renders its config): token ids in and out."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def _end_id(self) -> int:
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return int(eos) if eos is not None else 0

    def _prompt_ids(self, prompt: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(prompt)]

    def inputs(self, *, prompt: str, params: GenParams, stream: bool) -> list[Tensor]:
        ids = self._prompt_ids(prompt)
        end_id = self._end_id()
        pad = getattr(self.tokenizer, "pad_token_id", None)

        def one(name: str, value: Any, dtype: Any, datatype: str) -> Tensor:
            # The model has max_batch_size > 0: every tensor carries a leading batch dimension of 1.
            return Tensor(name, np.array([[value]], dtype=dtype), datatype)

        out = [
            Tensor("input_ids", np.array([ids], dtype=np.int32), "INT32"),
            one("input_lengths", len(ids), np.int32, "INT32"),
            one("request_output_len", params.max_tokens or TRTLLM_DEFAULT_MAX_TOKENS, np.int32, "INT32"),
            # ignore_eos: an end id no token has, so generation runs to request_output_len.
            one("end_id", -1 if params.ignore_eos else end_id, np.int32, "INT32"),
            one("pad_id", int(pad) if pad is not None else end_id, np.int32, "INT32"),
            one("streaming", stream, bool, "BOOL"),
            one("exclude_input_in_output", True, bool, "BOOL"),
            one("temperature", params.temperature, np.float32, "FP32"),
            one("runtime_top_p", params.top_p, np.float32, "FP32"),
        ]
        if params.top_k > 0:
            out.append(one("runtime_top_k", params.top_k, np.int32, "INT32"))
        if params.seed is not None:
            out.append(one("random_seed", params.seed, np.uint64, "UINT64"))
        return out

    def decoder(self, *, prompt: str, params: GenParams, stream: bool) -> Decoder:
        text = TextStream(tokenizer=self.tokenizer, stop=tuple(params.stop))
        prompt_tokens = len(self._prompt_ids(prompt))
        limit = params.max_tokens or TRTLLM_DEFAULT_MAX_TOKENS
        end_id = None if params.ignore_eos else self._end_id()
        state = {"n": 0}

        def read(result: Result, final: bool) -> Reply:
            ids = result.as_numpy("output_ids")
            lengths = result.as_numpy("sequence_length")
            new: list[int] = []
            if ids is not None:
                flat = ids.reshape(-1, ids.shape[-1])[0] if ids.ndim > 1 else ids.reshape(-1)
                n = int(lengths.reshape(-1)[0]) if lengths is not None and lengths.size else flat.shape[0]
                new = [int(t) for t in flat[:n]]
            delta = ""
            ended_by_eos = False
            for t in new:
                if end_id is not None and t == end_id:
                    ended_by_eos = True
                    break
                state["n"] += 1
                delta += text.add(t)
                if text.stopped:
                    break
            reason: str | None = None
            if text.stopped or ended_by_eos:
                reason = "stop"
            elif state["n"] >= limit:
                reason = "length"
            elif final:
                reason = "stop"
            if reason is not None:
                delta += text.finish()
            chunk = Chunk(delta, reason, prompt_tokens, state["n"])
            # A stop string ends the request here although TensorRT-LLM would go on: not final, so the
            # front cancels the Triton request and frees its slot.
            return Reply(chunk, final)

        return read


def protocol_for(backend: str, tokenizer: Any) -> TritonProtocol:
    if backend == "python":
        return PythonProtocol()
    if backend == "vllm":
        return VllmProtocol(tokenizer)
    if backend == "tensorrtllm":
        return TrtllmProtocol(tokenizer)
    raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
