"""ActiveSync requests from the reference organisation's phones (`appwarden demo`), as a mail
app sends them to the proxy (test helper for the gate behind a real proxy)."""

from __future__ import annotations

from appwarden.access.gate import encode_eas_base64_query

EAS = "/Microsoft-Server-ActiveSync"
ALICE = "6F24CAD599A5BF1A690246B8C68FAE8D"  # alice's iPhone: TikTok, denied after the deadline
BOB = "B0B0A1D2E3F4A5B6C7D8E9F0A1B2C3D4"  # bob's phone: compliant
CAROL = "CA201C0FFEE0000000000000000A2210"  # carol's phone: denied after the deadline


def plain(user: str, device: str) -> str:
    """The request URI with a plain query (every client; the only form before protocol 12.1)."""
    return f"{EAS}?Cmd=Sync&User={user}&DeviceId={device}&DeviceType=SmartPhone"


def base64(user: str, device: str) -> str:
    """The same request with the base64-encoded query of [MS-ASHTTP] 2.2.1.1.1.1."""
    query = encode_eas_base64_query(
        command="Sync", device_id=device, device_type="SmartPhone", user=user
    )
    return f"{EAS}?{query}"
