"""The continuous-batching engine on a tiny random-weight model, in-process (no Triton)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from llm_runtime.detok import TextStream
from llm_runtime.engine import Engine, GenerationEvent, Request
from llm_runtime.errors import BadRequestError, OverloadedError
from llm_runtime.sampling import SamplingParams


class Collector:
    def __init__(self) -> None:
        self.events: list[GenerationEvent] = []
        self.done = threading.Event()

    def __call__(self, ev: GenerationEvent) -> None:
        self.events.append(ev)
        if ev.finished:
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events)

    @property
    def last(self) -> GenerationEvent:
        return self.events[-1]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[Engine]:
    eng = Engine.load(tiny_model_dir, max_batch_size=8, max_queue_size=4)
    eng.start()
    yield eng
    eng.stop(timeout_s=10)


def submit(eng: Engine, prompt: str, params: SamplingParams) -> Collector:
    col = Collector()
    eng.submit(Request(request_id=prompt, prompt_ids=eng.tokenize(prompt), params=params, on_event=col))
    return col


def wait_all(cols: list[Collector], timeout: float = 60) -> None:
    for c in cols:
        assert c.done.wait(timeout), "request did not finish"


GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
PROMPTS = ["Hello world", "The quick brown fox jumps", "a", "Once upon a time, in a land far away"]


def test_batched_greedy_output_equals_solo_and_transformers_generate(engine: Engine) -> None:
    solo = []
    for p in PROMPTS:
        c = submit(engine, p, GREEDY)
        wait_all([c])
        solo.append(c.text)
    batched = [submit(engine, p, GREEDY) for p in PROMPTS]
    wait_all(batched)
    assert [c.text for c in batched] == solo
    assert all(c.last.finish_reason == "length" and c.last.completion_tokens == 24 for c in batched)
    # Reference: transformers' own greedy generate on the same weights.
    ids = engine.tokenizer(PROMPTS[1], return_tensors="pt").to(engine.device)
    ref = engine.model.generate(**ids, max_new_tokens=24, min_new_tokens=24, do_sample=False)
    expected = engine.tokenizer.decode(ref[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert solo[1] == expected


def test_requests_join_a_running_batch(engine: Engine) -> None:
    engine.drain_samples()
    long = submit(engine, "long running", SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True))
    deadline = time.monotonic() + 10
    while engine.stats().running < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    late = [submit(engine, f"late {i}", GREEDY) for i in range(3)]
    wait_all([long, *late])
    _, _, batch_sizes = engine.drain_samples()
    assert max(batch_sizes) >= 2, f"late requests never shared a decode step: {batch_sizes}"
    # Joining must not change what the long request generates.
    again = submit(engine, "long running", SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True))
    wait_all([again])
    assert again.text == long.text


def test_seed_reproduces_sampled_output_and_different_seeds_differ(engine: Engine) -> None:
    params = SamplingParams(max_tokens=40, temperature=1.0, top_p=0.95, top_k=100, seed=1234, ignore_eos=True)
    a, b = submit(engine, "Tell me", params), submit(engine, "Tell me", params)
    other = submit(engine, "Tell me", SamplingParams(max_tokens=40, temperature=1.0, seed=99, ignore_eos=True))
    wait_all([a, b, other])
    assert a.text == b.text
    assert a.text != other.text


def test_stop_string_ends_generation_and_is_not_returned(engine: Engine) -> None:
    free = submit(engine, "stop test", GREEDY)
    wait_all([free])
    text = free.text
    stop = text[5:7]  # a string that greedy decoding is known to produce
    assert len(stop) == 2
    c = submit(engine, "stop test", SamplingParams(max_tokens=24, temperature=0.0, stop=(stop,), ignore_eos=True))
    wait_all([c])
    assert c.last.finish_reason == "stop"
    assert c.text == text[: text.index(stop)]


def test_cancel_frees_the_slot_at_once(engine: Engine) -> None:
    c = Collector()
    req = Request(
        request_id="cancel-me",
        prompt_ids=engine.tokenize("cancel me"),
        params=SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True),
        on_event=c,
    )
    before = engine.stats().generation_tokens_total
    engine.submit(req)
    deadline = time.monotonic() + 10
    while req.generated < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    at_cancel = req.generated
    req.cancel()
    assert c.done.wait(5)
    assert c.last.finish_reason == "cancelled"
    # "At once": at most the step that was running when cancel() was called (and one that ended between
    # reading the count and cancelling) adds a token; no step after that samples for it.
    assert at_cancel >= 3
    assert c.last.completion_tokens <= at_cancel + 2, (at_cancel, c.last.completion_tokens)
    assert engine.stats().generation_tokens_total - before == c.last.completion_tokens
    deadline = time.monotonic() + 2
    while engine.stats().running and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine.stats().running == 0


def test_queue_full_is_refused_with_retry_hint(tiny_model_dir: Path) -> None:
    eng = Engine.load(tiny_model_dir, max_batch_size=1, max_queue_size=2)
    # Not started yet, so nothing leaves the queue while we fill it.
    slow = SamplingParams(max_tokens=300, temperature=0.0, ignore_eos=True)
    cols = [submit(eng, f"q{i}", slow) for i in range(2)]
    with pytest.raises(OverloadedError, match=r"queue is full .* retry after 1s") as info:
        submit(eng, "one too many", slow)
    assert info.value.http_status == 503
    assert eng.stats().rejected_total == 1 and eng.stats().queue_depth == 2
    eng.start()
    wait_all(cols)  # the admitted ones are served
    assert all(c.last.completion_tokens == 300 for c in cols)
    eng.stop(timeout_s=5)


def test_queue_timeout_refuses_a_waiting_request_without_waiting_for_a_slot(tiny_model_dir: Path) -> None:
    eng = Engine.load(tiny_model_dir, max_batch_size=1, max_queue_size=4, queue_timeout_s=60.0)
    eng.start()
    try:
        long = submit(eng, "long", SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True))
        deadline = time.monotonic() + 10
        while not long.events and time.monotonic() < deadline:
            time.sleep(0.001)
        # A request that arrived two minutes ago has waited past the 60 s limit; one that arrives now has not.
        stale = Collector()
        eng.submit(
            Request(
                request_id="stale",
                prompt_ids=eng.tokenize("stale"),
                params=GREEDY,
                on_event=stale,
                arrival=time.monotonic() - 120,
            )
        )
        fresh = submit(eng, "fresh", GREEDY)
        assert stale.done.wait(30)
        assert not long.done.is_set(), "the refusal waited for the batch slot to free"
        assert stale.last.finish_reason == "error" and stale.last.completion_tokens == 0
        assert isinstance(stale.last.error, OverloadedError) and stale.last.error.http_status == 503
        assert "waited more than 60.0s in the queue" in str(stale.last.error)
        wait_all([long, fresh])
        assert fresh.last.finish_reason == "length" and fresh.last.completion_tokens == 24
        assert eng.stats().rejected_total == 1 and eng.stats().failed_total == 0  # refused, not failed: counted once
    finally:
        eng.stop(timeout_s=10)


@pytest.mark.parametrize(
    ("prompt", "params", "message"),
    [
        ("", SamplingParams(), "empty"),
        ("x" * 600, SamplingParams(), "context window is 512"),
        ("hi", SamplingParams(max_tokens=10_000), "max_tokens can be at most 510"),
        ("hi", SamplingParams(max_tokens=0), "max_tokens must be a positive integer"),
        ("hi", SamplingParams(temperature=-1.0), "temperature must be between 0 and 100"),
        ("hi", SamplingParams(top_p=0.0), r"top_p must be in \(0, 1\]"),
        ("hi", SamplingParams(top_k=-2), "top_k must be >= 0"),
    ],
)
def test_bad_requests_name_the_field(engine: Engine, prompt: str, params: SamplingParams, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        submit(engine, prompt, params)


class ByteTokenizer:
    """Decodes ids as raw bytes, like the byte-level tokenizer, to test UTF-8 hold-back."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def test_text_stream_holds_back_partial_utf8_and_stop_prefixes() -> None:
    s = TextStream(tokenizer=ByteTokenizer(), stop=("END",))
    out = [s.add(b) for b in "héllo E".encode()]
    assert "".join(out) == "héllo "  # 'E' may start 'END'; the first byte of 'é' waits for the second
    assert out[1] == ""
    assert s.add(ord("N")) == ""
    assert s.add(ord("D")) == ""
    assert s.stopped and s.text == "héllo "
    t = TextStream(tokenizer=ByteTokenizer(), stop=("END",))
    assert "".join(t.add(b) for b in b"xE") == "x"
    assert t.finish() == "E"


