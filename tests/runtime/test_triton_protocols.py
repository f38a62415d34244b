"""The OpenAI front's per-backend tensor protocols, without a Triton server (the vLLM and TensorRT-LLM images
cannot run here: these check the request tensors against the backends' documented inputs and read
responses shaped as those backends send them)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from llm_runtime.triton_protocol import (
    TRTLLM_DEFAULT_MAX_TOKENS,
    GenParams,
    PythonProtocol,
    TrtllmProtocol,
    VllmProtocol,
    protocol_for,
)


class CharTokenizer:
    """One token per character (ord), eos 0."""

    eos_token_id = 0
    pad_token_id = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i)


class FakeResult:
    def __init__(self, **tensors: Any) -> None:
        self.tensors = {k: np.asarray(v) for k, v in tensors.items()}

    def as_numpy(self, name: str) -> Any:
        return self.tensors.get(name)


def params(**kw: Any) -> GenParams:
    base: dict[str, Any] = dict(
        max_tokens=None, temperature=0.5, top_p=0.9, top_k=0, stop=[], seed=None, ignore_eos=False
    )
    base.update(kw)
    return GenParams(**base)


def by_name(tensors: list[Any]) -> dict[str, Any]:
    return {t.name: t for t in tensors}


def test_vllm_inputs_carry_sampling_parameters_as_json_and_ask_for_counts() -> None:
    proto = VllmProtocol(CharTokenizer())
    t = by_name(proto.inputs(prompt="hi", params=params(max_tokens=7, stop=["\n"], seed=3), stream=True))
    assert t["text_input"].data.tolist() == [b"hi"] and t["text_input"].datatype == "BYTES"
    assert t["stream"].data.tolist() == [True] and t["exclude_input_in_output"].data.tolist() == [True]
    sp = json.loads(t["sampling_parameters"].data[0])
    assert sp == {"temperature": 0.5, "top_p": 0.9, "top_k": -1, "ignore_eos": False, "max_tokens": 7,
                  "seed": 3, "stop": ["\n"]}
    assert {"return_finish_reason", "return_num_input_tokens", "return_num_output_tokens"} <= set(t)


def test_vllm_streaming_deltas_add_up_and_the_finish_reason_ends_the_request() -> None:
    proto = VllmProtocol(CharTokenizer())
    read = proto.decoder(prompt="hello", params=params(), stream=True)
    a = read(FakeResult(text_output=[b"ab"], num_input_tokens=[5], num_output_tokens=[2]), False)
    b = read(FakeResult(text_output=[b"c"], num_input_tokens=[5], num_output_tokens=[1],
                        finish_reason=[b"length"]), False)
    assert (a.chunk.text, a.chunk.completion_tokens, a.final) == ("ab", 2, False)
    assert (b.chunk.text, b.chunk.completion_tokens, b.chunk.finish_reason, b.final) == ("c", 3, "length", True)
    assert b.chunk.prompt_tokens == 5


def test_vllm_without_count_outputs_counts_with_the_tokenizer() -> None:
    read = VllmProtocol(CharTokenizer()).decoder(prompt="four", params=params(), stream=False)
    r = read(FakeResult(text_output=[b"xyz"]), False)
    assert (r.chunk.prompt_tokens, r.chunk.completion_tokens) == (4, 3)


def test_trtllm_inputs_are_token_ids_with_a_batch_dimension() -> None:
    proto = TrtllmProtocol(CharTokenizer())
    t = by_name(proto.inputs(prompt="abc", params=params(top_k=5, seed=9), stream=False))
    assert t["input_ids"].data.tolist() == [[97, 98, 99]] and t["input_ids"].datatype == "INT32"
    assert t["input_lengths"].data.tolist() == [[3]]
    assert t["request_output_len"].data.tolist() == [[TRTLLM_DEFAULT_MAX_TOKENS]]
    assert t["end_id"].data.tolist() == [[0]] and t["pad_id"].data.tolist() == [[0]]
    assert t["runtime_top_k"].data.tolist() == [[5]] and t["random_seed"].datatype == "UINT64"
    assert t["exclude_input_in_output"].data.tolist() == [[True]]
    # Every input the front sends is one the operator's tensorrt_llm config declares.
    from llm_operator import api
    from llm_operator.builders.repository import repository_files

    llmd = api.LLMDeployment.model_validate({
        "apiVersion": "serving.llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "m"},
        "spec": {"model": {"name": "m", "uri": "s3://b/engines"}, "runtime": {"backend": "tensorrtllm"},
                 "resources": {"gpu": {"count": 1}}},
    })
    config = repository_files(llmd)["m/config.pbtxt"]
    for name in t:
        assert f'name: "{name}"' in config, name


def test_trtllm_stream_detokenizes_applies_stop_strings_and_cancels() -> None:
    proto = TrtllmProtocol(CharTokenizer())
    read = proto.decoder(prompt="p", params=params(stop=["END"]), stream=True)
    out = [read(FakeResult(output_ids=[[[ord(c)]]], sequence_length=[[1]]), False) for c in "okEND"]
    text = "".join(r.chunk.text for r in out)
    assert text == "ok"
    assert out[-1].chunk.finish_reason == "stop" and not out[-1].final  # the front cancels the request


def test_trtllm_end_id_and_length_give_finish_reasons() -> None:
    proto = TrtllmProtocol(CharTokenizer())
    read = proto.decoder(prompt="p", params=params(), stream=False)
    r = read(FakeResult(output_ids=[[[104, 105, 0, 0]]], sequence_length=[[3]]), True)
    assert (r.chunk.text, r.chunk.finish_reason, r.chunk.completion_tokens) == ("hi", "stop", 2)
    read = proto.decoder(prompt="p", params=params(max_tokens=2), stream=False)
    r = read(FakeResult(output_ids=[[[104, 105]]], sequence_length=[[2]]), True)
    assert (r.chunk.text, r.chunk.finish_reason) == ("hi", "length")


def test_python_protocol_reads_the_models_outputs() -> None:
    read = PythonProtocol().decoder(prompt="x", params=params(), stream=True)
    r = read(FakeResult(text_output=[b"a"], finish_reason=[b""], prompt_tokens=[1], completion_tokens=[1]), False)
    assert (r.chunk.text, r.chunk.finish_reason, r.final) == ("a", None, False)


def test_unknown_backend_is_named() -> None:
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        protocol_for("onnx", CharTokenizer())
