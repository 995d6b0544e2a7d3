"""The agent distribution (`agent/appwarden_agent.py`) loaded as a module, and a policy version
under `unknown: deny` on top of the reference organisation, shared by the agent's and the
targeted checks' tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from appwarden.usecases.demo import APPROVER, AUTHOR, POLICY_TEMPLATE

AGENT_FILE = Path(__file__).resolve().parents[1] / "agent" / "appwarden_agent.py"
AGENT_SECRET = "agent-secret-of-the-test-server-0123456789"
DAVE = "enrollment_id:D4VE-USER-ENROLLMENT-0001"


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
