"""`--now` fuzzing through the real CLI (click's CliRunner, exceptions caught): any value, as
the flag or as NURTURE_NOW, ends with exit code 0, 1 or 2, a clean message, no traceback and
no "internal error" (how the CLI reports an unexpected exception)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from hypothesis import strategies as st

from nurture_mail.cli import cli
from nurture_mail.durations import parse_instant

from .fuzz_strategies import fuzz, nasty_text

EML = b"From: Lee <lee@example.com>\r\nSubject: Re: hello\r\nIn-Reply-To: <x@y.z>\r\n\r\nback on Monday\r\n"

aware = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1),
)
now_values = st.one_of(
    nasty_text,
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(datetime.isoformat),
    aware.map(datetime.isoformat),
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "9999-12-31", "0001-01-01",
                     "2027-02-29", "2027-03-01T24:00:00Z", "2027-03-01T12:00:00z", "2027-03-01 12:00",
                     "20270301T120000Z", "2027-W09-1", "now", "-1", "", " ", "2027-03-01T12:00:00+25:00",
                     "2027-03-01T12:00:00.1234567Z", "١٢٣٤-٠١-٠١", "2027-03-01\x00", "--help", "-v"]),
)


def invoke(args, env=None):
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=True)
    output = (result.stdout or "") + (result.stderr or "")
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, output, result.exception)
    assert "Traceback" not in output, output
    assert "internal error" not in output, output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: escaped {result.exception!r}")
    return result, output


def _valid(value: str) -> bool:
    try:
        parse_instant(value)
    except ValueError:
        return False
    return True


@pytest.mark.timeout(300)
def test_now_values_through_the_cli(request, workspace):
    eml = workspace / "reply.eml"
    eml.write_bytes(EML)

    def check(case):
        value, how = case
        value = value.replace("\x00", "")  # argv and environment cannot carry NUL
        if how == "flag":
            args, env = ["--now", value, "unsubscribe", "nobody@example.com"], None
        elif how == "env":
            args, env = ["unsubscribe", "nobody@example.com"], {"NURTURE_NOW": value}
        else:
            args, env = ["--now", value, "replies", "classify", str(eml), "--format", "json"], None
        result, output = invoke(args, env)
        if result.exit_code == 0 and value.strip():
            assert _valid(value), (value, output)
        if result.exit_code == 1:
            assert "error: " in output

    fuzz(request, st.tuples(now_values, st.sampled_from(["flag", "env", "classify"])), check)


def test_extreme_but_valid_instants(run_cli, workspace):
    """The calendar's edges with offsets that push them past it are user errors, not crashes."""
    for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        result, output = invoke(["--now", value, "unsubscribe", "nobody@example.com"])
        assert result.exit_code == 1 and "--now" in output
    result, _ = invoke(["--now", datetime(2027, 3, 1, tzinfo=UTC).isoformat(), "unsubscribe", "nobody@example.com"])
    assert result.exit_code == 0
