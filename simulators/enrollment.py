"""Simulated factory and first boot: nodes get their identity through the real enrollment flow.

`enroll_fleet` does for N simulated nodes what the factory and the first boot
do for real pillars (docs/provisioning.md):

1. factory: each node makes its own key with `edge_agent.identity.FileKeyStore`;
   in ``preauthorized`` mode the serial + public key CSV is imported through
   ``POST /api/v1/preauthorized``; in ``token`` mode a technician's single-use
   enrollment token is made per node (``POST /api/v1/enrollment-tokens``);
2. first boot: each node runs `edge_agent.enroll.provision` with its bundle
   (CSR → certificate → ``identity/`` → ``agent.toml`` for mqtts).

It returns each node's agent config dict for `simulators.fleet.SimFleet`
(``SimFleet.enrolled`` wraps both). Blocking HTTP; call it from a thread.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from edge_agent.config import parse_config_text
from edge_agent.enroll import IdentityPaths, provision
from edge_agent.identity import FileKeyStore
from proto.bundle import Bundle

__all__ = ["EnrollmentPlan", "SimEnrollmentError", "enroll_fleet", "preauthorized_csv"]

Mode = Literal["preauthorized", "token"]


class SimEnrollmentError(RuntimeError):
    """The simulated fleet could not be enrolled (the server refused the import, …)."""


@dataclass(frozen=True)
class EnrollmentPlan:
    """How a simulated fleet enrolls.

    `server_url` is the API the nodes enroll at (https with the fleet CA, or
    http on loopback); `admin_token` a bearer token of an admin (imports the
    CSV, makes tokens); `ca_chain_pem` goes into every node's bundle.
    """

    server_url: str
    ca_chain_pem: str
    admin_token: str
    mode: Mode = "preauthorized"
    verify: str | bool = True  # how the factory's httpx client checks the server
    concurrency: int = 8


@dataclass(frozen=True)
class _Node:
    node_id: str
    serial: str
    site_id: str | None
    district: str | None
    data_dir: Path


def preauthorized_csv(rows: Sequence[Mapping[str, str | None]]) -> str:
    """The import CSV: ``serial,public_key_pem,district,site_id,node_id`` (PEM newlines as \\n)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["serial", "public_key_pem", "district", "site_id", "node_id"])
    for row in rows:
        pem = str(row["public_key_pem"]).strip().replace("\n", "\\n")
        writer.writerow(
            [row["serial"], pem, row.get("district") or "", row.get("site_id") or "",
             row.get("node_id") or ""]
        )  # fmt: skip
    return out.getvalue()


def enroll_fleet(
    plan: EnrollmentPlan, configs: list[dict[str, Any]], *, wait_s: float = 120.0
) -> list[dict[str, Any]]:
    """Enroll nodes described by plain-mode config dicts; returns their mqtts config dicts.

    Each input dict is a `simulators.fleet.node_config` result: its node id,
    serial, site, district and data dir are the node's; everything else
    (hardware, timings) is carried into the written ``agent.toml``. Nodes
    that enrolled in an earlier run keep their identity and are not enrolled
    again.
    """
    order = [c["node_id"] for c in configs]
    done = {
        str(c["node_id"]): parse_config_text(
            IdentityPaths(Path(c["data_dir"])).config.read_text(encoding="utf-8")
        )
        for c in configs
        if _enrolled(Path(c["data_dir"]))
    }
    configs = [c for c in configs if str(c["node_id"]) not in done]
    nodes = [
        _Node(
            node_id=str(c["node_id"]),
            serial=str(c["serial"]),
            site_id=c.get("site_id"),
            district=c.get("district"),
            data_dir=Path(c["data_dir"]),
        )
        for c in configs
    ]
    if not nodes:
        return list(done.values())
    headers = {"Authorization": f"Bearer {plan.admin_token}"}
    tokens: dict[str, str | None] = {n.node_id: None for n in nodes}
    with httpx.Client(
        base_url=plan.server_url, headers=headers, verify=plan.verify, timeout=30
    ) as api:
        if plan.mode == "preauthorized":
            rows = [
                {
                    "serial": n.serial,
                    "public_key_pem": FileKeyStore(IdentityPaths(n.data_dir).key).public_key_pem(),
                    "district": n.district,
                    "site_id": n.site_id,
                    "node_id": n.node_id,
                }
                for n in nodes
            ]
            response = api.post(
                "/api/v1/preauthorized",
                content=preauthorized_csv(rows).encode("utf-8"),
                headers={"Content-Type": "text/csv"},
            )
            if response.status_code not in (200, 201):
                raise SimEnrollmentError(f"preauthorized import refused: {response.text}")
            skipped = response.json().get("skipped") or []
            if skipped:
                raise SimEnrollmentError(f"preauthorized import skipped nodes: {skipped[:3]}")
        else:
            for n in nodes:
                response = api.post(
                    "/api/v1/enrollment-tokens",
                    json={"site_id": n.site_id, "district": n.district, "ttl_s": 3600,
                          "note": f"simulated {n.node_id}"},
                )  # fmt: skip
                if response.status_code not in (200, 201):
                    raise SimEnrollmentError(f"token for {n.node_id} refused: {response.text}")
                tokens[n.node_id] = str(response.json()["token"])

    by_id = {str(c["node_id"]): c for c in configs}

    def first_boot(n: _Node) -> dict[str, Any]:
        carried = {
            k: v
            for k, v in by_id[n.node_id].items()
            if k not in ("node_id", "serial", "site_id", "district", "data_dir")
        }
        carried["mqtt"] = {k: v for k, v in carried.get("mqtt", {}).items() if k != "url"}
        bundle = Bundle(
            server_url=plan.server_url,
            ca_chain_pem=plan.ca_chain_pem,
            token=tokens[n.node_id],
            site_id=n.site_id,
            district=n.district,
            node_id=n.node_id,
        )
        provision(
            bundle, data_dir=n.data_dir, serial=n.serial, wait_s=wait_s, config_overrides=carried
        )
        paths = IdentityPaths(n.data_dir)
        return parse_config_text(paths.config.read_text(encoding="utf-8"))

    with ThreadPoolExecutor(max_workers=max(1, plan.concurrency)) as pool:
        for config in pool.map(first_boot, nodes):
            done[str(config["node_id"])] = config
    return [done[str(c)] for c in order]


def _enrolled(data_dir: Path) -> bool:
    """A node that already has its certificate and config (a restarted simulation)."""
    paths = IdentityPaths(data_dir)
    return paths.certificate.exists() and paths.config.exists()
