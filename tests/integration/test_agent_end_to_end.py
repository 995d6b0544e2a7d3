"""The agent, run as a subprocess on this machine, against a running server (uvicorn on a port,
real clock): it enrols with a code from `appwarden agent code`, reports its real dpkg packages,
and a policy on a `deb_package` installed here turns its device `action_required`. On a
`managed_only` device, its targeted check answering "absent" makes the device `compliant`, and
"present" makes it `action_required`. A wrong key, a replay and another policy's manifest are
refused by the running server with every table unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.agent_harness import AGENT_FILE, AGENT_SECRET, load_agent
from tests.conftest import table_digest
from tests.proxy_harness import serve_app

from appwarden.settings import Settings
from appwarden.timeutil import iso
from appwarden.web.app import create_app

agent = load_agent()
ADMIN = "ops@example.com"
LAPTOP = "serial:AGENT-E2E-LAPTOP"
DESKTOP = "serial:AGENT-E2E-DESKTOP"
INSTALLED = "dpkg"  # on every Debian system, this one included
NOT_INSTALLED = "appwarden-no-such-package"


def _inventory(path: Path, observed_at: datetime) -> Path:
    def device(serial: str, kind: str) -> dict[str, Any]:
        return {
            "identifiers": [{"namespace": "serial", "value": serial.split(":")[1]}],
            "platform": "linux",
            "form_factor": "laptop",
            "ownership": "corporate",
            "owner": "lin@example.com",
            "report": {"evidence_kind": kind, "observed_at": iso(observed_at), "apps": []},
        }

    doc = {
        "format": "appwarden.inventory/v1",
        "source": "mdm-export",
        "people": [{"email": "lin@example.com"}],
        "devices": [device(LAPTOP, "none"), device(DESKTOP, "managed_only")],
    }
    path.write_text(json.dumps(doc))
    return path


def _policy(cli, tmp_path: Path, policy_id: str, package: str, now: datetime) -> None:
    text = f"""\
apiVersion: appwarden/v1
kind: AppPolicy
metadata:
  id: {policy_id}
  title: No {package}
spec:
  identifiers:
    - {{namespace: deb_package, value: {package}}}
  scope:
    platforms: [linux]
  deadline: {iso(now + timedelta(days=2))}
  evidence: [inventory, targeted_check]
  enforcement:
    deny: []
"""
    path = tmp_path / f"{policy_id}.yaml"
    path.write_text(text)
    at = iso(now - timedelta(minutes=30))
    for step in (
        ("apply", str(path), "--as", "author@example.com"),
        ("propose", policy_id, "--as", "author@example.com"),
        ("approve", policy_id, "--as", "approver@example.com"),
        ("publish", policy_id, "--as", "author@example.com", "--short-notice"),
    ):
        result = cli("policy", *step, "--at", at)
        assert result.code == 0, (step, result.err)


def _run_agent(config: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(AGENT_FILE), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _state(cli, policy: str, device: str) -> str:
    (row,) = cli("status", "--policy", policy, "--device", device, "--json").json()
    return row["state"]


def _enrol(cli, config: Path, device: str, port: int) -> dict[str, Any]:
    code = cli("agent", "code", device, "--as", ADMIN, "--json").json()["code"]
    _run_agent(config, "enroll", "--server", f"http://127.0.0.1:{port}", "--code", code)
    return dict(line.split(" = ", 1) for line in config.read_text().splitlines() if " = " in line)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_the_agent_reports_and_answers_checks_to_a_running_server(store, cli, tmp_path):
    now = datetime.now(UTC)
    assert (
        cli(
            "import", "native", str(_inventory(tmp_path / "inv.json", now - timedelta(hours=1)))
        ).code
        == 0
    )
    for email, role in (
        (ADMIN, "admin"),
        ("author@example.com", "author"),
        ("approver@example.com", "approver"),
    ):
        assert cli("admin", "create", email, "--role", role).code == 0
    _policy(cli, tmp_path, "no-dpkg", INSTALLED, now)
    _policy(cli, tmp_path, "no-ghost", NOT_INSTALLED, now)
    settings = Settings(
        database_url=store.url, env="test", maildir=tmp_path / "mail", agent_secret=AGENT_SECRET
    )
    with serve_app(create_app(settings)) as port:
        laptop, desktop = tmp_path / "laptop.ini", tmp_path / "desktop.ini"
        _enrol(cli, laptop, LAPTOP, port)
        assert _run_agent(laptop, "report")["reports_applied"] == 1
        assert _state(cli, "no-dpkg", LAPTOP) == "action_required"

        assert _state(cli, "no-ghost", DESKTOP) == "unknown"
        config = _enrol(cli, desktop, DESKTOP, port)
        assert _run_agent(desktop, "check", "--policy", "no-ghost")["present"] == []
        assert _state(cli, "no-ghost", DESKTOP) == "compliant"
        assert _run_agent(desktop, "check", "--policy", "no-dpkg")["present"] == [
            f"deb_package:{INSTALLED}"
        ]
        assert _state(cli, "no-dpkg", DESKTOP) == "action_required"

        _refusals_change_nothing(store, port, config)


def _refusals_change_nothing(store, port: int, config: dict[str, str]) -> None:
    key = bytes.fromhex(config["device_key"])
    device = agent.Config(f"http://127.0.0.1:{port}", config["agent_id"], config["device_key"])
    issued = agent.signed(device, "GET", "/checks/manifest?policy=no-ghost")["manifest"]
    other = agent.signed(device, "GET", "/checks/manifest?policy=no-dpkg")["manifest"]
    good = agent.make_answer(key, issued, [], agent.now_rfc3339())
    assert httpx.post(f"http://127.0.0.1:{port}/checks/answer", json=good).status_code == 200
    wrong_key = agent.make_answer(bytes(32), other, [], agent.now_rfc3339())
    replay = good
    crossed = agent.make_answer(key, other, [], agent.now_rfc3339())
    crossed["answer"]["policy"] = "no-ghost"
    crossed["mac"] = agent.answer_mac(key, crossed["answer"])
    for name, body in (("wrong key", wrong_key), ("replay", replay), ("another manifest", crossed)):
        before = table_digest(store.engine)
        refused = httpx.post(f"http://127.0.0.1:{port}/checks/answer", json=body)
        assert refused.status_code == 403, (name, refused.text)
        assert table_digest(store.engine) == before, name
