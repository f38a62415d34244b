"""The traffic emulator's queueing model: pure, deterministic, advanced by an injected clock.

A fluid (mean-value) model, documented in docs/metrics.md ("The traffic emulator"):

* Each LLMDeployment has an offered load: ``rps`` requests/s with mean ``prompt_tokens`` and ``output_tokens``.
  It is split equally across the LLMDeployment's *serving* pods (Ready, not terminating, past the startup delay),
  as the Service's round robin would.
* Each pod has ``batch_slots`` (B) and a decode throughput ``tokens_per_second`` (C) at a full batch. The
  inter-token latency grows with the batch: ``itl(R) = (B / C) * (1 + R / B) / 2`` for R running requests, so a
  full batch produces C tokens/s and a single request 2C/B.
* Requests are a fluid: each running request emits a token every ``itl`` seconds and finishes at rate
  ``1 / (O * itl)`` (O = mean output tokens), so it emits O tokens on average. While there is no queue the
  batch follows ``R' = rps - R / (O * itl)``; once it is full it serves C / O requests/s and the queue moves at
  ``rps - C / O`` (arrivals beyond ``max_queue`` are refused). :func:`flow` solves this exactly over each time
  step (the ITL is held at its value at the start of the step), so the result barely depends on the step size.
* So the queue grows when the load exceeds C / O per pod and drains when the load per pod falls below it
  (more pods, or less load).
* Time to first token of a request admitted now: ``queue * O / C`` (its wait) ``+ P / prefill_tokens_per_second
  + itl``. Latency histograms spread each step's observations over fixed log-normal deciles around the mean,
  so p50 and p95 differ as they do in a real server.
* Behaviours (per revision, or per image-tag suffix) scale the *observed* latencies and fail a fraction of
  finished requests; they do not change throughput, so a slow canary does not disturb the queue.
* Emulated CPU utilisation of a pod: busy batch slots over batch slots (``running / B``). Fake pods have no
  container to measure, and this is what a CPU-utilisation autoscaling rule would see of an inference server
  that burns CPU per running request.
* Per LLMDeployment, a :class:`Tally` of its requests that outlives its pods (scale-down drops a pod's own
  counters): arrived, admitted, refused, arrived while no pod served, and admitted with a TTFT within the
  LLMDeployment's SLO (counted over the same log-normal spread the histograms get).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from llm_operator.api import Backend

# ------------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True, kw_only=True)
class Load:
    """Offered load of one LLMDeployment: requests/s and mean token counts per request."""

    rps: float = 0.0
    prompt_tokens: float = 512.0
    output_tokens: float = 256.0

    def __post_init__(self) -> None:
        if not (self.rps >= 0 and math.isfinite(self.rps)):
            raise ValueError(f"rps must be a finite number >= 0, got {self.rps}")
        if not (self.prompt_tokens >= 1 and math.isfinite(self.prompt_tokens)):
            raise ValueError(f"promptTokens must be >= 1, got {self.prompt_tokens}")
        if not (self.output_tokens >= 1 and math.isfinite(self.output_tokens)):
            raise ValueError(f"outputTokens must be >= 1, got {self.output_tokens}")


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """What one pod of an LLMDeployment can do. ``max_queue`` None means the backend's default."""

    tokens_per_second: float = 2500.0
    batch_slots: int = 32
    prefill_tokens_per_second: float = 20000.0
    kv_cache_tokens: float = 32768.0
    max_queue: int | None = None

    def __post_init__(self) -> None:
        if not self.tokens_per_second > 0:
            raise ValueError(f"tokensPerSecond must be > 0, got {self.tokens_per_second}")
        if self.batch_slots < 1:
            raise ValueError(f"batchSlots must be >= 1, got {self.batch_slots}")
        if not self.prefill_tokens_per_second > 0:
            raise ValueError(f"prefillTokensPerSecond must be > 0, got {self.prefill_tokens_per_second}")
        if not self.kv_cache_tokens > 0:
            raise ValueError(f"kvCacheTokens must be > 0, got {self.kv_cache_tokens}")
        if self.max_queue is not None and self.max_queue < 0:
            raise ValueError(f"maxQueue must be >= 0, got {self.max_queue}")


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """How a revision misbehaves: factors on observed latencies and a fraction of failed requests."""

    ttft_factor: float = 1.0
    itl_factor: float = 1.0
    error_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not (self.ttft_factor > 0 and self.itl_factor > 0):
            raise ValueError("ttftFactor and itlFactor must be > 0")
        if not 0 <= self.error_ratio <= 1:
            raise ValueError(f"errorRatio must be within 0..1, got {self.error_ratio}")


