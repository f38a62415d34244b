"""The surge-free revision replacement, checked step by step against a simulated cluster (no API server).

The cluster model is deliberately unkind: pods take a random time to load their model before they are Ready,
deleted pods keep their GPUs for their grace period, the Deployment status the planner reads can be a step
behind, and a new spec can arrive in the middle of a rollout. The planner must still never take more than one
replica's worth of readiness away, and never ask for a pod the GPU pool cannot hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from llm_operator.rollout import RevisionState, plan

# ------------------------------------------------------------------------------------------ examples


def test_no_old_revisions_means_the_current_one_gets_everything() -> None:
    p = plan(desired=3, current=None, old=[])
    assert p.current_replicas == 3 and not p.rolling


def test_first_step_frees_one_gpu_slot_before_adding_a_new_pod() -> None:
    cur = RevisionState("new", "b", 0, 0, 0, "2")
    old = RevisionState("old", "a", 2, 2, 2, "1")
    p = plan(desired=2, current=cur, old=[old])
    assert p.scale == {"old": 1}
    assert p.current_replicas == 0  # the old pod has not gone yet


def test_the_second_old_pod_stays_while_the_new_revision_has_no_ready_pod() -> None:
    # The defect of d91e3d4: with the new revision's spec still 0, "every new pod is ready" was vacuously true
    # and the second old pod was cut in the same pass, taking a 2-replica model to 0 ready pods.
    cur = RevisionState("new", "b", 0, 0, 0, "2")
    old = RevisionState("old", "a", 1, 1, 1, "1")
    p = plan(desired=2, current=cur, old=[old])
    assert p.scale == {}
    assert p.current_replicas == 1


def test_terminating_pods_hold_their_gpu_slots() -> None:
    cur = RevisionState("new", "b", 0, 0, 0, "2")
    old = RevisionState("old", "a", 1, 1, 1, "1", terminating=1)  # status.replicas already excludes it
    assert plan(desired=2, current=cur, old=[old]).current_replicas == 0
    gone = RevisionState("old", "a", 1, 1, 1, "1", terminating=0)
    assert plan(desired=2, current=cur, old=[gone]).current_replicas == 1


def test_not_ready_new_pods_block_further_old_scale_down() -> None:
    cur = RevisionState("new", "b", 1, 1, 0, "2")
    old = RevisionState("old", "a", 1, 1, 1, "1")
    p = plan(desired=2, current=cur, old=[old])
    assert p.scale == {} and p.current_replicas == 1


def test_unready_old_pods_are_cut_first_and_freely() -> None:
    # An old pod that never became ready serves nobody: removing it costs no availability.
    cur = RevisionState("new", "b", 0, 0, 0, "2")
    old = RevisionState("old", "a", 3, 3, 1, "1")
    p = plan(desired=3, current=cur, old=[old])
    assert p.scale == {"old": 1}  # two unready pods go; the ready one stays (floor is 2, but only 1 is ready)


def test_finished_old_revisions_are_deleted() -> None:
    cur = RevisionState("new", "b", 2, 2, 2, "2")
    old = RevisionState("old", "a", 0, 0, 0, "1")
    p = plan(desired=2, current=cur, old=[old])
    assert p.delete == ["old"] and p.current_replicas == 2


def test_an_old_revision_with_terminating_pods_is_not_deleted_yet() -> None:
    cur = RevisionState("new", "b", 1, 1, 1, "2")
    old = RevisionState("old", "a", 0, 0, 0, "1", terminating=1)
    p = plan(desired=2, current=cur, old=[old])
    assert p.delete == [] and p.current_replicas == 1


def test_scale_to_zero_during_rollout_stops_everything() -> None:
    cur = RevisionState("new", "b", 1, 1, 0, "2")
    old = RevisionState("old", "a", 3, 3, 3, "1")
    p = plan(desired=0, current=cur, old=[old])
    assert p.scale == {"old": 0}


def test_scale_down_during_rollout_never_shrinks_the_new_revision_below_what_it_has() -> None:
    cur = RevisionState("new", "b", 2, 2, 2, "2")
    old = RevisionState("old", "a", 2, 2, 2, "1")
    p = plan(desired=2, current=cur, old=[old])
    assert p.current_replicas == 2 and p.scale == {"old": 0}


# ------------------------------------------------------------------------------------- cluster model


@dataclass
class Pod:
    state: str  # pending | loading | ready | terminating
    left: int = 0  # ticks until loading -> ready, or terminating -> gone
    age: int = 0


@dataclass
class Deploy:
    name: str
    created: int
    spec: int
    pods: list[Pod] = field(default_factory=list)

    def status(self) -> tuple[int, int, int]:
        live = [p for p in self.pods if p.state != "terminating"]
        return len(live), sum(p.state == "ready" for p in live), len(self.pods) - len(live)


@dataclass
class Cluster:
    """Deployment controller, scheduler and kubelet, one tick at a time."""

    capacity: int
    load_ticks: list[int]  # drawn by hypothesis, consumed cyclically
    grace_ticks: int
    deploys: dict[str, Deploy] = field(default_factory=dict)
    draws: int = 0
    max_pending_behind_gpus: int = 0

    def _draw(self) -> int:
        self.draws += 1
        return self.load_ticks[self.draws % len(self.load_ticks)]

    def holding(self) -> int:
        return sum(p.state != "pending" for d in self.deploys.values() for p in d.pods)

    def ready(self) -> int:
        return sum(p.state == "ready" for d in self.deploys.values() for p in d.pods)

    def tick(self) -> None:
        for d in self.deploys.values():
            live = [p for p in d.pods if p.state != "terminating"]
            if len(live) > d.spec:
                # The ReplicaSet controller deletes pending, then loading, then ready pods; youngest first.
                rank = {"pending": 0, "loading": 1, "ready": 2}
                for pod in sorted(live, key=lambda p: (rank[p.state], p.age))[: len(live) - d.spec]:
                    if pod.state == "pending":
                        d.pods.remove(pod)  # never got a GPU: goes at once
                    else:
                        pod.state, pod.left = "terminating", self.grace_ticks
            for _ in range(d.spec - len(live)):
                d.pods.append(Pod("pending"))
        for d in sorted(self.deploys.values(), key=lambda d: d.created):
            for pod in d.pods:
                if pod.state == "pending" and self.holding() < self.capacity:
                    pod.state, pod.left = "loading", self._draw()
        for d in self.deploys.values():
            for pod in list(d.pods):
                pod.age += 1
                if pod.state in ("loading", "terminating") and pod.left > 0:
                    pod.left -= 1
                elif pod.state == "loading":
                    pod.state = "ready"
                elif pod.state == "terminating":
                    d.pods.remove(pod)
        pending = sum(p.state == "pending" for d in self.deploys.values() for p in d.pods)
        self.max_pending_behind_gpus = max(self.max_pending_behind_gpus, pending)


@dataclass
class Run:
    min_ready_after_start: int
    final_ready: int
    revisions_left: int
    max_pending: int
    ticks: int


def _simulate(
    *, desired: int, spare: int, load_ticks: list[int], grace_ticks: int, changes: list[int], stale: list[bool],
    max_ticks: int = 400,
) -> Run:
    cluster = Cluster(capacity=desired + spare, load_ticks=load_ticks, grace_ticks=grace_ticks)
    cluster.deploys["r0"] = Deploy("r0", 0, desired, [Pod("ready") for _ in range(desired)])
    current = "r0"
    history: list[dict[str, tuple[int, int, int]]] = []
    min_ready = desired
    change_at = {t: i + 1 for i, t in enumerate(sorted(set(changes)))}
    tick = 0
    for tick in range(max_ticks):
        if tick in change_at:  # the user applies a new spec: a new revision, possibly mid-rollout
            current = f"r{change_at[tick]}"
        history.append({n: d.status() for n, d in cluster.deploys.items()})
        # The planner reads specs fresh but status from a list that may be one tick behind.
        seen = history[-2] if stale[tick % len(stale)] and len(history) > 1 else history[-1]

        def state(d: Deploy, seen: dict[str, tuple[int, int, int]] = seen) -> RevisionState:
            replicas, ready, terminating = seen.get(d.name, (0, 0, 0))
            return RevisionState(d.name, d.name, d.spec, replicas, ready, f"{d.created:06d}", terminating)

        cur = cluster.deploys.get(current)
        p = plan(desired=desired, current=state(cur) if cur else None,
                 old=[state(d) for n, d in cluster.deploys.items() if n != current])
        for name, replicas in p.scale.items():
            cluster.deploys[name].spec = replicas
        for name in p.delete:
            for pod in cluster.deploys[name].pods:  # background propagation: pods terminate with grace
                assert pod.state != "ready", f"deleted revision {name} still had a ready pod"
            del cluster.deploys[name]
        if cur is None:
            cluster.deploys[current] = Deploy(current, tick + 1, p.current_replicas)
        else:
            cur.spec = p.current_replicas
        cluster.tick()
        min_ready = min(min_ready, cluster.ready())
        done = tick > max(changes) and list(cluster.deploys) == [current] and cluster.ready() == desired
        if done and all(p.state == "ready" for p in cluster.deploys[current].pods):
            break
    return Run(min_ready, cluster.ready(), len(cluster.deploys), cluster.max_pending_behind_gpus, tick)


rollouts = {
    "desired": st.integers(min_value=1, max_value=6),
    "load_ticks": st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6),
    "grace_ticks": st.integers(min_value=0, max_value=6),
    "changes": st.lists(st.integers(min_value=0, max_value=25), min_size=1, max_size=3),
    "stale": st.lists(st.booleans(), min_size=1, max_size=8),
}


@settings(max_examples=300, deadline=None)
@given(**rollouts)
def test_full_pool_rollout_keeps_desired_minus_one_ready_and_never_asks_for_a_gpu_the_pool_lacks(
    desired: int, load_ticks: list[int], grace_ticks: int, changes: list[int], stale: list[bool]
) -> None:
    run = _simulate(desired=desired, spare=0, load_ticks=load_ticks, grace_ticks=grace_ticks, changes=changes,
                    stale=stale)
    assert run.min_ready_after_start >= desired - 1, run
    # On a pool with no spare GPU a pod asked for before a slot is free sits Pending (and would be reported
    # Unschedulable): the planner must never create one.
    assert run.max_pending == 0, run
    assert run.final_ready == desired and run.revisions_left == 1, run


@settings(max_examples=100, deadline=None)
@given(**rollouts, spare=st.integers(min_value=1, max_value=4))
def test_spare_gpus_change_nothing_about_the_invariants(
    desired: int, load_ticks: list[int], grace_ticks: int, changes: list[int], stale: list[bool], spare: int
) -> None:
    run = _simulate(desired=desired, spare=spare, load_ticks=load_ticks, grace_ticks=grace_ticks, changes=changes,
                    stale=stale)
    assert run.min_ready_after_start >= desired - 1, run
    assert run.final_ready == desired and run.revisions_left == 1, run


def test_the_model_catches_the_old_defect() -> None:
    """The simulation must be able to fail: the planner of d91e3d4 (cut whenever cur_ready >= cur_spec) takes
    a 2-replica rollout to 0 ready pods in this model."""
    import llm_operator.rollout.rolling as rolling

    def old_plan(*, desired: int, current: RevisionState | None, old: list[RevisionState]) -> rolling.Plan:
        remaining = [r for r in old if r.spec_replicas > 0 or r.replicas > 0]
        result = rolling.Plan(current_replicas=desired, delete=[r.name for r in old if r not in remaining])
        if not remaining:
            return result
        cur_spec = current.spec_replicas if current else 0
        cur_ready = current.ready_replicas if current else 0
        spec = {r.name: r.spec_replicas for r in remaining}
        cut = max(sum(spec.values()) - desired, 1 if cur_ready >= cur_spec else 0)
        for r in remaining:
            take = min(spec[r.name], cut)
            spec[r.name] -= take
            cut -= take
            if spec[r.name] != r.spec_replicas:
                result.scale[r.name] = spec[r.name]
        result.current_replicas = max(0, desired - max(sum(r.replicas for r in remaining), sum(spec.values())))
        return result

    global plan
    real = plan
    try:
        plan = old_plan  # type: ignore[assignment]
        run = _simulate(desired=2, spare=0, load_ticks=[2], grace_ticks=0, changes=[0], stale=[False])
    finally:
        plan = real
    assert run.min_ready_after_start == 0