def test_a_failed_step_fails_its_requests_and_the_engine_keeps_serving(tiny_model_dir: Path) -> None:
    eng = Engine.load(tiny_model_dir, max_batch_size=4, max_queue_size=4)
    real_forward = eng.model.forward
    calls = {"n": 0}

    def fail_once(*args: object, **kwargs: object) -> object:
        # Fault injection: the first forward pass fails the way a GPU out-of-memory error would.
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated out of memory")
        return real_forward(*args, **kwargs)

    eng.model.forward = fail_once
    eng.start()
    try:
        first = submit(eng, "unlucky", GREEDY)
        wait_all([first])
        assert first.last.finish_reason == "error"
        assert first.last.error is not None and "simulated out of memory" in str(first.last.error)
        assert first.last.error.http_status == 500
        assert eng.stats().failed_total == 1  # exported as llm_requests_failed_total (the error-rate input)
        assert eng.stats().finished_total == 1  # failed is a part of finished (the recording rules rely on it)
        second = submit(eng, "lucky", GREEDY)
        wait_all([second])
        assert second.last.finish_reason == "length" and second.last.completion_tokens == 24
        assert eng.stats().failed_total == 1
    finally:
        eng.stop(timeout_s=5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
def test_engine_on_cuda_batches_like_solo_and_matches_generate(tiny_model_dir: Path) -> None:
    # The GPU path: the default device is CUDA and dtype "auto" keeps the checkpoint's own dtype there.
    eng = Engine.load(tiny_model_dir, max_batch_size=8, max_queue_size=8)
    assert eng.device.type == "cuda"
    assert next(eng.model.parameters()).dtype == torch.float32  # the tiny checkpoint is saved in float32
    assert not torch.backends.cuda.cudnn_sdp_enabled()  # a plan per KV length made decoding slow
    eng.start()
    try:
        solo = []
        for p in PROMPTS:
            c = submit(eng, p, GREEDY)
            wait_all([c])
            solo.append(c.text)
        batched = [submit(eng, p, GREEDY) for p in PROMPTS]
        wait_all(batched)
        assert [c.text for c in batched] == solo
        ids = eng.tokenizer(PROMPTS[1], return_tensors="pt").to(eng.device)
        ref = eng.model.generate(**ids, max_new_tokens=24, min_new_tokens=24, do_sample=False)
        assert solo[1] == eng.tokenizer.decode(ref[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        seeded = SamplingParams(max_tokens=24, temperature=1.0, top_k=50, seed=7, ignore_eos=True)
        a, b = submit(eng, "seeded", seeded), submit(eng, "seeded", seeded)
        wait_all([a, b])
        assert a.text == b.text
    finally:
        eng.stop(timeout_s=10)
