"""Continuous-batching generation engine: one scheduler thread, one padded running batch.

New requests are prefilled together and merged into the running batch between decode steps; finished or
cancelled ones leave at the next step boundary, freeing their KV rows at once. Sequences are right-aligned
(left padding) so every decode step is one batched forward pass with a 2-D attention mask.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_runtime import kvcache
from llm_runtime.detok import TextStream
from llm_runtime.errors import BadRequestError, OverloadedError, RuntimeRequestError
from llm_runtime.sampling import SamplingParams, sample_batch

log = logging.getLogger(__name__)

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"

# Bounds the padded prefill batch so a burst of long prompts cannot allocate without limit.
_MAX_PREFILL_TOKENS = 8192


@dataclass
class GenerationEvent:
    """One update for a request: a text delta, and on the last one the finish reason and totals."""

    text: str
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    error: RuntimeRequestError | None = None


@dataclass
class Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    on_event: Callable[[GenerationEvent], None]
    is_cancelled: Callable[[], bool] | None = None
    arrival: float = field(default_factory=time.monotonic)
    # Scheduler-thread state.
    max_new: int = 0
    generated: int = 0
    first_token_at: float = 0.0
    last_token_at: float = 0.0
    stream: TextStream | None = None
    generator: torch.Generator | None = None
    done: bool = False
    _cancel: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._cancel.set()

    def cancelled(self) -> bool:
        if self._cancel.is_set():
            return True
        if self.is_cancelled is not None and self.is_cancelled():
            self._cancel.set()
            return True
        return False


@dataclass
class EngineStats:
    queue_depth: int
    running: int
    kv_cache_usage: float
    prompt_tokens_total: int
    generation_tokens_total: int
    rejected_total: int
    finished_total: int
    decode_steps_total: int
    failed_total: int = 0


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_threads() -> int:
    """Intra-op threads for CPU inference: LLM_RUNTIME_TORCH_THREADS, else half the cores.

    Triton, the python stub's IPC and the HTTP front need CPU too; when torch's OpenMP workers compete
    with them they spin and get descheduled, and a decode step of a small model gets 30x slower (measured
    on 2 cores: 178 ms with 2 threads under load, 5 ms with 1).
    """
    env = os.environ.get("LLM_RUNTIME_TORCH_THREADS")
    if env:
        return max(1, int(env))
    # The CPUs this process may run on (taskset, cpusets), not every core of the host.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cores // 2)


def _torch_dtype(dtype: str, device: torch.device) -> torch.dtype | str:
    if dtype == "auto":
        # On a GPU keep the checkpoint's own dtype (bf16 checkpoints can overflow in fp16); many CPU
        # kernels are slow or missing in half precision, so the CPU gets float32.
        return "auto" if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


class Engine:
    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        max_batch_size: int,
        max_queue_size: int,
        queue_timeout_s: float = 0.0,
        max_context: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size if max_queue_size > 0 else 2 * max_batch_size
        self.queue_timeout_s = queue_timeout_s
        cfg = model.config
        self.max_context = int(max_context or getattr(cfg, "max_position_embeddings", 2048) or 2048)
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids: frozenset[int] = frozenset([] if eos is None else ([eos] if isinstance(eos, int) else list(eos)))
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids), 0))
        self._cv = threading.Condition()
        self._waiting: collections.deque[Request] = collections.deque()
        self._stopping = False
        self._abort = False
        self._thread: threading.Thread | None = None
        # Running batch, touched only by the scheduler thread.
        self._rows: list[Request] = []
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self._last = torch.zeros((0,), dtype=torch.long, device=self.device)
        self._pos = torch.zeros((0,), dtype=torch.long, device=self.device)
        # Statistics; histogram samples are drained by the metrics reporter.
        self._lock = threading.Lock()
        self._prompt_tokens = 0
        self._gen_tokens = 0
        self._rejected = 0
        self._finished = 0
        self._failed = 0
        self._steps = 0
        self._ttft: list[float] = []
        self._itl: list[float] = []
        self._batch_sizes: list[int] = []

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        dtype: str = "auto",
        max_batch_size: int = 32,
        max_queue_size: int = 0,
        queue_timeout_s: float = 0.0,
        device: torch.device | None = None,
    ) -> Engine:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or pick_device()
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        elif device.type == "cuda":
            # Every decode step attends over a new KV length, and cuDNN's attention builds an execution plan
            # per shape: on an H100 that made each step several times slower than the flash / memory-efficient
            # kernels, which need no plan (bench/runtime.py --engines: 369 vs 1813 tok/s, docs/runtime.md).
            torch.backends.cuda.enable_cudnn_sdp(False)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=_torch_dtype(dtype, device))
        model = model.to(device)
        model.eval()
        return cls(
            model=model,
            tokenizer=tokenizer,
            max_batch_size=max_batch_size,
            max_queue_size=max_queue_size,
            queue_timeout_s=queue_timeout_s,
        )

    # ---- client side -------------------------------------------------------------------------------

    def tokenize(self, prompt: str) -> list[int]:
        # A prompt rendered by a chat template usually starts with the BOS text already; adding the
        # special tokens again would give the model a doubled BOS.
        bos = getattr(self.tokenizer, "bos_token", None)
        add_special = not (isinstance(bos, str) and bos and prompt.startswith(bos))
        return list(self.tokenizer(prompt, add_special_tokens=add_special)["input_ids"])

    def submit(self, request: Request) -> None:
        """Queue ``request`` or raise BadRequestError / OverloadedError; events follow via on_event."""
        request.params.validate()
        n = len(request.prompt_ids)
        if n == 0:
            raise BadRequestError("text_input is empty: send a prompt with at least one token")
        if n >= self.max_context:
            raise BadRequestError(
                f"the prompt has {n} tokens but the model's context window is {self.max_context}: shorten the prompt"
            )
        room = self.max_context - n
        if request.params.max_tokens is not None and request.params.max_tokens > room:
            raise BadRequestError(
                f"max_tokens={request.params.max_tokens} does not fit: the prompt has {n} tokens and the "
                f"context window is {self.max_context}, so max_tokens can be at most {room}"
            )
        request.max_new = request.params.max_tokens or room
        with self._cv:
            if self._stopping:
                raise OverloadedError("the server is shutting down", retry_after_s=5)
            if len(self._waiting) >= self.max_queue_size:
                with self._lock:
                    self._rejected += 1
                raise OverloadedError(
                    f"the admission queue is full ({self.max_queue_size} waiting requests)", retry_after_s=1
                )
            self._waiting.append(request)
            self._cv.notify()

    def stats(self) -> EngineStats:
        with self._cv:
            waiting = len(self._waiting)
        rows = len(self._rows)
        width = int(self._mask.shape[1]) if rows else 0
        with self._lock:
            return EngineStats(
                queue_depth=waiting,
                running=rows,
                kv_cache_usage=(rows * width) / float(self.max_batch_size * self.max_context),
                prompt_tokens_total=self._prompt_tokens,
                generation_tokens_total=self._gen_tokens,
                rejected_total=self._rejected,
                finished_total=self._finished,
                decode_steps_total=self._steps,
                failed_total=self._failed,
            )

    def drain_samples(self) -> tuple[list[float], list[float], list[int]]:
        """Return and clear (TTFT seconds, per-request mean inter-token seconds, decode batch sizes)."""
        with self._lock:
            out = (self._ttft, self._itl, self._batch_sizes)
            self._ttft, self._itl, self._batch_sizes = [], [], []
        return out

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="llm-scheduler", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Refuse new requests, let admitted ones finish for up to ``timeout_s``, then cancel the rest."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is None:
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            with self._cv:
                self._abort = True
                self._cv.notify()
            self._thread.join(10)

    # ---- scheduler thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._waiting and not self._rows and not self._stopping:
                        self._cv.wait()
                    if self._abort or (self._stopping and not self._waiting and not self._rows):
                        break
                    expired = self._expire()
                    admitted = self._admit()
                for req in expired:
                    waited = f"the request waited more than {self.queue_timeout_s}s in the queue"
                    self._fail(req, OverloadedError(waited))
                try:
                    if admitted:
                        self._prefill(admitted)
                    if self._rows:
                        self._decode()
                except Exception as exc:
                    # A failed step (e.g. out of memory) fails the requests in it; the engine keeps serving
                    # the queue instead of leaving every later client waiting forever.
                    log.exception("generation step failed")
                    self._fail_all(exc, [*self._rows, *admitted])
        finally:
            self._cancel_all()

    def _expire(self) -> list[Request]:
        """Take the waiting requests older than queue_timeout_s out of the queue (the caller refuses them)."""
        # Checked at every step, so a request is refused when its time is up, not when a batch slot frees.
        if not self.queue_timeout_s or not self._waiting:
            return []
        now = time.monotonic()
        expired = [r for r in self._waiting if now - r.arrival > self.queue_timeout_s]
        if expired:
            self._waiting = collections.deque(r for r in self._waiting if now - r.arrival <= self.queue_timeout_s)
            with self._lock:
                self._rejected += len(expired)
        return expired

    def _admit(self) -> list[Request]:
        admitted: list[Request] = []
        budget = _MAX_PREFILL_TOKENS
        while self._waiting and len(self._rows) + len(admitted) < self.max_batch_size:
            req = self._waiting[0]
            if req.cancelled():
                self._waiting.popleft()
                self._finish(req, FINISH_CANCELLED)
                continue
            if admitted and len(req.prompt_ids) > budget:
                break
            budget -= len(req.prompt_ids)
            admitted.append(self._waiting.popleft())
        return admitted

    @torch.inference_mode()
    def _prefill(self, reqs: list[Request]) -> None:
        width = max(len(r.prompt_ids) for r in reqs)
        ids = torch.full((len(reqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(reqs), width), dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - len(r.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=kvcache.new_cache(),
            use_cache=True,
        )
        kv = kvcache.to_tensors(out.past_key_values)
        logits = out.logits[:, -1, :]
        with self._lock:
            self._prompt_tokens += int(mask.sum().item())
        for r in reqs:
            r.stream = TextStream(tokenizer=self.tokenizer, stop=r.params.stop)
            seed = r.params.seed if r.params.seed is not None else random.getrandbits(63)
            # Sampling runs on the CPU copy of the logits, so the generator lives there too.
            r.generator = torch.Generator()
            r.generator.manual_seed(seed)
        tokens, keep = self._sample_and_emit(reqs, logits)
        if not keep:
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        new_rows = [reqs[i] for i in keep]
        new_kv = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in kv]
        new_mask = mask.index_select(0, idx)
        new_last = torch.tensor([tokens[i] for i in keep], dtype=torch.long, device=self.device)
        new_pos = torch.tensor([len(r.prompt_ids) for r in new_rows], dtype=torch.long, device=self.device)
        self._merge(new_rows, new_kv, new_mask, new_last, new_pos)

    def _merge(
        self,
        rows: list[Request],
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor,
        last: torch.Tensor,
        pos: torch.Tensor,
    ) -> None:
        if not self._rows:
            self._rows, self._kv, self._mask, self._last, self._pos = rows, kv, mask, last, pos
            return
        width = max(self._mask.shape[1], mask.shape[1])
        old_kv = kvcache.left_pad(self._kv, width)
        new_kv = kvcache.left_pad(kv, width)
        self._kv = [
            (torch.cat([ok, nk]), torch.cat([ov, nv])) for (ok, ov), (nk, nv) in zip(old_kv, new_kv, strict=True)
        ]
        self._mask = torch.cat([kvcache.left_pad_mask(self._mask, width), kvcache.left_pad_mask(mask, width)])
        self._last = torch.cat([self._last, last])
        self._pos = torch.cat([self._pos, pos])
        self._rows = self._rows + rows

    @torch.inference_mode()
    def _decode(self) -> None:
        rows = self._rows
        mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long, device=self.device)], dim=1)
        out = self.model(
            input_ids=self._last[:, None],
            attention_mask=mask,
            position_ids=self._pos[:, None],
            past_key_values=kvcache.from_tensors(self._kv),
            use_cache=True,
        )
        self._kv = kvcache.to_tensors(out.past_key_values)
        self._mask = mask
        self._pos = self._pos + 1
        with self._lock:
            self._steps += 1
            self._batch_sizes.append(len(rows))
        tokens, keep = self._sample_and_emit(rows, out.logits[:, -1, :])
        self._last = torch.tensor(tokens, dtype=torch.long, device=self.device)
        if len(keep) != len(rows):
            self._retain(keep)

    def _retain(self, keep: list[int]) -> None:
        if not keep:
            self._rows, self._kv = [], []
            self._mask = self._mask[:0, :0]
            self._last, self._pos = self._last[:0], self._pos[:0]
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._rows = [self._rows[i] for i in keep]
        mask = self._mask.index_select(0, idx)
        # Columns that only the departed rows used are padding for everyone now: drop them.
        first = int(torch.nonzero(mask.sum(0))[0].item())
        self._mask = mask[:, first:]
        self._kv = [(k.index_select(0, idx)[:, :, first:], v.index_select(0, idx)[:, :, first:]) for k, v in self._kv]
        self._last = self._last.index_select(0, idx)
        self._pos = self._pos.index_select(0, idx)

    def _sample_and_emit(self, reqs: list[Request], logits: torch.Tensor) -> tuple[list[int], list[int]]:
        """Sample one token per row, send events; return (tokens, indices of rows that continue)."""
        now = time.monotonic()
        logits = logits.float().cpu()
        tokens: list[int] = []
        keep: list[int] = []
        ttft: list[float] = []
        live = [i for i, r in enumerate(reqs) if not r.cancelled()]
        sampled = (
            sample_batch(
                logits[live], params=[reqs[i].params for i in live], generators=[reqs[i].generator for i in live]
            )
            if live
            else []
        )
        chosen = dict(zip(live, sampled, strict=True))
        for i, r in enumerate(reqs):
            if i not in chosen:
                tokens.append(self.pad_id)
                self._finish(r, FINISH_CANCELLED)
                continue
            tok = chosen[i]
            tokens.append(tok)
            if r.generated == 0:
                ttft.append(now - r.arrival)
                r.first_token_at = now
            r.last_token_at = now
            r.generated += 1
            assert r.stream is not None
            if tok in self.eos_ids and not r.params.ignore_eos:
                self._finish(r, FINISH_STOP)
                continue
            delta = r.stream.add(tok)
            if r.stream.stopped:
                self._finish(r, FINISH_STOP, delta=delta)
                continue
            at_context_end = len(r.prompt_ids) + r.generated >= self.max_context
            if r.generated >= r.max_new or at_context_end:
                self._finish(r, FINISH_LENGTH, delta=delta)
                continue
            if delta:
                r.on_event(GenerationEvent(delta, False, None, len(r.prompt_ids), r.generated))
            keep.append(i)
        with self._lock:
            self._gen_tokens += len(chosen)
            self._ttft.extend(ttft)
        return tokens, keep

    def _finish(self, r: Request, reason: str, *, delta: str = "") -> None:
        if r.done:
            return
        r.done = True
        if r.stream is not None and reason != FINISH_CANCELLED:
            delta += r.stream.finish()
        with self._lock:
            self._finished += 1
            if r.generated >= 2:
                # One observation per request (its mean gap between tokens): per-token observations
                # would cost one IPC each in the Triton stub.
                self._itl.append((r.last_token_at - r.first_token_at) / (r.generated - 1))
        r.on_event(GenerationEvent(delta, True, reason, len(r.prompt_ids), r.generated))

    def _fail(self, r: Request, err: RuntimeRequestError) -> None:
        if r.done:
            return
        r.done = True
        if not isinstance(err, OverloadedError):  # a refusal (queue timeout) counts as rejected, in _expire
            self.count_failed()
        r.on_event(GenerationEvent("", True, FINISH_ERROR, len(r.prompt_ids), r.generated, error=err))

    def count_failed(self) -> None:
        """Count a request that ended in an internal error (also one that failed before it reached the engine).

        It counts as finished too: llm_requests_finished_total is every request that ended after admission, and
        llm_requests_failed_total the part of it that failed (the recording rules rely on failed <= finished).
        """
        with self._lock:
            self._failed += 1
            self._finished += 1

    def _fail_all(self, exc: Exception, reqs: list[Request]) -> None:
        err = RuntimeRequestError(f"generation failed: {exc}")
        err.http_status = 500
        for r in reqs:
            self._fail(r, err)
        self._retain([])

    def _cancel_all(self) -> None:
        with self._cv:
            waiting, self._waiting = list(self._waiting), collections.deque()
            self._stopping = True
        for r in [*self._rows, *waiting]:
            self._finish(r, FINISH_CANCELLED)
        self._rows = []