NORMAL: Final = Behaviour()
DEFAULT_BEHAVIOURS: Final[Mapping[str, Behaviour]] = {
    "normal": NORMAL,
    "slow": Behaviour(ttft_factor=3.0),
    "faulty": Behaviour(error_ratio=0.2),
}
DEFAULT_IMAGE_TAG_SUFFIXES: Final[Mapping[str, str]] = {"-slow": "slow", "-faulty": "faulty"}

# The admission queue each backend bounds by default: llm_runtime refuses beyond --max-queue-size (64); vLLM's
# and TensorRT-LLM's executor queues are unbounded unless configured.
DEFAULT_MAX_QUEUE: Final[Mapping[Backend, int | None]] = {"python": 64, "vllm": None, "tensorrtllm": None}


@dataclass(frozen=True, kw_only=True)
class PodInfo:
    """What the model needs to know about one model pod. ``ready_since`` is on the model's clock."""

    namespace: str
    name: str
    llmdeployment: str
    revision: str
    backend: Backend
    image: str
    model: str
    ready: bool
    ready_since: float | None
    terminating: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def image_tag(self) -> str:
        return image_tag(self.image)


def image_tag(image: str) -> str:
    """The tag of an image reference ('' without one; a digest is not a tag)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


# ------------------------------------------------------------------------------------------ histograms

# Deciles of a log-normal distribution with mean 1: each step's observations are spread over these values.
_DECILES: Final = tuple((i + 0.5) / 10 for i in range(10))


def _spread(sigma: float) -> tuple[float, ...]:
    z = [statistics.NormalDist().inv_cdf(p) for p in _DECILES]
    raw = [math.exp(sigma * x) for x in z]
    mean = sum(raw) / len(raw)
    return tuple(r / mean for r in raw)


LATENCY_SPREAD: Final = _spread(0.5)
TOKEN_GAP_SPREAD: Final = _spread(0.2)


def share_within(mean: float, limit: float, *, spread: Sequence[float] = LATENCY_SPREAD) -> float:
    """The share of observations spread around ``mean`` (as the histograms get them) that are <= ``limit``."""
    return sum(1 for m in spread if mean * m <= limit) / len(spread)


@dataclass
class Histogram:
    """A cumulative Prometheus histogram with float counts (the model is fluid)."""

    bounds: tuple[float, ...]
    counts: list[float] = field(default_factory=list)
    total: float = 0.0
    count: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0.0] * (len(self.bounds) + 1)

    def observe(self, value: float, weight: float, *, spread: Sequence[float] = (1.0,)) -> None:
        if weight <= 0:
            return
        part = weight / len(spread)
        for m in spread:
            v = value * m
            i = next((k for k, b in enumerate(self.bounds) if v <= b), len(self.bounds))
            self.counts[i] += part
            self.total += v * part
        self.count += weight

    def cumulative(self) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) per bucket, the last bound being +Inf."""
        out: list[tuple[float, float]] = []
        acc = 0.0
        for bound, c in zip((*self.bounds, math.inf), self.counts, strict=True):
            acc += c
            out.append((bound, acc))
        return out


# Bucket layouts of the real servers, so quantiles have the real resolution.
RUNTIME_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
VLLM_TTFT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                            10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
VLLM_ITL_BUCKETS: Final = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                           20.0, 40.0, 80.0)
VLLM_E2E_BUCKETS: Final = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                           240.0, 480.0, 960.0, 1920.0, 7680.0)
# Triton's first-response histogram is in milliseconds; the model keeps seconds and the exposition converts.
TRITON_FIRST_RESPONSE_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                                          60.0)
TRTLLM_TOKEN_LEN_BUCKETS: Final = (10.0, 50.0, 100.0, 500.0, 1000.0)

