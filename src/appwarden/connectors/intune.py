"""Intune through Microsoft Graph: the managed devices, then the crawl of detected apps (the
tenant's `detectedApps` pages, then each app's `managedDevices` pages), every collection followed
through `@odata.nextLink` verbatim (it carries the skip token and the original query: never
rebuilt). A next link must stay on the Graph server the run started on, since the bearer token
goes with it. Authorised by an Entra app registration's client credentials.

docs/sources/intune.md says why the crawl: Graph names no app on a device, so only the tenant's
complete app list, each app with all its devices, proves an app absent. The pages of one run are
read together by the mapping (`parse_intune_crawl`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from appwarden.connectors import Page, PageChain, checked_next, json_page
from appwarden.connectors.client import ApiClient, ConnectorError, same_origin

SOURCE = "intune"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MANAGEMENT = "/v1.0/deviceManagement"


class IntuneConnector:
    source = SOURCE

    def __init__(self, client: ApiClient, graph_url: str) -> None:
        self._client = client
        self._graph = graph_url.rstrip("/")

    def pages(self) -> Iterator[Page]:
        yield from self._collection(f"{self._graph}{MANAGEMENT}/managedDevices", "managedDevices")
        app_ids: list[str] = []
        for page, records in self._pages(f"{self._graph}{MANAGEMENT}/detectedApps", "detectedApps"):
            app_ids += [r["id"] for r in records if isinstance(r.get("id"), str) and r["id"]]
            yield page
        for app_id in dict.fromkeys(app_ids):  # each app once, in the order Graph listed them
            url = f"{self._graph}{MANAGEMENT}/detectedApps/{quote(app_id, safe='')}/managedDevices"
            yield from self._collection(url, f"detectedApps('{app_id}')/managedDevices")

    def _collection(self, url: str, name: str) -> Iterator[Page]:
        for page, _ in self._pages(url, name):
            yield page

    def _pages(self, url: str, name: str) -> Iterator[tuple[Page, list[dict[str, Any]]]]:
        """Each page of one collection with its records, following `@odata.nextLink`."""
        chain = PageChain(f"Graph {name}")
        next_url: str | None = url
        while next_url is not None:
            number = chain.next_page()
            label = f"intune {name} page {number}"
            body = self._client.get(next_url, what=f"Graph GET {name} page {number}")
            payload = json_page(body, label)
            records = payload.get("value")
            if not isinstance(records, list):
                raise ConnectorError(f"{label} has no value list")
            next_url = checked_next(payload.get("@odata.nextLink"), label, "@odata.nextLink")
            if next_url is not None:
                if not same_origin(next_url, self._graph):
                    raise ConnectorError(
                        f"{label}: its @odata.nextLink leaves the Graph server the run started on; "
                        "not followed (the access token would go with it)"
                    )
                chain.follow(next_url)
            yield Page(label, body), [r for r in records if isinstance(r, dict)]
