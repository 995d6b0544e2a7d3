"""Message templates shipped with appwarden. Their digest is part of what a policy approval binds:
an edited template voids approvals (docs/notices.md, "Templates")."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def templates_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(TEMPLATE_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(TEMPLATE_DIR).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
