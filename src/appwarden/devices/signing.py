"""The agent wire format's cryptography (docs/targeted-check.md): pure, standard library only.

Every agent has a key of its own, HMAC-SHA256(APPWARDEN_AGENT_SECRET, "appwarden-agent-key/v1\\n"
+ agent id): nothing recoverable is stored, and the same secret derives it again on every request.
Three messages are authenticated with it, each under its own label so that one can never be
passed off as another:

- a request (`/agent/report`, `/checks/manifest`): method, path with its query, the signed time
  and the body's SHA-256, one per line;
- a manifest (server to device) and an answer (device to server): their canonical JSON.

The agent (`agent/appwarden_agent.py`) implements the same bytes independently; the tests check
both against each other.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Final

KEY_LABEL: Final = b"appwarden-agent-key/v1\n"
REQUEST_LABEL: Final = "appwarden-request/v1"
MANIFEST_LABEL: Final = b"appwarden-manifest/v1\n"
ANSWER_LABEL: Final = b"appwarden-answer/v1\n"


def canonical(value: Any) -> bytes:
    """JSON with sorted keys, no spaces, UTF-8 (not \\u escapes): the bytes a MAC and a manifest
    hash are taken over."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def derive_key(server_secret: bytes, agent_id: str) -> bytes:
    return hmac.new(server_secret, KEY_LABEL + agent_id.encode("utf-8"), hashlib.sha256).digest()


def request_input(method: str, path: str, timestamp: str, body: bytes) -> bytes:
    """What a request's signature covers, byte for byte."""
    lines = (REQUEST_LABEL, method.upper(), path, timestamp, hashlib.sha256(body).hexdigest())
    return "\n".join(lines).encode("utf-8")


def request_mac(key: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    return hmac.new(key, request_input(method, path, timestamp, body), hashlib.sha256).hexdigest()


def manifest_hash(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(manifest)).hexdigest()


def manifest_mac(key: bytes, manifest: dict[str, Any]) -> str:
    return hmac.new(key, MANIFEST_LABEL + canonical(manifest), hashlib.sha256).hexdigest()


def answer_mac(key: bytes, answer: dict[str, Any]) -> str:
    return hmac.new(key, ANSWER_LABEL + canonical(answer), hashlib.sha256).hexdigest()


def same_mac(expected: str, given: object) -> bool:
    """Constant-time comparison of a hex MAC with what the caller sent."""
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())
