"""The console every command prints through (cli/render.py says why every string on it is
literal text). In its own module so that only a command that prints with rich imports rich."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from appwarden.cli.render import plain


class PlainConsole(Console):
    """A console on which every string is literal text: no markup, no emoji codes, no controls.

    Every string rich prints (a message, a table cell or title) goes through `render_str`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(highlight=False, markup=False, emoji=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs.update(markup=False, emoji=False)
        return super().render_str(plain(text), **kwargs)
