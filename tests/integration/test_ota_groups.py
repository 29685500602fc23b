"""A node's own OTA group is its own: no two node ids share one, and no tag borrows one.

The director signs per group (`groups/<g>/<kind>`), so two nodes in one group take
each other's updates. Group names allow fewer characters than node ids (no '_', at
most 63), so an id that is not a group name maps to a readable prefix and a hash
(`ota.groups.own_group`, the same function on the node and the server); and an
`ota-group:<g>` tag may not name another node's own group.
"""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlmodel import Session

from edge_agent.config import config_from_dict
from edge_agent.ota import OtaComponent
from fleet_server.models import Node
from fleet_server.ota.campaigns import groups_of
from fleet_server.ota.signing import node_group
from ota.groups import GROUP_PATTERN, own_group
from tests.support.api import API, login, runtime_of

OTA = f"{API}/ota"


def test_ids_that_the_old_mapping_merged_get_groups_of_their_own() -> None:
    long_a, long_b = "n" * 63 + "a", "n" * 63 + "b"  # 64 characters, differ at the end
    pairs = [("pole_01", "pole-01"), (long_a, long_b), ("a_b_c", "a-b_c")]
    for one, other in pairs:
        assert own_group(one) != own_group(other), (one, other)
    for node_id in ("pole_01", "pole-01", long_a, long_b, "a_b_c"):
        group = own_group(node_id)
        assert re.match(GROUP_PATTERN, group), group
        assert own_group(node_id) == group  # stable: the node and the server agree
    assert own_group("pole-01") == "pole-01"  # an id that is a group name stays as it is
    assert own_group("pole_01").startswith("pole-01-")  # still readable in the console


def test_the_node_and_the_server_derive_the_same_group(tmp_path: object) -> None:
    for node_id in ("lhr-pole-7", "lhr_pole_7", "k" * 64):
        config = config_from_dict(
            {"node_id": node_id, "serial": "SN-G", "data_dir": str(tmp_path),
             "hardware": {"type": "sim"}, "ota": {"enabled": True}}
        )  # fmt: skip
        assert OtaComponent.from_config(config, hardware="sim").group == node_group(node_id)


def test_a_group_tag_may_not_name_another_node_s_own_group(client: TestClient) -> None:
    ids = ["grp-pole-01", "grp_pole_02", "grp-pole-03"]
    with Session(runtime_of(client).engine) as session:
        for node_id in ids:
            session.add(Node(node_id=node_id, lifecycle="active", district="grp-d"))
        session.commit()
        assert len(set(groups_of(session=session, node_ids=ids).values())) == 3
    admin = login(client, "admin")

    def tag(node_id: str, group: str) -> tuple[int, str]:
        got = client.put(f"{OTA}/nodes/{node_id}/tags", headers=admin, json=[f"ota-group:{group}"])
        body = got.json()
        return got.status_code, body.get("detail", {}).get("reason", "") if got.is_error else ""

    # Another node's id, and another node's hashed group: both refused, with the owner named.
    assert tag("grp-pole-03", "grp-pole-01") == (409, "group_taken")
    assert tag("grp-pole-03", own_group("grp_pole_02")) == (409, "group_taken")
    refused = client.put(
        f"{OTA}/nodes/grp-pole-03/tags", headers=admin, json=["ota-group:grp-pole-01"]
    )
    assert "grp-pole-01" in refused.json()["detail"]["message"]
    # A shared group that is nobody's own group, and a node's own group for itself: fine.
    assert tag("grp-pole-01", "grp-shared") == (200, "")
    assert tag("grp-pole-03", "grp-shared") == (200, "")
    assert tag("grp-pole-03", "grp-pole-03") == (200, "")
    assert client.get(f"{OTA}/nodes/grp-pole-03/tags", headers=admin).json() == [
        "ota-group:grp-pole-03"
    ]
