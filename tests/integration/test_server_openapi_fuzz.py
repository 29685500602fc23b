"""A property-based fuzzer against the served OpenAPI finds no server error (issue 11's acceptance).

Schemathesis reads the document a real `nigehbaan server` serves (with its
managed Mosquitto and development PKI, so no route answers 503 for a missing
part) and sends each operation a bounded number of generated requests as an
admin, on loopback only. Any 5xx fails the test. Bounded and derandomized so
it takes well under a minute and fails the same way twice. The SSE feed is
left out: it never ends a response by design.

Schema-conformance findings the fuzzer reports beside server errors are
explained in docs/fleet-server.md ("What the fuzzer reports").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err

from simulators.server_process import ServerProcess

pytestmark = pytest.mark.broker

PASSWORD = "fuzz-admin-password"


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    proc = ServerProcess(
        data_dir=tmp_path_factory.mktemp("openapi-fuzz"),
        broker_url=None,
        extra_args=("--managed-broker", "--managed-broker-port", "0"),
        env={"NIGEHBAAN_MQTTS_PORT": "0", "FUZZ_PW": PASSWORD},
    )
    made = proc.run_cli("--create-admin", "fuzz-admin", "--password-env", "FUZZ_PW")
    assert made.returncode == 0, made.stderr
    proc.start(timeout=60)
    try:
        yield proc, proc.login("fuzz-admin", PASSWORD)
    finally:
        proc.stop()


def _fuzz(operation: schemathesis.APIOperation[Any, Any, Any, Any], token: str) -> None:
    @settings(
        max_examples=8,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error], timeout=10
        )

    run()


def test_no_operation_answers_a_fuzzer_with_a_server_error(
    fuzzed_server: tuple[ServerProcess, str],
) -> None:
    proc, token = fuzzed_server
    schema = schemathesis.openapi.from_url(f"{proc.base_url}/openapi.json").exclude(
        path="/api/v1/stream/alerts"
    )
    failures: dict[str, str] = {}
    fuzzed = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures[f"(unusable operation {fuzzed})"] = str(result.err())
            continue
        operation = result.ok()
        fuzzed += 1
        try:
            _fuzz(operation, token)
        except (Exception, FailureGroup) as exc:  # one failure must not hide the others'
            failures[operation.label] = str(exc)[:2000]
    assert fuzzed > 30
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
