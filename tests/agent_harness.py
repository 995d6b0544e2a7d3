"""The agent distribution (`agent/appwarden_agent.py`) loaded as a module, and a policy version
under `unknown: deny` on top of the reference organisation, shared by the agent's and the
targeted checks' tests."""

from __future__ import annotations

import hmac
import importlib.util
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

from fastapi.testclient import TestClient

from appwarden.timeutil import iso
from appwarden.usecases.demo import APPROVER, AUTHOR, POLICY_TEMPLATE
from tests.conftest import bearer

AGENT_FILE = Path(__file__).resolve().parents[1] / "agent" / "appwarden_agent.py"
AGENT_SECRET = "agent-secret-of-the-test-server-0123456789"
DAVE = "enrollment_id:D4VE-USER-ENROLLMENT-0001"
POLICY = "tiktok-mobile-email"


def load_agent() -> ModuleType:
    """The agent module, imported once from its file (it is not part of the appwarden package)."""
    name = "appwarden_agent"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, AGENT_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def publish_unknown_deny(cli, tmp_path: Path, *, deadline: str, at: str) -> None:
    """Version 2 of the reference policy with `unknown: deny`, published at `at` (short notice):
    in effect from the end of its undo window, whether or not a worker ran."""
    text = POLICY_TEMPLATE.format(deadline=deadline).replace("unknown: allow", "unknown: deny")
    path = tmp_path / "unknown-deny.yaml"
    path.write_text(text)
    policy = "tiktok-mobile-email"
    steps = (
        ("policy", "apply", str(path), "--as", AUTHOR),
        ("policy", "propose", policy, "--as", AUTHOR),
        ("policy", "approve", policy, "--as", APPROVER),
        ("policy", "publish", policy, "--as", AUTHOR, "--short-notice"),
    )
    for step in steps:
        result = cli(*step, "--at", at)
        assert result.code == 0, (step, result.out, result.err)


@dataclass
class Device:
    client: TestClient
    agent_id: str
    key: bytes
    now: datetime  # the server's clock: what the device signs

    def signed(
        self, method: str, path: str, body: bytes = b"", *, at: datetime | None = None
    ) -> Any:
        timestamp = iso(at or self.now)
        assert timestamp is not None
        headers = {
            "X-Appwarden-Agent": self.agent_id,
            "X-Appwarden-Timestamp": timestamp,
            "X-Appwarden-Signature": load_agent().request_signature(
                self.key, method, path, timestamp, body
            ),
        }
        return self.client.request(method, path, content=body, headers=headers)

    def manifest(self, policy: str = POLICY) -> dict[str, Any]:
        response = self.signed("GET", "/checks/manifest?" + urlencode({"policy": policy}))
        assert response.status_code == 200, response.text
        issued = response.json()
        assert hmac.compare_digest(
            load_agent().manifest_mac(self.key, issued["manifest"]), issued["mac"]
        )
        return issued["manifest"]

    def answer(
        self, manifest: dict[str, Any], present: list[str], *, at: datetime | None = None
    ) -> Any:
        body = load_agent().make_answer(self.key, manifest, present, iso(at or self.now))
        return self.client.post("/checks/answer", json=body)


def enrol(client: TestClient, token: str, device: str, now: datetime) -> Device:
    """Enrol `device` through the API: a code made with an `inventory:write` token, spent by
    /agent/enroll."""
    made = client.post("/v1/agent/codes", json={"device": device}, headers=bearer(token))
    assert made.status_code == 200, made.text
    enrolled = client.post("/agent/enroll", json={"code": made.json()["code"]})
    assert enrolled.status_code == 200, enrolled.text
    body = enrolled.json()
    return Device(client, body["agent_id"], bytes.fromhex(body["device_key"]), now)
