"""The API as an attacker or a fuzzer meets it: huge offsets, unknown tokens, password guessing.

Each story is one finding of issue 11's independent test; each must answer
with a 4xx the client can act on, never a 500 and never the wrong code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fleet_server.api.deps import MAX_OFFSET
from fleet_server.app import create_app
from fleet_server.auth import SignInLimits
from fleet_server.ratelimit import TokenBucketLimiter
from fleet_server.settings import Settings
from tests.support.api import API, login

PAST_INT64 = str(2**63)  # 9223372036854775808: SQLite raised OverflowError → 500


@pytest.mark.parametrize("path", ["/nodes", "/events"])
def test_an_offset_no_database_can_hold_is_a_422_not_a_500(client: TestClient, path: str) -> None:
    headers = login(client, "op")
    for offset in (PAST_INT64, str(2**70), str(MAX_OFFSET + 1)):
        response = client.get(f"{API}{path}", params={"offset": offset}, headers=headers)
        assert response.status_code == 422, (offset, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "offset"]
    largest = client.get(f"{API}{path}", params={"offset": MAX_OFFSET}, headers=headers)
    assert largest.status_code == 200
    assert largest.json()["data"] == []


def test_withdrawing_an_enrollment_token_that_does_not_exist_is_a_404(client: TestClient) -> None:
    response = client.delete(
        f"{API}/enrollment-tokens/no-such-token", headers=login(client, "admin")
    )
    assert response.status_code == 404
    assert response.json()["detail"]["reason"] == "token_unknown"


class Clock:
    """The sign-in limits' time: still unless a test moves it (argon2 is slow on a busy box)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guarded(tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path,
        broker_url=None,
        admin_username="chief",
        admin_password="chief-password",
        secret_key="test-secret-key-that-is-long-enough",
        login_account_burst=4,
        login_account_per_min=2.0,
        login_address_burst=6,
        login_address_per_min=30.0,
    )
    app = create_app(settings)
    limits: SignInLimits = app.state.sign_in_limits
    # The settings reach the limits; the buckets then run on the test's clock.
    assert (limits.account.burst, limits.account.rate_per_s) == (4, 2.0 / 60)
    assert (limits.address.burst, limits.address.rate_per_s) == (6, 30.0 / 60)
    app.state.sign_in_limits = SignInLimits(
        account=TokenBucketLimiter(per_minute=2.0, burst=4, clock=clock),
        address=TokenBucketLimiter(per_minute=30.0, burst=6, clock=clock),
    )
    with TestClient(app) as test_client:
        yield test_client


def _sign_in(client: TestClient, username: str, password: str) -> tuple[int, dict[str, object]]:
    response = client.post(
        f"{API}/login/access-token", data={"username": username, "password": password}
    )
    if response.status_code == 429:
        assert int(response.headers["Retry-After"]) >= 1
    return response.status_code, response.json()


def test_a_password_guesser_is_stopped_per_account_with_a_clear_429(guarded: TestClient) -> None:
    codes = [_sign_in(guarded, "chief", f"guess-{i}")[0] for i in range(4)]
    assert codes == [401] * 4
    code, body = _sign_in(guarded, "chief", "guess-5")
    assert code == 429
    detail = body["detail"]
    assert isinstance(detail, dict)
    assert detail["reason"] == "rate_limited"
    assert "this account" in detail["message"]
    assert "try again in 30 s" in detail["message"]
    # Until the wait is over, even the right password is not checked.
    assert _sign_in(guarded, "chief", "chief-password")[0] == 429


def test_guessing_across_accounts_from_one_address_meets_the_address_limit(
    guarded: TestClient,
) -> None:
    codes = [_sign_in(guarded, f"user{i}", "guess")[0] for i in range(6)]
    assert codes == [401] * 6
    code, body = _sign_in(guarded, "someone-else", "guess")
    assert code == 429
    detail = body["detail"]
    assert isinstance(detail, dict)
    assert "your address" in detail["message"]


def test_right_passwords_are_never_slowed_and_the_limit_refills(
    guarded: TestClient, clock: Clock
) -> None:
    assert [_sign_in(guarded, "chief", "chief-password")[0] for _ in range(8)] == [200] * 8
    assert [_sign_in(guarded, "chief", f"wrong-{i}")[0] for i in range(4)] == [401] * 4
    assert _sign_in(guarded, "chief", "chief-password")[0] == 429
    clock.now += 29.0
    assert _sign_in(guarded, "chief", "chief-password")[0] == 429
    clock.now += 2.0  # past one failure's worth (30 s at 2 a minute): refilled
    assert _sign_in(guarded, "chief", "chief-password")[0] == 200
