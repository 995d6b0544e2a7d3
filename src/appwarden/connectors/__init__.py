"""Inventory connectors: the HTTP clients that fetch a source's pages for a live sync."""
