"""How many devices one page of a listing holds (`appwarden devices`, `GET /v1/devices`): in a
module of its own so the command line's help can name the limits without loading the listing."""

from __future__ import annotations

from typing import Final

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
