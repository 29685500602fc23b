"""The watchlist package's one root exception."""

from __future__ import annotations

from fleet_server.errors import FleetServerError

__all__ = ["WatchlistError", "WatchlistNotFound"]


class WatchlistError(FleetServerError):
    """Root of what the watchlist package refuses (bad entry, unknown list, expired list)."""


class WatchlistNotFound(WatchlistError):
    """No watchlist (or hit) with that id."""
