"""The dedicated key that signs watchlist bundles, and bundle building.

A `fleet_server.pki.signer.DocumentSigner`, like the audit checkpoint signer:
a key of its own in ``DATA_DIR/pki/watchlist-signer.key`` with a certificate
the online issuing CA issues (CN ``watchlist-signer``, digital signature, no
extended key usage, so no node or service certificate can pass for it). A
node trusts a bundle because that certificate chains to the fleet CA it
already holds; the bundle carries the signer and the issuing CA certificate.
Why not the issuing CA's key: it mints node identities, and a bug in
watchlist signing must not be able to mint one.
"""

from __future__ import annotations

import logging

from fleet_server.pki.signer import DocumentSigner
from proto.watchlist import SIGNER_NAME, SignedWatchlist, WatchlistBody, signed_payload

__all__ = ["WatchlistSigner", "sign_bundle"]

logger = logging.getLogger(__name__)


class WatchlistSigner(DocumentSigner):
    """The watchlist signing key (``pki/watchlist-signer.key``) and its certificate."""

    name = SIGNER_NAME


def sign_bundle(body: WatchlistBody, *, signer: WatchlistSigner) -> SignedWatchlist:
    """`body` signed by `signer`, ready to encode and deliver."""
    return SignedWatchlist(
        body=body, signature=signer.sign(signed_payload(body)), signer_pem=signer.chain_pem
    )
