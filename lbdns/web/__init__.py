"""The HTTP side of lbdns: report ingest, admin API, status page and metrics (aiohttp)."""
