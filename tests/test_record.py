"""The durable record as a person reads it in MLflow: readable times, no stale state tags."""

from __future__ import annotations

import pytest

from registry.record import format_stamp, parse_time, time_of
from registry.versions import ModelVersion

# -- times: ISO 8601 written, both forms read -------------------------------------------


def test_times_are_written_as_iso_8601_utc_to_the_millisecond():
    assert format_stamp(1700000000.1234) == "2023-11-14T22:13:20.123Z"
    assert format_stamp(1700000000.9996) == "2023-11-14T22:13:21.000Z"
    assert format_stamp(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2023-11-14T22:13:20.123Z", 1700000000.123),
        ("2023-11-14T22:13:20Z", 1700000000.0),
        ("2023-11-14T23:13:20+01:00", 1700000000.0),
        ("2023-11-14T22:13:20", 1700000000.0),  # no offset: the record is UTC
        ("1700000000.123", 1700000000.123),  # the form written before ISO 8601
        ("1700000000", 1700000000.0),
        (" 1700000000.5 ", 1700000000.5),
    ],
)
def test_both_recorded_forms_read_the_same(text, seconds):
    assert parse_time(text) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize("text", ["", "   ", None, "soon", "nan", "inf", "2023-13-45T00:00:00Z"])
def test_anything_else_reads_as_no_time(text):
    assert parse_time(text) is None


def test_a_written_time_reads_back_as_written():
    for at in (1700000000.0, 1795800000.123, 1234567890.999):
        assert parse_time(format_stamp(at)) == pytest.approx(at, abs=5e-4)
        assert format_stamp(parse_time(format_stamp(at)) or 0) == format_stamp(at)


def test_time_of_reads_a_version_tag_in_either_form():
    mv = ModelVersion(
        "churn",
        "1",
        "Production",
        tags={
            "registry_bot.decided_at": "1700000000.000",
            "registry_bot.production_since": "2023-11-14T22:13:20.000Z",
        },
    )
    assert time_of(mv, "decided_at") == time_of(mv, "production_since") == 1700000000.0
    assert time_of(mv, "archived_at") is None
