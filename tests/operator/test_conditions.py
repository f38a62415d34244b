"""metav1.Condition semantics: lastTransitionTime moves only when the status flips."""

from __future__ import annotations

from llm_operator._conditions import DEGRADED, PROGRESSING, READY, Condition, find, merge


def test_new_conditions_get_the_timestamp_and_generation() -> None:
    out = merge(None, [Condition(READY, False, "ReplicasNotReady", "0/1")], generation=3, timestamp="T1")
    assert out == [{"type": READY, "status": "False", "observedGeneration": 3, "lastTransitionTime": "T1",
                    "reason": "ReplicasNotReady", "message": "0/1"}]


def test_same_status_keeps_the_transition_time_even_if_reason_changes() -> None:
    old = merge(None, [Condition(READY, False, "ReplicasNotReady", "0/2")], generation=1, timestamp="T1")
    new = merge(old, [Condition(READY, False, "SecretNotFound", "create it")], generation=2, timestamp="T2")
    assert new[0]["lastTransitionTime"] == "T1"
    assert new[0]["reason"] == "SecretNotFound" and new[0]["observedGeneration"] == 2


def test_flipping_status_moves_the_transition_time() -> None:
    old = merge(None, [Condition(READY, False, "ReplicasNotReady", "0/1")], generation=1, timestamp="T1")
    new = merge(old, [Condition(READY, True, "AllReplicasReady", "1/1")], generation=1, timestamp="T2")
    assert new[0]["lastTransitionTime"] == "T2" and new[0]["status"] == "True"


def test_conditions_come_out_in_a_stable_order() -> None:
    conds = [Condition(DEGRADED, False, "AsExpected", ""), Condition(READY, True, "AllReplicasReady", ""),
             Condition(PROGRESSING, False, "RolloutComplete", "")]
    out = merge(None, conds, generation=1, timestamp="T")
    assert [c["type"] for c in out] == [READY, PROGRESSING, DEGRADED]
    assert find(out, PROGRESSING) is out[1]
    assert find(out, "Missing") is None
