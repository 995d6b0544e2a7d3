"""`json_too_deep` finds the first bracket nested too deep, whatever the text holds: brackets
inside strings (escaped quotes included) do not count, unbalanced text is left to the decoder.
Its fast check must answer exactly as the token-by-token scan it short-cuts."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from appwarden.documents import json_too_deep

TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def token_scan(text: str, depth: int) -> int | None:
    """The plain scan: every string and bracket in turn."""
    level = 0
    for match in TOKENS.finditer(text):
        if match.group() in ("[", "{"):
            level += 1
            if level > depth:
                return match.start()
        elif match.group() in ("]", "}"):
            level -= 1
    return None


def test_a_page_of_apps_within_the_limit_passes():
    apps = ",".join('{"namespace": "ios_bundle_id", "value": "a.b[{"}' for _ in range(1000))
    assert json_too_deep('{"devices": [{"apps": [' + apps + "]}]}") is None


def test_the_first_bracket_past_the_limit_is_located():
    text = '{"a": ' + "[" * 70 + "]" * 70 + "}"
    assert json_too_deep(text) == text.index("[") + 63  # the 65th level: `{` is the first


def test_brackets_in_strings_do_not_count():
    text = '["' + "[" * 100 + '\\"' + "{" * 100 + '"]'
    assert json_too_deep(text) is None


@given(
    st.lists(
        st.sampled_from(["[", "]", "{", "}", '"', "\\", "\n", "x", '"[{"', '"\\"["', ","])
    ).map("".join),
    st.integers(min_value=0, max_value=6),
)
def test_the_fast_check_answers_as_the_token_scan(text: str, depth: int) -> None:
    assert json_too_deep(text, depth) == token_scan(text, depth)