_TTFT_BUCKETS: Final[Mapping[Backend, tuple[float, ...]]] = {
    "python": RUNTIME_LATENCY_BUCKETS,
    "vllm": VLLM_TTFT_BUCKETS,
    "tensorrtllm": TRITON_FIRST_RESPONSE_BUCKETS_S,
}
_ITL_BUCKETS: Final[Mapping[Backend, tuple[float, ...]]] = {
    "python": RUNTIME_LATENCY_BUCKETS,
    "vllm": VLLM_ITL_BUCKETS,
    "tensorrtllm": RUNTIME_LATENCY_BUCKETS,
}

# Triton's execute() of a python-based decoupled model returns as soon as the request is handed to the engine.
PYTHON_EXECUTE_SECONDS: Final = 0.0005

# ------------------------------------------------------------------------------------------ pod state


@dataclass
class PodState:
    """Everything one pod's exporter would report: gauges, counters (float, fluid) and histograms."""

    info: PodInfo
    queue: float = 0.0
    running: float = 0.0
    arrived: float = 0.0
    admitted: float = 0.0
    prompt_tokens: float = 0.0
    generated_tokens: float = 0.0
    finished: float = 0.0
    failed: float = 0.0
    rejected: float = 0.0
    execute_seconds: float = 0.0
    request_seconds: float = 0.0
    kv_cache_utilization: float = 0.0
    # Busy batch slots / batch slots after the last step: the emulated CPU utilisation (0..1).
    cpu_utilization: float = 0.0
    # Admitted requests whose TTFT was within the SLO the last step was given (none given: not counted).
    ttft_met: float = 0.0
    ttft: Histogram = field(init=False)
    itl: Histogram = field(init=False)
    e2e: Histogram = field(init=False)
    first_response: Histogram = field(init=False)
    input_len: Histogram = field(init=False)
    output_len: Histogram = field(init=False)
    # Instantaneous values of the last step, for GET /state.
    arrival_rps: float = 0.0
    generation_tps: float = 0.0
    last_ttft: float = 0.0
    last_itl: float = 0.0

    def __post_init__(self) -> None:
        backend = self.info.backend
        self.ttft = Histogram(_TTFT_BUCKETS[backend])
        self.itl = Histogram(_ITL_BUCKETS[backend])
        self.e2e = Histogram(VLLM_E2E_BUCKETS)
        self.first_response = Histogram(TRITON_FIRST_RESPONSE_BUCKETS_S)
        self.input_len = Histogram(TRTLLM_TOKEN_LEN_BUCKETS)
        self.output_len = Histogram(TRTLLM_TOKEN_LEN_BUCKETS)

    def step(
        self, *, dt: float, rps: float, load: Load, capacity: Capacity, behaviour: Behaviour,
        ttft_slo: float | None = None,
    ) -> None:
        """Advance this pod by ``dt`` seconds with ``rps`` requests/s arriving; with ``ttft_slo`` also count the
        admitted requests whose TTFT is within it."""
        slots = capacity.batch_slots
        prompt, output = load.prompt_tokens, load.output_tokens
        max_queue = capacity.max_queue if capacity.max_queue is not None else DEFAULT_MAX_QUEUE[self.info.backend]
        itl = inter_token_latency(running=min(self.running, slots), capacity=capacity)
        f = flow(dt=dt, rps=rps, queue=self.queue, running=self.running, slots=slots, tau=output * itl,
                 max_queue=max_queue)

        self.arrived += rps * dt
        self.execute_seconds += rps * dt * PYTHON_EXECUTE_SECONDS
        self.rejected += f.rejected
        self.admitted += f.admitted
        self.prompt_tokens += f.admitted * prompt
        self.queue, self.running = f.queue, f.running

        # A request admitted now waited for the queue ahead of it, drained at C / O requests/s by a full batch.
        wait = f.queue * output / capacity.tokens_per_second
        ttft = (wait + prompt / capacity.prefill_tokens_per_second + itl) * behaviour.ttft_factor
        observed_itl = itl * behaviour.itl_factor
        self.ttft.observe(ttft, f.admitted, spread=LATENCY_SPREAD)
        self.first_response.observe(ttft, f.admitted, spread=LATENCY_SPREAD)
        if ttft_slo is not None:
            self.ttft_met += f.admitted * share_within(ttft, ttft_slo)

        tokens = f.done * output
        self.generated_tokens += tokens
        self.finished += f.done
        self.failed += f.done * behaviour.error_ratio
        latency = ttft + (output - 1) * observed_itl
        self.request_seconds += f.done * latency
        self.e2e.observe(latency, f.done, spread=LATENCY_SPREAD)
        self.input_len.observe(prompt, f.done)
        self.output_len.observe(output, f.done)
        if self.info.backend == "python":
            # llm_runtime observes one value per finished request: its mean gap between tokens.
            self.itl.observe(observed_itl, f.done, spread=TOKEN_GAP_SPREAD)
        else:
            self.itl.observe(observed_itl, f.done * (output - 1), spread=TOKEN_GAP_SPREAD)

        self.kv_cache_utilization = min(1.0, self.running * (prompt + output / 2) / capacity.kv_cache_tokens)
        self.cpu_utilization = min(self.running, slots) / slots
        self.arrival_rps = rps
        self.generation_tps = tokens / dt if dt > 0 else 0.0
        self.last_ttft = ttft
        self.last_itl = observed_itl


