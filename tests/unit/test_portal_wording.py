"""How the pages word a time left (web.pages.remaining): what fits a phone, counted down to the
minute, and what it says once the time has passed. The page's script words it the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appwarden.web.pages import remaining

NOW = datetime(2020, 7, 10, 16, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (timedelta(hours=14, minutes=54, seconds=59), "14 hours, 54 minutes left"),
        (timedelta(hours=1, minutes=1), "1 hour, 1 minute left"),
        (timedelta(hours=2), "2 hours left"),
        (timedelta(days=2, hours=3, minutes=59), "2 days, 3 hours left"),
        (timedelta(days=1), "1 day left"),
        (timedelta(minutes=45, seconds=30), "45 minutes left"),
        (timedelta(seconds=59), "less than a minute left"),
        (timedelta(0), "just passed"),
        (-timedelta(hours=3, minutes=2), "passed 3 hours, 2 minutes ago"),
        (-timedelta(days=3), "passed 3 days ago"),
    ],
)
def test_the_time_left_in_words(delta, words):
    assert remaining(NOW + delta, NOW) == words


def test_the_script_words_the_time_left_as_the_server_does():
    from pathlib import Path

    script = (Path(__file__).parents[2] / "src/appwarden/web/assets/portal.js").read_text()
    for phrase in ('" left"', '"passed "', '"less than a minute left"', '"just passed"', '", "'):
        assert phrase in script
