import math

import pytest

from nettrust_core.durations import format_duration, parse_duration


@pytest.mark.parametrize("value, seconds", [
    (90, 90.0),
    (1.5, 1.5),
    (0, 0.0),
    ("90", 90.0),
    ("0", 0.0),
    ("2.5", 2.5),
    ("30s", 30.0),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("1d", 86400.0),
    ("1w", 604800.0),
    ("1h30m", 5400.0),
    ("1d12h", 129600.0),
    ("1h 30m", 5400.0),
    ("  45s ", 45.0),
    ("500ms", 0.5),
    ("1s500ms", 1.5),
    ("1.5h", 5400.0),
    ("0s", 0.0),
])
def test_parse_accepts(value, seconds):
    result = parse_duration(value)
    assert isinstance(result, float)
    assert result == pytest.approx(seconds)


@pytest.mark.parametrize("value", [
    "", "   ", "-5", "-5s", -1, -0.5, "5x", "5 m", "m", "1h30", "30m1h", "1m1m", "5M", "1,5h",
    "s5", "1h-30m", float("nan"), float("inf"), True, None, [30], "٣s",
])
def test_parse_refuses_with_what_is_accepted(value):
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    message = str(info.value)
    assert "invalid duration" in message
    assert "30s" in message and "1h30m" in message       # says what would be accepted


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"),
    (45, "45s"),
    (60, "1m"),
    (90, "1m30s"),
    (3600, "1h"),
    (3900, "1h5m"),
    (86400, "1d"),
    (7 * 86400, "7d"),
    (90061, "1d1h1m1s"),
    (0.5, "500ms"),
    (1.25, "1s250ms"),
    (30.0, "30s"),
])
def test_format(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 0.001, 1, 59.999, 61, 3599, 3600.5, 86399, 7 * 86400 + 1])
def test_format_parses_back(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, "30s", True])
def test_format_refuses_non_durations(bad):
    with pytest.raises(ValueError):
        format_duration(bad)
