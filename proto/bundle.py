"""The first-boot bundle: what `nigehbaan tech flash` writes and a node reads at first boot.

It lives in `proto` because both sides depend on it and neither may import
the other (the technician tool is fleet-server side, the reader is the edge
agent). It is not an MQTT message: it travels on an SD card's boot partition
as ``nigehbaan-bundle.json``. Unknown keys are refused and
``bundle_version`` is checked, so a node never half-understands a bundle
made by a newer tool.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from proto.topics import NAME_PATTERN, NODE_ID_PATTERN

__all__ = ["BUNDLE_NAME", "Bundle", "Location"]

BUNDLE_NAME = "nigehbaan-bundle.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Location(_Model):
    """Where the pillar stands (WGS 84)."""

    lat: float = Field(ge=-90.0, le=90.0)
    lon: float = Field(ge=-180.0, le=180.0)


class Bundle(_Model):
    """The first-boot bundle (``nigehbaan-bundle.json``)."""

    bundle_version: Literal[1] = Field(
        default=1, description="format version; a node refuses a version it does not know"
    )
    server_url: str = Field(
        pattern=r"^https?://[^/\s]+", max_length=255, description="the fleet server's API base"
    )
    ca_chain_pem: str = Field(
        min_length=64, max_length=64 * 1024, description="fleet CA chain (issuing + root), PEM"
    )
    token: str | None = Field(
        default=None, max_length=256, description="enrollment token; None for preauthorized"
    )
    site_id: str | None = Field(default=None, pattern=NAME_PATTERN, description="site (pillar)")
    district: str | None = Field(default=None, pattern=NAME_PATTERN, description="district")
    location: Location | None = None
    node_id: str | None = Field(
        default=None, pattern=NODE_ID_PATTERN, description="requested node id"
    )
