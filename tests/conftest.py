"""Shared fixtures: a private Mosquitto per test session, and its log on failure."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from fleet_server.broker import ManagedBroker

# Fixtures every test module may ask for by name; test modules never import
# fixtures from one another.
pytest_plugins = [
    "tests.support.api",
    "tests.support.browser",
    "tests.support.db",
    "tests.support.enrollment",
]

_BROKERS: list[ManagedBroker] = []


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedBroker]:
    """A real Mosquitto 2.x on a free loopback port with our generated config."""
    data_dir: Path = tmp_path_factory.mktemp("mosquitto")
    managed = ManagedBroker.loopback(data_dir)
    managed.start()
    _BROKERS.append(managed)
    try:
        yield managed
    finally:
        managed.stop()
        _BROKERS.remove(managed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """Attach the broker log to the report of a failed test that used a broker."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "broker" in getattr(item, "fixturenames", ()):
        for managed in _BROKERS:
            report.sections.append((f"mosquitto log ({managed.url})", managed.log_text()))