def inter_token_latency(*, running: float, capacity: Capacity) -> float:
    """Seconds between two tokens of one request with ``running`` requests in the batch: B / C at a full batch
    (so the batch makes C tokens/s), half that for a lone request."""
    slots = capacity.batch_slots
    return slots / capacity.tokens_per_second * (1 + running / slots) / 2


@dataclass(frozen=True, kw_only=True)
class Flow:
    queue: float
    running: float
    admitted: float
    done: float
    rejected: float


def flow(
    *, dt: float, rps: float, queue: float, running: float, slots: int, tau: float, max_queue: int | None
) -> Flow:
    """Exact solution of the fluid queue over ``dt`` seconds.

    Requests arrive at ``rps``; each running one finishes at rate ``1 / tau``; at most ``slots`` run. Two
    regimes, and a step crosses at most two boundaries between them:

    * full batch (a queue, or arrivals at least the service rate ``slots / tau``): the batch finishes
      ``slots / tau`` requests/s, each refilled at once from the queue, which moves at ``rps - slots / tau``;
      beyond ``max_queue`` arrivals are refused;
    * no queue: ``running' = rps - running / tau``, so ``running`` tends to ``rps * tau`` exponentially, until
      it reaches ``slots``.
    """
    q, r = queue, running
    admitted = done = rejected = 0.0
    mu = slots / tau
    if r > slots:
        # Fewer slots than running requests (capacity lowered): the excess waits again.
        q, r = q + r - slots, float(slots)
    fill = min(q, slots - r)
    q, r, admitted = q - fill, r + fill, fill
    left = dt
    for _ in range(4):
        if left <= 0:
            break
        if q > 0 or (r >= slots and rps >= mu):
            net = rps - mu
            h = left if net >= 0 else min(left, q / -net)
            q += net * h
            admitted += mu * h
            done += mu * h
            if max_queue is not None and q > max_queue:
                rejected += q - max_queue
                q = float(max_queue)
            if net < 0 and h < left:
                q = 0.0
            r = float(slots)
            left -= h
        else:
            target = rps * tau
            h = left
            full = False
            if target > slots:
                t_full = tau * math.log((target - r) / (target - slots))
                if t_full <= left:
                    h, full = t_full, True
            r_end = float(slots) if full else target + (r - target) * math.exp(-h / tau)
            admitted += rps * h
            done += rps * h - (r_end - r)
            r = r_end
            left -= h
    return Flow(queue=q, running=r, admitted=admitted, done=done, rejected=rejected)


# ------------------------------------------------------------------------------------------ the model


