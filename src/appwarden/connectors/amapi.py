"""Android Management API: `enterprises.devices.list`, page after page through `nextPageToken`.
Authorised by the service account of the enterprise's Cloud project, acting as itself, with the
`androidmanagement` scope (the API has no narrower one)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from appwarden.connectors import Page, page_token_pages
from appwarden.connectors.client import ApiClient

SOURCE = "amapi"
SCOPE = "https://www.googleapis.com/auth/androidmanagement"
_ENTERPRISE: Final = re.compile(r"(?:enterprises/)?([A-Za-z0-9_-]{1,100})")


def enterprise_name(value: str) -> str:
    """`LC02abcd12` or `enterprises/LC02abcd12` → `enterprises/LC02abcd12`."""
    found = _ENTERPRISE.fullmatch(value.strip())
    if found is None:
        raise ValueError(
            f"{value!r} is not an enterprise id (LC02abcd12 or enterprises/LC02abcd12)"
        )
    return f"enterprises/{found.group(1)}"


class AmapiConnector:
    source = SOURCE

    def __init__(
        self, client: ApiClient, base_url: str, enterprise: str, *, page_size: int = 100
    ) -> None:
        self._client = client
        self._url = f"{base_url.rstrip('/')}/v1/{enterprise_name(enterprise)}/devices"
        self._page_size = page_size

    def pages(self) -> Iterator[Page]:
        return page_token_pages(
            self._client,
            self._url,
            {"pageSize": str(self._page_size)},
            api="AMAPI enterprises.devices.list",
            label="amapi devices",
        )
