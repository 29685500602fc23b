"""Nodes read the OTA repository with their client certificate (mutual TLS over HTTPS).

uvicorn asks for no client certificate by default and does not fill the ASGI
TLS extension, so the app could never tell a node from anyone else.
`ClientCertH11Protocol` is uvicorn's own h11 protocol that, once the TLS
handshake verified a client certificate against the fleet CA chain
(`ssl_cert_reqs=CERT_OPTIONAL`: browsers and technicians still connect
without one), hands the certificate to the app as the ASGI TLS extension's
`client_cert_chain`. `uvicorn_client_cert_options` is what `nigehbaan server
--https` passes to uvicorn for it. `node_for_certificate` then decides
whether the certificate is a live node's: issued by this server (in the
`nodecertificate` table), not revoked, its node not decommissioned — the
TLS layer checks the chain, not the CRL.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlmodel import Session
from uvicorn.protocols.http.h11_impl import H11Protocol

from fleet_server.models import Node, NodeCertificate
from fleet_server.ota.errors import OtaServerError

__all__ = [
    "CertificateRefused",
    "ClientCertH11Protocol",
    "node_for_certificate",
    "uvicorn_client_cert_options",
]


class CertificateRefused(OtaServerError):
    """A verified client certificate that is not a live node's."""


class _WithClientCert:
    """The app, called with the connection's client certificate in the TLS extension."""

    def __init__(self, app: Any, pem: str) -> None:
        self.app = app
        self.pem = pem

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {**extensions.get("tls", {}), "client_cert_chain": [self.pem]}
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


class ClientCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, passing a verified client certificate to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.app = _WithClientCert(self.app, ssl.DER_cert_to_PEM_cert(der))


def uvicorn_client_cert_options(ca_chain: Path) -> dict[str, Any]:
    """uvicorn options for HTTPS that asks for (and verifies) client certificates."""
    return {
        "http": ClientCertH11Protocol,
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "ssl_ca_certs": str(ca_chain),
    }


def node_for_certificate(*, session: Session, pem: str) -> str:
    """The node id of a verified client certificate; CertificateRefused when not a live node's."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except ValueError:
        raise CertificateRefused("cert_invalid", "the client certificate cannot be read") from None
    serial = format(cert.serial_number, "x")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    row = session.get(NodeCertificate, serial)
    if row is None or row.node_id != common_name:
        raise CertificateRefused(
            "cert_unknown", f"certificate {serial} (CN {common_name!r}) was not issued to a node"
        )
    if row.revoked_at is not None:
        raise CertificateRefused("revoked", f"certificate {serial} of {row.node_id} is revoked")
    node = session.get(Node, row.node_id)
    if node is not None and node.lifecycle == "decommissioned":
        raise CertificateRefused("decommissioned", f"node {row.node_id} is decommissioned")
    return row.node_id
