"""The web app and HTTP API (`avemo serve`, the [serve] extra): `app` (FastAPI: pages, jobs,
Server-Sent Events, the live WebSocket), `workers` (analysis in supervised worker processes) and
`static/` (the pages, their script and style)."""

from .app import ServeSettings, serve

__all__ = ["ServeSettings", "serve"]
