"""The annotation protocol of `kubectl llm` (llm_operator.rollout.requests): pure, no cluster."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from llm_operator.api import RolloutStatus
from llm_operator.rollout import requests as rq
from llm_operator.rollout.requests import (
    ACTIONS,
    INVALID,
    MAX_VALUE_LENGTH,
    PAUSED_ANNOTATION,
    REQUEST_ANNOTATION,
    Request,
    new_request,
    parse,
    patch_for,
    pending,
    user_paused,
)
from pydantic import ValidationError

NOW = datetime(2026, 11, 23, 7, 30, 0, tzinfo=UTC)


def test_annotation_names_live_under_the_api_group() -> None:
    assert REQUEST_ANNOTATION == "serving.llmops.dev/rollout-request"
    assert PAUSED_ANNOTATION == "serving.llmops.dev/rollout-paused"
    assert ACTIONS == ("promote", "promote-full", "abort", "retry")
    assert (*ACTIONS, "pause", "resume") == rq.VERBS


# ------------------------------------------------------------------------------------------- new_request


@pytest.mark.parametrize("action", ACTIONS)
def test_new_request_is_action_utc_time_and_six_hex(action: str) -> None:
    value = new_request(action, now=NOW)
    assert re.fullmatch(rf"{re.escape(action)}/20261123T073000Z-[0-9a-f]{{6}}", value), value
    assert parse(value) == Request(action, value, id=value.split("/", 1)[1])


def test_new_request_converts_to_utc_and_takes_naive_times_as_utc() -> None:
    plus_two = datetime(2026, 11, 23, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    assert new_request("abort", now=plus_two).startswith("abort/20261123T073000Z-")
    assert new_request("abort", now=NOW.replace(tzinfo=None)).startswith("abort/20261123T073000Z-")


def test_new_request_ids_are_unique_within_one_second() -> None:
    values = {new_request("promote", now=NOW) for _ in range(200)}
    assert len(values) == 200  # 16.7M suffixes: a collision in 200 draws is ~1e-3; flaky only in theory


@pytest.mark.parametrize("bad", ["pause", "resume", "Promote", "", "rollback"])
def test_new_request_refuses_what_is_not_a_one_shot_action(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown rollout request"):
        new_request(bad, now=NOW)


def test_a_request_value_fits_the_status_field_that_records_it() -> None:
    value = new_request("promote-full", now=NOW)
    assert len(value) <= MAX_VALUE_LENGTH
    assert RolloutStatus(last_request=value).last_request == value
    # MAX_VALUE_LENGTH is the status field's bound: one character more would make the status write fail.
    RolloutStatus(last_request="x" * MAX_VALUE_LENGTH)
    with pytest.raises(ValidationError):
        RolloutStatus(last_request="x" * (MAX_VALUE_LENGTH + 1))


# ------------------------------------------------------------------------------------------------ pending


def test_no_annotations_no_request() -> None:
    assert pending(None, None) is None
    assert pending({}, "promote/x") is None
    assert pending({"other": "promote/1"}, None) is None


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_request_annotation_asks_for_nothing(blank: str) -> None:
    assert pending({REQUEST_ANNOTATION: blank}, None) is None


def test_a_new_value_is_pending_until_recorded_then_never_again() -> None:
    value = new_request("promote", now=NOW)
    annotations = {REQUEST_ANNOTATION: value}
    request = pending(annotations, None)
    assert request is not None and request.valid
    assert (request.action, request.value, request.id, request.reason) == ("promote", value, value[8:], "")
    assert request.record == value
    # The operator stores request.record in status.rollout.lastRequest: the same value is then done, also after
    # a restart (the state is in status, not in memory).
    assert pending(annotations, request.record) is None
    # A previous request's record does not hide a new one, even with the same action.
    again = new_request("promote", now=NOW + timedelta(seconds=1))
    assert pending({REQUEST_ANNOTATION: again}, request.record) == parse(again)


def test_same_action_needs_a_new_id() -> None:
    assert pending({REQUEST_ANNOTATION: "abort/1"}, "abort/1") is None
    request = pending({REQUEST_ANNOTATION: "abort/2"}, "abort/1")
    assert request is not None and request.action == "abort" and request.id == "2"


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_parses(action: str) -> None:
    request = pending({REQUEST_ANNOTATION: f"{action}/argocd-20261123.073000"}, "retry/old")
    assert request is not None and request.action == action and request.id == "argocd-20261123.073000"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("promote", "expected <action>/<id>"),
        ("promote/", "the id after promote/"),
        ("promote/ 1", "the id after promote/"),
        ("promote/a/b", "the id after promote/"),
        ("promote/-1", "starting with a letter or digit"),
        ("Promote/1", "unknown action 'Promote'"),
        ("rollback/1", "unknown action 'rollback'; expected one of promote, promote-full, abort, retry"),
        ("pause/1", "unknown action 'pause'"),  # pausing has its own annotation
        ("/1", "unknown action ''"),
        (" promote/1", "unknown action ' promote'"),
    ],
)
def test_malformed_values_come_back_invalid_with_the_raw_value_and_a_reason(value: str, reason: str) -> None:
    request = pending({REQUEST_ANNOTATION: value}, None)
    assert request is not None
    assert request.action == INVALID and not request.valid
    assert request.value == value and request.id is None
    assert reason in request.reason
    # Reported once: recorded like any request, the same bad value is not pending again.
    assert pending({REQUEST_ANNOTATION: value}, request.record) is None


def test_an_overlong_value_is_invalid_and_recorded_as_a_short_digest() -> None:
    value = "promote/" + "x" * 200
    request = pending({REQUEST_ANNOTATION: value}, None)
    assert request is not None and request.action == INVALID and "longer than 128" in request.reason
    assert request.value == value
    assert len(request.record) <= MAX_VALUE_LENGTH and request.record.startswith("invalid/sha256-")
    RolloutStatus(last_request=request.record)  # fits the status field
    assert pending({REQUEST_ANNOTATION: value}, request.record) is None
    other = pending({REQUEST_ANNOTATION: value + "y"}, request.record)
    assert other is not None and other.record != request.record


def test_a_value_of_exactly_the_limit_is_kept_as_is() -> None:
    value = "abort/" + "1" * (MAX_VALUE_LENGTH - len("abort/"))
    request = parse(value)
    assert request.valid and request.record == value


def test_parse_never_raises_on_odd_input() -> None:
    for value in ["/", "//", "\n", "promote/\u00e9", "promote-full/1\n", "a" * 10_000]:
        assert parse(value).action == INVALID


# -------------------------------------------------------------------------------------------- user_paused


@pytest.mark.parametrize(
    ("annotations", "paused"),
    [
        (None, False),
        ({}, False),
        ({PAUSED_ANNOTATION: "true"}, True),
        ({PAUSED_ANNOTATION: "True"}, True),
        ({PAUSED_ANNOTATION: " TRUE "}, True),
        ({PAUSED_ANNOTATION: "false"}, False),
        ({PAUSED_ANNOTATION: ""}, False),
        ({PAUSED_ANNOTATION: "yes"}, False),
        ({REQUEST_ANNOTATION: "promote/1"}, False),
    ],
)
def test_user_paused(annotations: dict[str, str] | None, paused: bool) -> None:
    assert user_paused(annotations) is paused


# ---------------------------------------------------------------------------------------------- patch_for


def _annotations_after(before: dict[str, str], patch: dict[str, object]) -> dict[str, str]:
    """RFC 7386 applied to metadata.annotations, as the API server does with a merge patch."""
    meta = patch["metadata"]
    assert isinstance(meta, dict) and set(meta) == {"annotations"}  # metadata only, never spec or status
    after = dict(before)
    for key, value in meta["annotations"].items():
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value
    return after


@pytest.mark.parametrize("action", ["promote", "promote-full"])
def test_promote_sets_the_request_and_lifts_the_pause_in_one_patch(action: str) -> None:
    patch = patch_for(action, now=NOW)
    assert set(patch) == {"metadata"}
    annotations = patch["metadata"]["annotations"]
    assert annotations[PAUSED_ANNOTATION] is None
    assert re.fullmatch(rf"{action}/20261123T073000Z-[0-9a-f]{{6}}", annotations[REQUEST_ANNOTATION])
    after = _annotations_after({PAUSED_ANNOTATION: "true", "team": "a"}, patch)
    assert not user_paused(after) and after["team"] == "a"
    request = pending(after, None)
    assert request is not None and request.action == action


@pytest.mark.parametrize("action", ["abort", "retry"])
def test_abort_and_retry_set_only_the_request(action: str) -> None:
    patch = patch_for(action, now=NOW)
    assert set(patch["metadata"]["annotations"]) == {REQUEST_ANNOTATION}
    after = _annotations_after({PAUSED_ANNOTATION: "true"}, patch)
    assert user_paused(after)  # an abort or retry does not lift a person's pause
    request = pending(after, "promote/earlier")
    assert request is not None and request.action == action


def test_pause_and_resume_touch_only_the_pause_annotation() -> None:
    pause, resume = patch_for("pause", now=NOW), patch_for("resume", now=NOW)
    assert pause == {"metadata": {"annotations": {PAUSED_ANNOTATION: "true"}}}
    assert resume == {"metadata": {"annotations": {PAUSED_ANNOTATION: None}}}
    before = {REQUEST_ANNOTATION: "promote/1"}
    assert user_paused(_annotations_after(before, pause))
    assert _annotations_after(_annotations_after(before, pause), resume) == before


def test_two_patches_of_the_same_action_carry_different_requests() -> None:
    first, second = patch_for("retry", now=NOW), patch_for("retry", now=NOW)
    assert first["metadata"]["annotations"][REQUEST_ANNOTATION] != second["metadata"]["annotations"][
        REQUEST_ANNOTATION]


@pytest.mark.parametrize("bad", ["", "status", "Promote", "invalid", "promote --full"])
def test_patch_for_refuses_unknown_verbs(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown rollout verb"):
        patch_for(bad, now=NOW)
