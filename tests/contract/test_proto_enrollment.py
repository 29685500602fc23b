"""The HTTPS enrollment contract is one definition that the node and the server both speak.

Its golden files and schemas are checked with the MQTT ones
(tests/contract/test_proto_golden.py); these tests pin what is particular to it: the
bytes a node sends are today's, a refusal carries a status per code, requests
are closed while answers are read leniently, and both ends raise and catch
the same `EnrollmentRefused`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import ValidationError

import edge_agent.enroll
import fleet_server.enrollment
from fleet_server.api.main import API_PREFIX
from fleet_server.api.routes.enrollment import refusal, router
from proto.bundle import Location
from proto.enrollment import (
    API_ROOT,
    ENROLL_POLL_ROUTE,
    ENROLL_RENEW_ROUTE,
    ENROLL_ROUTE,
    REFUSAL_HINTS,
    REFUSAL_STATUS,
    EnrollmentRefused,
    EnrollPending,
    EnrollRequest,
    EnrollResponse,
    RefusalReason,
    RenewRequest,
    enroll_path,
    enroll_poll_path,
    parse_refusal,
    renew_path,
)

CSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"


def test_node_and_server_raise_and_catch_the_same_refusal() -> None:
    assert edge_agent.enroll.EnrollmentRefused is EnrollmentRefused
    assert fleet_server.enrollment.EnrollmentRefused is EnrollmentRefused


def test_the_paths_the_node_calls_are_the_routes_the_server_declares() -> None:
    assert API_PREFIX == API_ROOT
    paths = {getattr(route, "path", None) for route in router.routes}
    assert {ENROLL_ROUTE, ENROLL_POLL_ROUTE, ENROLL_RENEW_ROUTE} <= paths
    assert enroll_path() == "/api/v1/enroll"
    assert renew_path() == "/api/v1/enroll/renew"
    assert enroll_poll_path("01JD0Q60000000000000000001") == (
        "/api/v1/enroll/01JD0Q60000000000000000001"
    )


def test_a_node_sends_the_same_bytes_as_before_the_contract_moved() -> None:
    """The hand-built dict the node used to send, byte for byte (key order and nulls)."""
    body = EnrollRequest(
        serial="NB-1",
        csr_pem=CSR,
        token=None,
        node_id="lhr-0001",
        site_id=None,
        district="lahore-gulberg",
        location=Location(lat=31.5204, lon=74.3587),
    ).model_dump(mode="json")
    assert json.dumps(body) == (
        '{"serial": "NB-1", "csr_pem": ' + json.dumps(CSR) + ', "token": null, '
        '"node_id": "lhr-0001", "site_id": null, "district": "lahore-gulberg", '
        '"location": {"lat": 31.5204, "lon": 74.3587}}'
    )
    renew = RenewRequest(certificate_pem="CERT", csr_pem=CSR).model_dump(mode="json")
    assert json.dumps(renew) == '{"certificate_pem": "CERT", "csr_pem": ' + json.dumps(CSR) + "}"


def test_the_server_answers_pending_and_certificates_in_todays_shape() -> None:
    pending = EnrollPending(request_id="req1").model_dump(mode="json")
    assert pending == {"request_id": "req1", "reason": "pending_approval"}
    answer = EnrollResponse(
        node_id="lhr-0001",
        certificate_pem="C",
        ca_chain_pem="CA",
        broker_url="mqtts://fleet:8883",
        api_url="https://fleet:8443",
        not_after=datetime(2027, 1, 1, tzinfo=timezone.utc),
    ).model_dump(mode="json")
    assert list(answer) == [
        "node_id",
        "certificate_pem",
        "ca_chain_pem",
        "broker_url",
        "api_url",
        "not_after",
    ]
    assert answer["not_after"] == "2027-01-01T00:00:00Z"


def test_a_refusal_is_answered_with_its_code_message_and_status() -> None:
    exc = refusal(RefusalReason.TOKEN_USED, "used by lhr-0002")
    body: Any = exc.detail
    assert exc.status_code == 403
    assert body == {"reason": "token_used", "message": "used by lhr-0002"}
    assert refusal("rate_limited", "slow down").status_code == 429
    assert refusal("forbidden", "no", status_code=403).status_code == 403
    # The admin API's own codes are not the node's business but keep the shape.
    pending = refusal("reply_pending", "not yet", status_code=404)
    detail: Any = pending.detail
    assert pending.status_code == 404
    assert detail == {"reason": "reply_pending", "message": "not yet"}
    assert refusal("some_admin_code", "no").status_code == 400


def test_every_code_has_a_status_and_only_the_server_fails_with_5xx() -> None:
    assert set(REFUSAL_STATUS) == set(RefusalReason)
    assert {r for r, s in REFUSAL_STATUS.items() if s >= 500} == {RefusalReason.PKI_UNAVAILABLE}
    assert {r for r, s in REFUSAL_STATUS.items() if s == 429} == {RefusalReason.RATE_LIMITED}
    assert set(REFUSAL_HINTS) <= set(RefusalReason)


def test_requests_are_closed_but_answers_tolerate_a_newer_server() -> None:
    with pytest.raises(ValidationError, match="extra"):
        EnrollRequest.model_validate({"serial": "NB-1", "csr_pem": CSR, "firmware": "0.2"})
    pending = EnrollPending.model_validate({"request_id": "r", "queue_position": 3})
    assert pending.request_id == "r"
    # A refusal code this node does not know is not ours to parse, but it is not lost.
    assert parse_refusal({"detail": {"reason": "new_code", "message": "m"}}) is None
    refused = EnrollmentRefused.from_answer("new_code", "m", status=403)
    assert (refused.reason, refused.status, refused.hint) == ("new_code", 403, None)


def test_a_node_reads_a_refusal_with_what_the_technician_should_do() -> None:
    found = parse_refusal({"detail": {"reason": "token_expired", "message": "expired at 10:00"}})
    assert found is not None
    refused = EnrollmentRefused.from_answer(found.reason.value, found.message, status=403)
    assert refused.reason == "token_expired"
    assert "expired at 10:00" in refused.message
    assert "make a new one" in refused.message
    assert str(refused) == refused.message


def test_the_server_side_refusal_keeps_its_message_plain_for_the_body() -> None:
    refused = EnrollmentRefused(RefusalReason.BAD_CSR, "CN is not the node id")
    assert refused.reason == "bad_csr"
    assert refused.message == "CN is not the node id"
    assert refused.status == 400
    assert refused.body().model_dump(mode="json") == {
        "reason": "bad_csr",
        "message": "CN is not the node id",
    }
