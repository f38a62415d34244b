"""The surge-free revision replacement, simulated step by step with no cluster."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from llm_operator._rollout import RevisionState, plan


def _simulate(desired: int, old_replicas: int, *, max_steps: int = 200) -> tuple[int, list[int]]:
    """Run plan() against a toy cluster where pods start/stop one step after being asked for.

    Returns the final number of new pods and the total pods seen at every step (to check the surge bound).
    """
    old = {"spec": old_replicas, "pods": old_replicas}
    new = {"spec": 0, "pods": 0, "ready": 0}
    totals = []
    for _ in range(max_steps):
        cur = RevisionState("new", "r2", new["spec"], new["pods"], new["ready"], "2")
        olds = [RevisionState("old", "r1", old["spec"], old["pods"], old["pods"], "1")] if old is not None else []
        p = plan(desired=desired, current=cur, old=olds)
        if old is not None:
            if "old" in p.delete:
                old = None
            elif "old" in p.scale:
                old["spec"] = p.scale["old"]
        new["spec"] = p.current_replicas
        # The cluster acts: pods converge to spec one step later; readiness one step after that.
        new["ready"] = min(new["pods"], new["spec"])
        new["pods"] = new["spec"]
        if old is not None:
            old["pods"] = old["spec"]
        totals.append(new["pods"] + (old["pods"] if old else 0))
        if old is None and new["ready"] == desired:
            return new["ready"], totals
    return new["ready"], totals


def test_no_old_revisions_means_the_current_one_gets_everything() -> None:
    p = plan(desired=3, current=None, old=[])
    assert p.current_replicas == 3 and not p.rolling


def test_first_step_frees_one_gpu_slot_before_adding_a_new_pod() -> None:
    cur = RevisionState("new", "b", 0, 0, 0, "2")
    old = RevisionState("old", "a", 2, 2, 2, "1")
    p = plan(desired=2, current=cur, old=[old])
    assert p.scale == {"old": 1}
    assert p.current_replicas == 0  # the old pod has not gone yet


def test_new_pods_wait_until_old_pods_are_really_gone() -> None:
    cur = RevisionState("new", "b", 0, 0, 0, "2")
    old = RevisionState("old", "a", 1, 2, 1, "1")  # spec cut to 1, a pod still terminating
    assert plan(desired=2, current=cur, old=[old]).current_replicas == 0
    old_gone = RevisionState("old", "a", 1, 1, 1, "1")
    assert plan(desired=2, current=cur, old=[old_gone]).current_replicas == 1


def test_not_ready_new_pods_block_further_old_scale_down() -> None:
    cur = RevisionState("new", "b", 1, 1, 0, "2")
    old = RevisionState("old", "a", 1, 1, 1, "1")
    p = plan(desired=2, current=cur, old=[old])
    assert p.scale == {} and p.current_replicas == 1


def test_finished_old_revisions_are_deleted() -> None:
    cur = RevisionState("new", "b", 2, 2, 2, "2")
    old = RevisionState("old", "a", 0, 0, 0, "1")
    p = plan(desired=2, current=cur, old=[old])
    assert p.delete == ["old"] and p.current_replicas == 2


def test_scale_to_zero_during_rollout_stops_everything() -> None:
    cur = RevisionState("new", "b", 1, 1, 0, "2")
    old = RevisionState("old", "a", 3, 3, 3, "1")
    p = plan(desired=0, current=cur, old=[old])
    assert p.scale == {"old": 0} and p.current_replicas == 0


@settings(max_examples=60, deadline=None)
@given(desired=st.integers(min_value=0, max_value=8), old_replicas=st.integers(min_value=0, max_value=8))
def test_rollout_converges_without_ever_surging(desired: int, old_replicas: int) -> None:
    final, totals = _simulate(desired, old_replicas)
    assert final == desired
    assert max(totals) <= max(desired, old_replicas)
