"""TLS contexts for the node's connections, and swapping a renewed certificate in.

The MQTT transport keeps one `ssl.SSLContext` for its whole life; paho wraps
every new socket with it. After a renewal the new certificate and key are
loaded into that same context (`reload_client_certificate`), so the next
connect presents the new certificate without rebuilding the client, its
session state or its subscriptions.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["client_context", "reload_client_certificate"]


def client_context(
    *, ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """A client context that verifies the server against `ca_file` and presents our cert."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context


def reload_client_certificate(
    context: ssl.SSLContext, *, cert_file: Path, key_file: Path | None
) -> None:
    """Load a (renewed) certificate and key into an existing context for new connections."""
    context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
