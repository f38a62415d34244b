"""A port of kube-controller-manager's HorizontalPodAutoscaler (autoscaling/v2) decision logic.

Ported from kubernetes v1.36.3 (the version `llmctl dev up` runs), `pkg/controller/podautoscaler/`:

* ``horizontal.go``: ``reconcileAutoscaler``, ``computeReplicasForMetrics``, ``stabilizeRecommendation``,
  ``normalizeDesiredReplicas``, ``convertDesiredReplicasWithRules``, ``calculateScaleUpLimit``,
  ``normalizeDesiredReplicasWithBehaviors``, ``stabilizeRecommendationWithBehaviors``,
  ``convertDesiredReplicasWithBehaviorRate``, ``calculateScaleUpLimitWithScalingRules``,
  ``calculateScaleDownLimitWithBehaviors``, ``getReplicasChangePerPeriod``, ``storeScaleEvent``,
  ``markScaleEventsOutdated``, ``tolerancesForHpa``;
* ``replica_calculator.go``: ``Tolerances.isWithin``, ``GetMetricReplicas`` / ``calcPlainMetricReplicas`` (Pods
  metrics, AverageValue), ``GetResourceReplicas`` (Resource metrics, Utilization), ``groupPods``;
* ``metrics/utilization.go``: ``GetMetricUsageRatio``, ``GetResourceUtilizationRatio``;
* ``pkg/apis/autoscaling/v2/defaults.go``: ``SetDefaults_HorizontalPodAutoscalerBehavior`` (the API server's
  defaulting of a partial ``behavior``);
* ``config/v1alpha1/defaults.go``: the controller's flag defaults (tolerance 0.1, downscale stabilization 5 min,
  CPU initialization period 5 min, initial readiness delay 30 s).

Everything is pure: time is a float (seconds) passed in, never read from a clock. Metric values are int64
milli-units as upstream (``Quantity.MilliValue()``), averaged with integer division, so rounding matches.
What is left out: Object and External metrics, ContainerResource, scale to zero (``HPAScaleToZero``), and the
conditions' messages (their reasons are kept); none of them is used by the policies the simulator runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

# config/v1alpha1/defaults.go RecommendedDefaultHPAControllerConfiguration
DEFAULT_TOLERANCE: Final = 0.1
DEFAULT_DOWNSCALE_STABILIZATION: Final = 300.0
DEFAULT_CPU_INITIALIZATION_PERIOD: Final = 300.0
DEFAULT_INITIAL_READINESS_DELAY: Final = 30.0
DEFAULT_SYNC_PERIOD: Final = 15.0
# horizontal.go: scaleUpLimitFactor, scaleUpLimitMinimum (the no-behavior path's scale-up limit)
SCALE_UP_LIMIT_FACTOR: Final = 2.0
SCALE_UP_LIMIT_MINIMUM: Final = 4.0

INT32_MAX: Final = 2**31 - 1
INT32_MIN: Final = -(2**31)

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]


# ------------------------------------------------------------------------------------------ spec


@dataclass(frozen=True, kw_only=True)
class ScalingPolicy:
    type: PolicyType
    value: int
    period_seconds: int


@dataclass(frozen=True, kw_only=True)
class ScalingRules:
    """autoscaling/v2 HPAScalingRules. ``None`` fields are filled by :func:`default_behavior`."""

    stabilization_window_seconds: int | None = None
    select_policy: SelectPolicy | None = None
    policies: tuple[ScalingPolicy, ...] | None = None
    tolerance: float | None = None


@dataclass(frozen=True, kw_only=True)
class Behavior:
    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


@dataclass(frozen=True, kw_only=True)
class PodsMetric:
    """A ``type: Pods`` metric with an ``AverageValue`` target, in milli-units."""

    name: str
    target_milli: int


@dataclass(frozen=True, kw_only=True)
class ResourceMetric:
    """A ``type: Resource`` metric with a ``Utilization`` target (percent of the pods' requests)."""

    name: str  # "cpu"
    target_utilization: int


Metric = PodsMetric | ResourceMetric


@dataclass(frozen=True, kw_only=True)
class HPASpec:
    min_replicas: int
    max_replicas: int
    metrics: tuple[Metric, ...]
    behavior: Behavior | None = None

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("an HPA needs at least one metric")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 1 <= minReplicas <= maxReplicas, got {self.min_replicas}, {self.max_replicas}")


# v2/defaults.go defaultHPAScaleUpRules / defaultHPAScaleDownRules
DEFAULT_SCALE_UP: Final = ScalingRules(
    stabilization_window_seconds=0,
    select_policy="Max",
    policies=(ScalingPolicy(type="Pods", value=4, period_seconds=15),
              ScalingPolicy(type="Percent", value=100, period_seconds=15)),
)
DEFAULT_SCALE_DOWN: Final = ScalingRules(
    stabilization_window_seconds=None,  # the controller's --horizontal-pod-autoscaler-downscale-stabilization
    select_policy="Max",
    policies=(ScalingPolicy(type="Percent", value=100, period_seconds=15),),
)


def _copy_rules(source: ScalingRules | None, defaults: ScalingRules) -> ScalingRules:
    """v2/defaults.go copyHPAScalingRules: every field the user set replaces the default's."""
    if source is None:
        return defaults
    return ScalingRules(
        stabilization_window_seconds=(source.stabilization_window_seconds
                                      if source.stabilization_window_seconds is not None
                                      else defaults.stabilization_window_seconds),
        select_policy=source.select_policy if source.select_policy is not None else defaults.select_policy,
        policies=source.policies if source.policies is not None else defaults.policies,
        tolerance=source.tolerance if source.tolerance is not None else defaults.tolerance,
    )


def default_behavior(behavior: Behavior, *, downscale_stabilization: float) -> Behavior:
    """v2/defaults.go SetDefaults_HorizontalPodAutoscalerBehavior, then horizontal.go
    maybeInitScaleDownStabilizationWindow (an unset scale-down window takes the controller's flag)."""
    up = _copy_rules(behavior.scale_up, DEFAULT_SCALE_UP)
    down = _copy_rules(behavior.scale_down, DEFAULT_SCALE_DOWN)
    if down.stabilization_window_seconds is None:
        down = replace(down, stabilization_window_seconds=int(downscale_stabilization))
    return Behavior(scale_up=up, scale_down=down)


# ------------------------------------------------------------------------------------------ observations


@dataclass(frozen=True, kw_only=True)
class Pod:
    """What the HPA's pod lister sees of one pod matched by the scale subresource's selector."""

    name: str
    phase: Literal["Pending", "Running", "Failed"] = "Running"
    deleting: bool = False
    ready: bool = True
    start_time: float | None = 0.0
    # lastTransitionTime of the Ready condition; None = no Ready condition at all
    ready_transition: float | None = 0.0
    cpu_request_milli: int | None = None


@dataclass(frozen=True, kw_only=True)
class PodMetric:
    """metricsclient.PodMetric: one pod's value (milli-units), when it was measured, over which window."""

    value: int
    timestamp: float = 0.0
    window: float = 30.0  # metricServerDefaultMetricWindow: custom metrics carry no window


class MetricError(Exception):
    """A metric could not be read (upstream returns an error from the metrics client or the calculator)."""


@dataclass(frozen=True)
class Tolerances:
    """replica_calculator.go Tolerances."""

    scale_down: float
    scale_up: float

    def is_within(self, usage_ratio: float) -> bool:
        """replica_calculator.go Tolerances.isWithin."""
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


# ------------------------------------------------------------------------------------------ replica_calculator.go


@dataclass(frozen=True)
class PodGroups:
    ready_pod_count: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


def group_pods(
    pods: Sequence[Pod],
    metrics: Mapping[str, PodMetric],
    *,
    resource: str,
    now: float,
    cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD,
    delay_of_initial_readiness_status: float = DEFAULT_INITIAL_READINESS_DELAY,
) -> PodGroups:
    """replica_calculator.go groupPods. Only the CPU resource looks at readiness; for custom (Pods) metrics a
    Running pod that has a sample counts as ready, and one without a sample is *missing*."""
    ready = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        # "Pending pods are ignored." (upstream comment; they go to the unready set)
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        metric = metrics.get(pod.name)
        if metric is None:
            missing.add(pod.name)
            continue
        if resource == "cpu":
            if pod.ready_transition is None or pod.start_time is None:
                is_unready = True
            elif pod.start_time + cpu_initialization_period > now:
                # Within the initialisation period: ignore the sample if the pod is unready, or if one window of
                # metric was not collected since its last readiness transition.
                is_unready = (not pod.ready) or metric.timestamp < pod.ready_transition + metric.window
            else:
                # Ignore the metric if the pod is unready and it has never been ready.
                is_unready = (not pod.ready) and (
                    pod.start_time + delay_of_initial_readiness_status > pod.ready_transition)
            if is_unready:
                unready.add(pod.name)
                continue
        ready += 1
    return PodGroups(ready, frozenset(unready), frozenset(missing), frozenset(ignored))


def get_metric_usage_ratio(metrics: Mapping[str, PodMetric], target_usage: int) -> tuple[float, int]:
    """metrics/utilization.go GetMetricUsageRatio: integer average of milli-values over the target."""
    total = sum(m.value for m in metrics.values())
    current = _go_div(total, len(metrics))
    return current / target_usage, current


def get_resource_utilization_ratio(
    metrics: Mapping[str, PodMetric], requests: Mapping[str, int], target_utilization: int
) -> tuple[float, int, int]:
    """metrics/utilization.go GetResourceUtilizationRatio: (ratio, utilization %, raw average milli-value)."""
    metrics_total = requests_total = entries = 0
    for name, metric in metrics.items():
        request = requests.get(name)
        if request is None:
            continue  # upstream: extraneous metrics, missing requests are checked elsewhere
        metrics_total += metric.value
        requests_total += request
        entries += 1
    if requests_total == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = _go_div(metrics_total * 100, requests_total)
    return utilization / target_utilization, utilization, _go_div(metrics_total, entries)


def _go_div(a: int, b: int) -> int:
    """Go's integer division truncates toward zero (Python's // floors); values here are >= 0 anyway."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _ceil_int32(x: float) -> int:
    return int(min(math.ceil(x), INT32_MAX))


def calc_plain_metric_replicas(
    *,
    pods: Sequence[Pod],
    metrics: Mapping[str, PodMetric],
    current_replicas: int,
    target_usage: int,
    tolerances: Tolerances,
    now: float,
) -> tuple[int, int]:
    """replica_calculator.go calcPlainMetricReplicas (via GetMetricReplicas): (replicas, average usage)."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    metrics = dict(metrics)
    groups = group_pods(pods, metrics, resource="", now=now)
    for name in groups.ignored | groups.unready:
        metrics.pop(name, None)
    if not metrics:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")

    usage_ratio, usage = get_metric_usage_ratio(metrics, target_usage)
    scale_up_with_unready = bool(groups.unready) and usage_ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(usage_ratio):
            return current_replicas, usage
        return _ceil_int32(usage_ratio * groups.ready_pod_count), usage

    if groups.missing:
        if usage_ratio < 1.0:
            # on a scale-down, treat missing pods as using exactly the target amount
            for name in groups.missing:
                metrics[name] = PodMetric(value=target_usage)
        elif usage_ratio > 1.0:
            # on a scale-up, treat missing pods as using 0
            for name in groups.missing:
                metrics[name] = PodMetric(value=0)
    if scale_up_with_unready:
        for name in groups.unready:
            metrics[name] = PodMetric(value=0)

    new_ratio, _ = get_metric_usage_ratio(metrics, target_usage)
    if tolerances.is_within(new_ratio) or (usage_ratio < 1.0 < new_ratio) or (usage_ratio > 1.0 > new_ratio):
        # the change would be too small, or the filled-in pods flip the direction
        return current_replicas, usage
    new_replicas = _ceil_int32(new_ratio * len(metrics))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
        return current_replicas, usage
    return new_replicas, usage


def get_resource_replicas(
    *,
    pods: Sequence[Pod],
    metrics: Mapping[str, PodMetric],
    current_replicas: int,
    target_utilization: int,
    tolerances: Tolerances,
    now: float,
    cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD,
    delay_of_initial_readiness_status: float = DEFAULT_INITIAL_READINESS_DELAY,
) -> tuple[int, int]:
    """replica_calculator.go GetResourceReplicas (Utilization target): (replicas, utilization %)."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    metrics = dict(metrics)
    groups = group_pods(pods, metrics, resource="cpu", now=now, cpu_initialization_period=cpu_initialization_period,
                        delay_of_initial_readiness_status=delay_of_initial_readiness_status)
    for name in groups.ignored | groups.unready:
        metrics.pop(name, None)
    if not metrics:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    # calculateRequests: every selected pod needs a request for the resource
    requests: dict[str, int] = {}
    for pod in pods:
        if pod.cpu_request_milli is None:
            raise MetricError(f"missing request for cpu in container of pod {pod.name}")
        requests[pod.name] = pod.cpu_request_milli

    usage_ratio, utilization, _ = get_resource_utilization_ratio(metrics, requests, target_utilization)
    scale_up_with_unready = bool(groups.unready) and usage_ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(usage_ratio):
            return current_replicas, utilization
        return _ceil_int32(usage_ratio * groups.ready_pod_count), utilization

    if groups.missing:
        if usage_ratio < 1.0:
            # on a scale-down, missing pods use 100 % of their request (or the target, if above 100 %)
            fallback = max(100, target_utilization)
            for name in groups.missing:
                metrics[name] = PodMetric(value=_go_div(requests[name] * fallback, 100))
        elif usage_ratio > 1.0:
            for name in groups.missing:
                metrics[name] = PodMetric(value=0)
    if scale_up_with_unready:
        for name in groups.unready:
            metrics[name] = PodMetric(value=0)

    new_ratio, _, _ = get_resource_utilization_ratio(metrics, requests, target_utilization)
    if tolerances.is_within(new_ratio) or (usage_ratio < 1.0 < new_ratio) or (usage_ratio > 1.0 > new_ratio):
        return current_replicas, utilization
    new_replicas = _ceil_int32(new_ratio * len(metrics))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
        return current_replicas, utilization
    return new_replicas, utilization


# ------------------------------------------------------------------------------------------ horizontal.go


@dataclass
class _Recommendation:
    recommendation: int
    timestamp: float


@dataclass
class _ScaleEvent:
    replica_change: int
    timestamp: float
    outdated: bool = False


def get_replicas_change_per_period(period_seconds: int, events: Sequence[_ScaleEvent], *, now: float) -> int:
    """horizontal.go getReplicasChangePerPeriod: replicas changed by events strictly newer than now - period."""
    cutoff = now - period_seconds
    return sum(e.replica_change for e in events if e.timestamp > cutoff)


def calculate_scale_up_limit_with_scaling_rules(
    current_replicas: int, up_events: Sequence[_ScaleEvent], down_events: Sequence[_ScaleEvent],
    rules: ScalingRules, *, now: float,
) -> int:
    """horizontal.go calculateScaleUpLimitWithScalingRules."""
    if rules.select_policy == "Disabled":
        return current_replicas
    use_min = rules.select_policy == "Min"
    result = INT32_MAX if use_min else INT32_MIN
    for policy in rules.policies or ():
        added = get_replicas_change_per_period(policy.period_seconds, up_events, now=now)
        deleted = get_replicas_change_per_period(policy.period_seconds, down_events, now=now)
        period_start = current_replicas - added + deleted
        if policy.type == "Pods":
            proposed = period_start + policy.value
        else:
            # rounded up: otherwise a small count might never grow
            proposed = math.ceil(period_start * (1 + policy.value / 100))
        result = min(result, proposed) if use_min else max(result, proposed)
    return result


def calculate_scale_down_limit_with_behaviors(
    current_replicas: int, up_events: Sequence[_ScaleEvent], down_events: Sequence[_ScaleEvent],
    rules: ScalingRules, *, now: float,
) -> int:
    """horizontal.go calculateScaleDownLimitWithBehaviors ("Max" picks the biggest drop, i.e. the minimum)."""
    if rules.select_policy == "Disabled":
        return current_replicas
    use_max = rules.select_policy == "Min"
    result = INT32_MIN if use_max else INT32_MAX
    for policy in rules.policies or ():
        added = get_replicas_change_per_period(policy.period_seconds, up_events, now=now)
        deleted = get_replicas_change_per_period(policy.period_seconds, down_events, now=now)
        period_start = current_replicas - added + deleted
        if policy.type == "Pods":
            proposed = period_start - policy.value
        else:
            proposed = int(period_start * (1 - policy.value / 100))  # Go's int32() truncates toward zero
        result = max(result, proposed) if use_max else min(result, proposed)
    return result


def calculate_scale_up_limit(current_replicas: int) -> int:
    """horizontal.go calculateScaleUpLimit (no behavior): at most double, and at least 4."""
    return int(max(SCALE_UP_LIMIT_FACTOR * current_replicas, SCALE_UP_LIMIT_MINIMUM))


def convert_desired_replicas_with_rules(
    current_replicas: int, desired_replicas: int, min_replicas: int, max_replicas: int
) -> tuple[int, str]:
    """horizontal.go convertDesiredReplicasWithRules: (replicas, ScalingLimited reason)."""
    scale_up_limit = calculate_scale_up_limit(current_replicas)
    if max_replicas > scale_up_limit:
        maximum, reason = scale_up_limit, "ScaleUpLimit"
    else:
        maximum, reason = max_replicas, "TooManyReplicas"
    if desired_replicas < min_replicas:
        return min_replicas, "TooFewReplicas"
    if desired_replicas > maximum:
        return maximum, reason
    return desired_replicas, "DesiredWithinRange"


@dataclass(frozen=True, kw_only=True)
class Decision:
    """One reconcileAutoscaler pass: what it wrote (if anything) and the conditions' reasons."""

    time: float
    current_replicas: int
    desired_replicas: int
    rescale: bool
    metric: str = ""
    # per metric: the proposal, or the error text
    proposals: tuple[tuple[str, int | str], ...] = ()
    able_to_scale: str = ""
    scaling_active: str = ""
    scaling_limited: str = ""


MetricReading = Mapping[str, PodMetric] | MetricError


@dataclass
class HorizontalController:
    """One HPA's controller state (recommendations and scale events) and its reconcile step.

    ``metrics`` given to :meth:`reconcile` maps each metric name to what the metrics client returned: per-pod
    values, or a :class:`MetricError` (e.g. no series yet). An empty mapping of values is reported as
    upstream's "no metrics returned from custom metrics API".
    """

    spec: HPASpec
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization: float = DEFAULT_DOWNSCALE_STABILIZATION
    cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD
    delay_of_initial_readiness_status: float = DEFAULT_INITIAL_READINESS_DELAY
    recommendations: list[_Recommendation] = field(default_factory=list)
    scale_up_events: list[_ScaleEvent] = field(default_factory=list)
    scale_down_events: list[_ScaleEvent] = field(default_factory=list)
    _behavior: Behavior | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.spec.behavior is not None:
            self._behavior = default_behavior(self.spec.behavior, downscale_stabilization=self.downscale_stabilization)

    @property
    def behavior(self) -> Behavior | None:
        """The behavior after API defaulting (None: the no-behavior code path)."""
        return self._behavior

    def tolerances(self) -> Tolerances:
        """horizontal.go tolerancesForHpa (HPAConfigurableTolerance is beta and on by default since 1.35)."""
        t = Tolerances(self.tolerance, self.tolerance)
        b = self._behavior
        if b is None:
            return t
        down = b.scale_down.tolerance if b.scale_down and b.scale_down.tolerance is not None else t.scale_down
        up = b.scale_up.tolerance if b.scale_up and b.scale_up.tolerance is not None else t.scale_up
        return Tolerances(down, up)

    # -------------------------------------------------------------- per metric

    def _compute_replicas_for_metric(
        self, metric: Metric, reading: MetricReading, *, spec_replicas: int, pods: Sequence[Pod], now: float
    ) -> int:
        """horizontal.go computeReplicasForMetric -> computeStatusFor{Pods,Resource}Metric."""
        if isinstance(reading, MetricError):
            raise reading
        if not reading:
            # metrics/client.go GetRawMetric / GetResourceMetric
            raise MetricError("no metrics returned from custom metrics API")
        if isinstance(metric, PodsMetric):
            replicas, _ = calc_plain_metric_replicas(
                pods=pods, metrics=reading, current_replicas=spec_replicas, target_usage=metric.target_milli,
                tolerances=self.tolerances(), now=now)
            return replicas
        replicas, _ = get_resource_replicas(
            pods=pods, metrics=reading, current_replicas=spec_replicas, target_utilization=metric.target_utilization,
            tolerances=self.tolerances(), now=now, cpu_initialization_period=self.cpu_initialization_period,
            delay_of_initial_readiness_status=self.delay_of_initial_readiness_status)
        return replicas

    def compute_replicas_for_metrics(
        self, *, spec_replicas: int, pods: Sequence[Pod], metrics: Mapping[str, MetricReading], now: float
    ) -> tuple[int, str, tuple[tuple[str, int | str], ...], str]:
        """horizontal.go computeReplicasForMetrics: the max over valid proposals; -1 (no scaling) when every
        metric is invalid, or when some are and the valid ones would scale down."""
        replicas = 0
        metric_name = ""
        invalid = 0
        first_error = ""
        proposals: list[tuple[str, int | str]] = []
        for metric in self.spec.metrics:
            reading = metrics.get(metric.name, MetricError(f"metric {metric.name} is not served"))
            try:
                proposal = self._compute_replicas_for_metric(metric, reading, spec_replicas=spec_replicas, pods=pods,
                                                             now=now)
            except MetricError as exc:
                if invalid == 0:
                    first_error = f"{metric.name}: {exc}"
                invalid += 1
                proposals.append((metric.name, str(exc)))
                continue
            proposals.append((metric.name, proposal))
            if replicas == 0 or proposal > replicas:
                replicas, metric_name = proposal, metric.name
        if invalid >= len(self.spec.metrics) or (invalid > 0 and replicas < spec_replicas):
            return -1, "", tuple(proposals), first_error
        return replicas, metric_name, tuple(proposals), ""

    # -------------------------------------------------------------- normalisation

    def stabilize_recommendation(self, prenormalized: int, *, now: float) -> int:
        """horizontal.go stabilizeRecommendation (no behavior): the max over the downscale window; the new
        proposal replaces one sample older than the window, or is appended."""
        maximum = prenormalized
        old_index: int | None = None
        cutoff = now - self.downscale_stabilization
        for i, rec in enumerate(self.recommendations):
            if rec.timestamp < cutoff:
                old_index = i
            elif rec.recommendation > maximum:
                maximum = rec.recommendation
        new = _Recommendation(prenormalized, now)
        if old_index is not None:
            self.recommendations[old_index] = new
        else:
            self.recommendations.append(new)
        return maximum

    def normalize_desired_replicas(self, *, current: int, prenormalized: int, min_replicas: int,
                                   now: float) -> tuple[int, str, str]:
        """horizontal.go normalizeDesiredReplicas: (replicas, AbleToScale reason, ScalingLimited reason)."""
        stabilized = self.stabilize_recommendation(prenormalized, now=now)
        able = "ScaleDownStabilized" if stabilized != prenormalized else "ReadyForNewScale"
        desired, reason = convert_desired_replicas_with_rules(current, stabilized, min_replicas,
                                                              self.spec.max_replicas)
        limited = reason if desired != stabilized else f"not {reason}"
        return desired, able, limited

    def stabilize_recommendation_with_behaviors(self, *, current: int, desired: int, now: float) -> tuple[int, str]:
        """horizontal.go stabilizeRecommendationWithBehaviors: the min over the scale-up window bounds a rise,
        the max over the scale-down window bounds a fall."""
        b = self._behavior
        assert b is not None and b.scale_up is not None and b.scale_down is not None
        up_window = b.scale_up.stabilization_window_seconds or 0
        down_window = b.scale_down.stabilization_window_seconds or 0
        up_recommendation = desired
        down_recommendation = desired
        up_cutoff = now - up_window
        down_cutoff = now - down_window
        old_index: int | None = None
        for i, rec in enumerate(self.recommendations):
            if rec.timestamp > up_cutoff:
                up_recommendation = min(rec.recommendation, up_recommendation)
            if rec.timestamp > down_cutoff:
                down_recommendation = max(rec.recommendation, down_recommendation)
            if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
                old_index = i
        recommendation = current
        if recommendation < up_recommendation:
            recommendation = up_recommendation
        if recommendation > down_recommendation:
            recommendation = down_recommendation
        new = _Recommendation(desired, now)
        if old_index is not None:
            self.recommendations[old_index] = new
        else:
            self.recommendations.append(new)
        reason = "ScaleUpStabilized" if desired >= current else "ScaleDownStabilized"
        return recommendation, reason

    def convert_desired_replicas_with_behavior_rate(self, *, current: int, desired: int, min_replicas: int,
                                                    now: float) -> tuple[int, str]:
        """horizontal.go convertDesiredReplicasWithBehaviorRate: the behavior's rate policies, then min/max."""
        b = self._behavior
        assert b is not None and b.scale_up is not None and b.scale_down is not None
        if desired > current:
            limit = calculate_scale_up_limit_with_scaling_rules(current, self.scale_up_events, self.scale_down_events,
                                                                b.scale_up, now=now)
            limit = max(limit, current)  # no further scale-up until the events age out
            if self.spec.max_replicas > limit:
                maximum, reason = limit, "ScaleUpLimit"
            else:
                maximum, reason = self.spec.max_replicas, "TooManyReplicas"
            if desired > maximum:
                return maximum, reason
        elif desired < current:
            limit = calculate_scale_down_limit_with_behaviors(current, self.scale_up_events, self.scale_down_events,
                                                              b.scale_down, now=now)
            limit = min(limit, current)
            if min_replicas < limit:
                minimum, reason = limit, "ScaleDownLimit"
            else:
                minimum, reason = min_replicas, "TooFewReplicas"
            if desired < minimum:
                return minimum, reason
        return desired, "DesiredWithinRange"

    def normalize_desired_replicas_with_behaviors(self, *, current: int, prenormalized: int, min_replicas: int,
                                                  now: float) -> tuple[int, str, str]:
        """horizontal.go normalizeDesiredReplicasWithBehaviors: stabilize, then apply the rate policies."""
        stabilized, reason = self.stabilize_recommendation_with_behaviors(current=current, desired=prenormalized,
                                                                          now=now)
        able = reason if stabilized != prenormalized else "ReadyForNewScale"
        desired, limit_reason = self.convert_desired_replicas_with_behavior_rate(
            current=current, desired=stabilized, min_replicas=min_replicas, now=now)
        limited = limit_reason if desired != stabilized else f"not {limit_reason}"
        return desired, able, limited

    def store_scale_event(self, *, previous: int, new: int, now: float) -> None:
        """horizontal.go storeScaleEvent: kept only with a behavior; an event older than the direction's longest
        policy period is marked outdated (markScaleEventsOutdated) and its slot reused."""
        b = self._behavior
        if b is None:
            return
        if new > previous:
            rules, events, change = b.scale_up, self.scale_up_events, new - previous
        else:
            rules, events, change = b.scale_down, self.scale_down_events, previous - new
        assert rules is not None
        longest = max((p.period_seconds for p in rules.policies or ()), default=0)
        cutoff = now - longest
        old_index: int | None = None
        for i, event in enumerate(events):
            if event.timestamp < cutoff:
                event.outdated = True
            if event.outdated:
                old_index = i
        fresh = _ScaleEvent(change, now)
        if old_index is not None:
            events[old_index] = fresh
        else:
            events.append(fresh)

    # -------------------------------------------------------------- one sync

    def reconcile(
        self, *, now: float, current_replicas: int, pods: Sequence[Pod], metrics: Mapping[str, MetricReading]
    ) -> Decision:
        """horizontal.go reconcileAutoscaler for a scale target at ``current_replicas`` (scale.spec.replicas).
        The caller writes ``desired_replicas`` when ``rescale`` is set (the update itself cannot fail here)."""
        if not self.recommendations:
            # recordInitialRecommendation: the first sight seeds the window with the current count
            self.recommendations.append(_Recommendation(current_replicas, now))
        min_replicas = self.spec.min_replicas
        if current_replicas == 0:
            # scale to zero needs HPAScaleToZero and Object/External metrics: not simulated
            return Decision(time=now, current_replicas=0, desired_replicas=0, rescale=False,
                            scaling_active="ScalingDisabled")
        if current_replicas > self.spec.max_replicas:
            desired, able, limited, active, metric = self.spec.max_replicas, "", "", "", ""
            proposals: tuple[tuple[str, int | str], ...] = ()
        elif current_replicas < min_replicas:
            desired, able, limited, active, metric, proposals = min_replicas, "", "", "", "", ()
        else:
            proposal, metric, proposals, error = self.compute_replicas_for_metrics(
                spec_replicas=current_replicas, pods=pods, metrics=metrics, now=now)
            if proposal == -1:
                return Decision(time=now, current_replicas=current_replicas, desired_replicas=current_replicas,
                                rescale=False, proposals=proposals, scaling_active=f"FailedGetMetric: {error}")
            active = "ValidMetricFound"
            desired = max(0, proposal)
            if self._behavior is None:
                desired, able, limited = self.normalize_desired_replicas(
                    current=current_replicas, prenormalized=desired, min_replicas=min_replicas, now=now)
            else:
                desired, able, limited = self.normalize_desired_replicas_with_behaviors(
                    current=current_replicas, prenormalized=desired, min_replicas=min_replicas, now=now)
        rescale = desired != current_replicas
        if rescale:
            self.store_scale_event(previous=current_replicas, new=desired, now=now)
        return Decision(time=now, current_replicas=current_replicas, desired_replicas=desired, rescale=rescale,
                        metric=metric, proposals=proposals, able_to_scale=able, scaling_active=active,
                        scaling_limited=limited)
