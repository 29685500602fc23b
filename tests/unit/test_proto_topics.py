"""Topic builders and the parser agree, and node ids are validated."""

from __future__ import annotations

import pytest

from proto import BadTopic
from proto.topics import (
    Channel,
    ack_topic,
    channel_filter,
    cmd_topic,
    downlink_filters,
    event_topic,
    fleet_filter,
    node_acl_patterns,
    parse_topic,
    reply_topic,
    status_topic,
    uplink_filters,
)


def test_builders_produce_what_the_parser_reads_back() -> None:
    assert parse_topic(status_topic("lhr-0001")).channel is Channel.STATUS
    parsed = parse_topic(event_topic("lhr-0001", "panic"))
    assert (parsed.node_id, parsed.channel, parsed.name) == ("lhr-0001", Channel.EVENT, "panic")
    assert parse_topic(cmd_topic("khi-7", "ping")).name == "ping"
    assert (
        parse_topic(reply_topic("khi-007", "01JD0Q60000000000000000001")).channel is Channel.REPLY
    )
    assert str(parse_topic(ack_topic("pew_12"))) == "nb/v1/pew_12/ack"


@pytest.mark.parametrize("node_id", ["ab", "UPPER", "a/b", "a+b", "a#b", "-lead", "x" * 65, ""])
def test_invalid_node_ids_are_refused(node_id: str) -> None:
    with pytest.raises(BadTopic):
        status_topic(node_id)


def test_a_node_subscribes_only_to_its_own_downlink() -> None:
    assert downlink_filters("lhr-0001") == ["nb/v1/lhr-0001/cmd/+", "nb/v1/lhr-0001/ack"]


def test_server_filters_cover_every_uplink_channel() -> None:
    channels = {f.split("/")[3] for f in uplink_filters()}
    assert channels == {c.value for c in Channel if c.uplink}


def test_a_node_filter_for_every_node_takes_every_name() -> None:
    assert channel_filter(Channel.EVENT) == "nb/v1/+/event/+"
    assert channel_filter(Channel.ACK) == "nb/v1/+/ack"
    assert channel_filter(Channel.CMD, node_id="lhr-0001") == "nb/v1/lhr-0001/cmd/+"
    with pytest.raises(BadTopic):
        channel_filter(Channel.CMD, node_id="a/b")
    assert fleet_filter() == "nb/v1/#"


def test_the_broker_acl_lets_a_node_write_only_its_uplink_and_read_only_its_downlink() -> None:
    patterns = node_acl_patterns()
    writes = {p for access, p in patterns if access == "write"}
    reads = {p for access, p in patterns if access == "read"}
    assert writes == {f.replace("/+/", "/%u/", 1) for f in uplink_filters()}
    assert reads == {f.replace("/lhr-0001/", "/%u/") for f in downlink_filters("lhr-0001")}
    assert {access for access, _ in patterns} == {"read", "write"}
