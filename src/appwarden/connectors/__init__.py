"""Inventory connectors: the HTTP clients that fetch a source's pages for a live sync.

One module per API source (`fleet`, `intune`, `google`, `amapi`, `jamf`). Each connector yields
the raw bytes of every page of one run, exactly as the vendor's API answered them: exactly what a
file import of the same pages would read, so `appwarden sync` and `appwarden import` share the
mappings of `sources/` unchanged. A connector reads a page only as far as paging needs (the next
link, the next page token, the ids of an Intune crawl); everything else is the mapping's job.

What they share: `client.ApiClient` (timeouts, `Retry-After`, backoff with jitter, bounded
attempts, secrets scrubbed from every error) and `appwarden.oauth` (the token sources, shared
with `enforcement/`). `registry.connector_for` builds one from the settings. Nothing here touches
the store: `usecases/sync.py` parses and ingests what a connector yields.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from appwarden.connectors.client import ApiClient, ConnectorError

__all__ = [
    "MAX_PAGES",
    "Connector",
    "ConnectorError",
    "Page",
    "PageChain",
    "checked_next",
    "json_page",
    "page_token_pages",
]

# A run that has not ended after this many pages of one collection is a server that never says
# "last page": stop rather than loop for ever.
MAX_PAGES = 100_000


@dataclass(frozen=True, slots=True)
class Page:
    """One response page: `label` names it in located errors (`fleet hosts page 3: $.hosts[2]`)."""

    label: str
    body: bytes


class Connector(Protocol):
    source: str  # the name of the source's mapping in sources/registry.py

    def pages(self) -> Iterator[Page]: ...


def json_page(body: bytes, label: str) -> dict[str, Any]:
    """A page as far as paging needs it: a JSON object, else ConnectorError (the page is not
    what the API documents, so where the next one is cannot be known)."""
    try:
        page = json.loads(body)
    except ValueError:
        raise ConnectorError(f"{label} is not JSON: cannot tell where the next page is") from None
    if not isinstance(page, dict):
        raise ConnectorError(f"{label} is not a JSON object: cannot tell where the next page is")
    return page


def checked_next(value: object, label: str, key: str) -> str | None:
    """A next-page token or link: a non-empty string, absent or empty on the last page."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConnectorError(f"{label}: {key} is not a string")
    return value


class PageChain:
    """Guards one collection's paging: a token or link seen twice, or too many pages, is an error
    rather than a loop."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.count = 0
        self._seen: set[str] = set()

    def next_page(self) -> int:
        self.count += 1
        if self.count > MAX_PAGES:
            raise ConnectorError(f"{self.label}: more than {MAX_PAGES} pages; stopped")
        return self.count

    def follow(self, token: str) -> str:
        if token in self._seen:
            raise ConnectorError(f"{self.label}: the API repeated a page token or link")
        self._seen.add(token)
        return token


def page_token_pages(
    client: ApiClient, url: str, params: dict[str, str], *, api: str, label: str
) -> Iterator[Page]:
    """Every page of a Google-style collection (`pageToken` in, `nextPageToken` out): the
    Directory API's mobile devices and AMAPI's devices page alike. `api` names the call in
    errors, `label` each page (`google mobiledevices page 3`)."""
    chain = PageChain(api)
    token: str | None = None
    while True:
        number = chain.next_page()
        name = f"{label} page {number}"
        query = params if token is None else {**params, "pageToken": token}
        body = client.get(url, what=f"{api} page {number}", params=query)
        token = checked_next(json_page(body, name).get("nextPageToken"), name, "nextPageToken")
        yield Page(name, body)
        if token is None:
            return
        chain.follow(token)
