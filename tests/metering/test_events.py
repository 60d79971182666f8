from datetime import datetime, timezone
from decimal import Decimal

import pytest

from myriad.errors import InvalidRequest
from myriad.metering import Resources, Subject, Usage, UsageEvent


def test_subject_string_round_trips_with_slashes_in_parts():
    s = Subject("acme", "ann@example.com", "research/r1")
    assert str(s) == "tenant/acme/user/ann%40example.com/agent/research%2Fr1"
    assert Subject.parse(str(s)) == s
    assert Subject.parse("tenant/acme") == Subject("acme")


@pytest.mark.parametrize("bad", ["", "user/x", "tenant/a/user", "tenant/a/robot/x", "tenant/a/tenant/b"])
def test_bad_subject_strings_are_refused(bad):
    with pytest.raises(InvalidRequest):
        Subject.parse(bad)


def test_cloudevent_round_trip():
    ev = UsageEvent(
        subject=Subject("acme", "ann"),
        usage=Usage.tokens_of("gpt", input=100, output=20, cached=40, reasoning=5),
        id="req-1",
        source="/myriad/models",
        type="dev.myriad.usage.model",
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        attributes={"request_id": "r1"},
    )
    ce = ev.to_cloudevent()
    assert ce["specversion"] == "1.0" and ce["subject"] == "tenant/acme/user/ann"
    assert ce["time"] == "2026-01-02T03:04:05Z"
    assert ce["data"]["measurements"] == {
        "model.requests": "1",
        "model.input_tokens": "60",
        "model.output_tokens": "20",
        "model.cached_tokens": "40",
        "model.reasoning_tokens": "5",
    }
    back = UsageEvent.from_cloudevent(ce)
    assert back.to_cloudevent() == ce


def test_from_openai_splits_cached_prompt_tokens():
    u = Usage.from_openai(
        {"prompt_tokens": 1000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 800},
         "completion_tokens_details": {"reasoning_tokens": 10}},
        "gpt",
    )
    assert u.micro()[Resources.INPUT_TOKENS] == 200 * 10**6
    assert u.micro()[Resources.CACHED_TOKENS] == 800 * 10**6
    assert u.tokens() == 1050  # reasoning is part of output, not counted twice


@pytest.mark.parametrize(
    "ce, word",
    [
        ({"id": "x", "source": "s", "type": "t", "subject": "tenant/a", "data": {}}, "measurements"),
        ({"id": "x", "source": "s", "type": "t", "subject": "tenant/a", "data": {"measurements": {"Bad Name": 1}}}, "resource"),
        ({"id": "x", "source": "s", "type": "t", "subject": "tenant/a", "data": {"measurements": {"a.b": -1}}}, "negative"),
        ({"id": "x", "source": "s", "type": "t", "subject": "tenant/a", "data": {"measurements": {"a.b": "lots"}}}, "number"),
        ({"id": "x", "source": "s", "type": "t", "subject": "tenant/a", "time": "2026-01-01T00:00:00",
          "data": {"measurements": {"a.b": 1}}}, "timezone"),
        ({"source": "s", "type": "t", "subject": "tenant/a", "data": {"measurements": {"a.b": 1}}}, "'id'"),
    ],
)
def test_bad_cloudevents_name_the_problem(ce, word):
    with pytest.raises(InvalidRequest) as e:
        UsageEvent.from_cloudevent(ce).usage.micro()
    assert word in str(e.value)


def test_quantities_are_exact_to_micro_units():
    u = Usage({"sandbox.container.memory_gb_s": Decimal("0.1234565")})
    assert u.micro() == {"sandbox.container.memory_gb_s": 123456}  # half-even
    assert Usage({"x.y": 0.1}).micro() == {"x.y": 100000}