@dataclass
class Tally:
    """Requests of one LLMDeployment, summed over its pods (gone ones included) since the tally started: when
    its TTFT SLO was set, else when it first had a load or a pod. Fluid counts (floats)."""

    ttft_slo_seconds: float | None = None
    arrived: float = 0.0  # offered: every request sent to the LLMDeployment
    unserved: float = 0.0  # arrived while no pod of it was serving (the Service had no endpoint)
    admitted: float = 0.0
    rejected: float = 0.0  # refused by a full admission queue
    ttft_met: float = 0.0  # admitted with TTFT <= ttft_slo_seconds (0 while no SLO is set)

    @property
    def ttft_met_share(self) -> float | None:
        """Requests that got their first token within the SLO, of all that arrived (refused and unserved ones
        missed it); None without an SLO or before any request."""
        if self.ttft_slo_seconds is None or self.arrived <= 0:
            return None
        return self.ttft_met / self.arrived


@dataclass(frozen=True, kw_only=True)
class PodView:
    """A pod as the exposition and GET /state see it."""

    state: PodState
    started: bool
    serving: bool
    exporting: bool
    behaviour: str


class TrafficModel:
    """Offered loads, pod capacities and behaviours, and the pods' queueing state, on an injected clock.

    Not thread-safe: the server serialises calls with a lock.
    """

    def __init__(
        self,
        *,
        start: float,
        startup_delay: float = 0.0,
        max_step: float = 0.25,
        behaviours: Mapping[str, Behaviour] = DEFAULT_BEHAVIOURS,
        image_tag_suffixes: Mapping[str, str] = DEFAULT_IMAGE_TAG_SUFFIXES,
    ) -> None:
        if startup_delay < 0:
            raise ValueError(f"startup delay must be >= 0, got {startup_delay}")
        if max_step <= 0:
            raise ValueError(f"max_step must be > 0, got {max_step}")
        self.now = start
        self.startup_delay = startup_delay
        self.max_step = max_step
        self.behaviours: dict[str, Behaviour] = dict(behaviours)
        self.image_tag_suffixes: dict[str, str] = dict(image_tag_suffixes)
        self.revision_behaviours: dict[str, str] = {}
        self.loads: dict[tuple[str, str], Load] = {}
        self.capacities: dict[tuple[str, str], Capacity] = {}
        self.default_capacity = Capacity()
        self.pods: dict[tuple[str, str], PodState] = {}
        self.tallies: dict[tuple[str, str], Tally] = {}

    # ------------------------------------------------------------------ control

    def set_load(self, *, namespace: str, name: str, load: Load) -> None:
        self.loads[(namespace, name)] = load

    def load_of(self, *, namespace: str, name: str) -> Load:
        return self.loads.get((namespace, name), Load())

    def set_capacity(self, *, namespace: str, name: str, capacity: Capacity) -> None:
        self.capacities[(namespace, name)] = capacity

    def capacity_of(self, *, namespace: str, name: str) -> Capacity:
        return self.capacities.get((namespace, name), self.default_capacity)

    def set_ttft_slo(self, *, namespace: str, name: str, seconds: float) -> None:
        """Count this LLMDeployment's requests against a TTFT SLO from now on: its tally starts again."""
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"ttftSeconds must be a finite number > 0, got {seconds}")
        self.tallies[(namespace, name)] = Tally(ttft_slo_seconds=seconds)

    def tally_of(self, *, namespace: str, name: str) -> Tally:
        return self.tallies.setdefault((namespace, name), Tally())

    def define_behaviour(self, *, name: str, behaviour: Behaviour) -> None:
        self.behaviours[name] = behaviour

    def assign_behaviour(
        self, *, behaviour: str | None, revision: str | None = None, image_tag_suffix: str | None = None
    ) -> None:
        """Give pods of ``revision``, or pods whose image tag ends with ``image_tag_suffix``, a named behaviour
        (None removes the assignment)."""
        if (revision is None) == (image_tag_suffix is None):
            raise ValueError("give exactly one of revision and imageTagSuffix")
        if behaviour is not None and behaviour not in self.behaviours:
            raise ValueError(f"unknown behaviour {behaviour!r}: define it first (known: {sorted(self.behaviours)})")
        table = self.revision_behaviours if revision is not None else self.image_tag_suffixes
        key = revision if revision is not None else image_tag_suffix
        assert key is not None
        if behaviour is None:
            table.pop(key, None)
        else:
            table[key] = behaviour

    def behaviour_name(self, info: PodInfo) -> str:
        if info.revision in self.revision_behaviours:
            return self.revision_behaviours[info.revision]
        tag = info.image_tag
        matches = [s for s in self.image_tag_suffixes if s and tag.endswith(s)]
        if matches:
            return self.image_tag_suffixes[max(matches, key=len)]
        return "normal"

    def behaviour_of(self, info: PodInfo) -> Behaviour:
        return self.behaviours.get(self.behaviour_name(info), NORMAL)

    # ------------------------------------------------------------------ pods

    def sync_pods(self, pods: Iterable[PodInfo]) -> None:
        """Make the model's pods exactly ``pods``: new ones start empty, gone ones are dropped, others keep
        their queues."""
        seen: dict[tuple[str, str], PodInfo] = {p.key: p for p in pods}
        for key in list(self.pods):
            if key not in seen:
                del self.pods[key]
        for key, info in seen.items():
            state = self.pods.get(key)
            if state is None or state.info.backend != info.backend:
                self.pods[key] = PodState(info)
            else:
                state.info = info

    def started(self, info: PodInfo, *, at: float | None = None) -> bool:
        """Ready for at least the startup delay (the model has loaded; Triton opens its ports only then)."""
        t = self.now if at is None else at
        return info.ready and info.ready_since is not None and t >= info.ready_since + self.startup_delay

    def serving(self, info: PodInfo, *, at: float | None = None) -> bool:
        """Gets a share of the load: started and not terminating (endpoints drop terminating pods)."""
        return self.started(info, at=at) and not info.terminating

    # ------------------------------------------------------------------ time

    def advance(self, *, to: float) -> None:
        """Step the model from its current time to ``to`` in steps of at most ``max_step`` seconds."""
        while self.now < to:
            dt = min(self.max_step, to - self.now)
            self._step(dt)
            self.now += dt

    def _step(self, dt: float) -> None:
        # A pod that starts within this step serves from the next one.
        serving_pods = {key for key, state in self.pods.items() if self.serving(state.info)}
        per_llmd: dict[tuple[str, str], int] = {}
        for key in serving_pods:
            info = self.pods[key].info
            per_llmd[(info.namespace, info.llmdeployment)] = per_llmd.get((info.namespace, info.llmdeployment), 0) + 1
        for key, load in self.loads.items():
            if key not in per_llmd and load.rps > 0:
                tally = self.tally_of(namespace=key[0], name=key[1])
                tally.arrived += load.rps * dt
                tally.unserved += load.rps * dt
        for pod_key, state in self.pods.items():
            info = state.info
            key = (info.namespace, info.llmdeployment)
            load = self.load_of(namespace=key[0], name=key[1])
            rps = load.rps / per_llmd[key] if pod_key in serving_pods else 0.0
            tally = self.tally_of(namespace=key[0], name=key[1])
            before = (state.arrived, state.admitted, state.rejected, state.ttft_met)
            state.step(
                dt=dt,
                rps=rps,
                load=load,
                capacity=self.capacity_of(namespace=key[0], name=key[1]),
                behaviour=self.behaviour_of(info),
                ttft_slo=tally.ttft_slo_seconds,
            )
            tally.arrived += state.arrived - before[0]
            tally.admitted += state.admitted - before[1]
            tally.rejected += state.rejected - before[2]
            tally.ttft_met += state.ttft_met - before[3]

    # ------------------------------------------------------------------ views

    def views(self) -> list[PodView]:
        out = []
        for key in sorted(self.pods):
            state = self.pods[key]
            started = self.started(state.info)
            out.append(
                PodView(
                    state=state,
                    started=started,
                    serving=started and not state.info.terminating,
                    exporting=started,
                    behaviour=self.behaviour_name(state.info),
                )
            )
        return out

    def exporting(self) -> list[PodState]:
        """Pods whose metrics are visible: started (Ready past the startup delay)."""
        return [v.state for v in self.views() if v.exporting]

