"""Watchlists on the server: lists, entries, signed bundles for the nodes, and hits.

See docs/watchlists.md. `signing` holds the dedicated signing key and turns a
list into a `proto.watchlist.SignedWatchlist`; `service` holds the model
functions the API calls (create, change, entries, bundles, hits confirmed or
rejected, the nodes that lag).
"""

from fleet_server.watchlists.errors import WatchlistError, WatchlistNotFound
from fleet_server.watchlists.signing import WatchlistSigner, sign_bundle

__all__ = ["WatchlistError", "WatchlistNotFound", "WatchlistSigner", "sign_bundle"]
