"""A node flooding the server with bad payloads costs a few log lines, not the disk.

Every refused message is still counted (the `ingestrejection` counters and the
worker's stats); only the WARNING lines are thinned out to one per node and
reason per interval, each saying how many more there were (issue 11, item 13).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.ingest import IngestWorker
from fleet_server.models import IngestRejection
from fleet_server.ratelimit import LogGate
from tests.support.ingest import RecordedAcks, plate_read, sqlite_engine, wire

WORKER_LOG = "fleet_server.ingest.worker"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    yield from sqlite_engine(tmp_path)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == WORKER_LOG and r.levelno >= 30]


def test_a_flood_of_bad_payloads_logs_one_line_per_node_and_reason_per_interval(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    worker = IngestWorker(
        engine=engine, publisher=RecordedAcks(), notify=lambda _n: None, ack_timeout_s=120.0
    )
    clock = Clock()
    worker.log_gate = LogGate(interval_s=60.0, clock=clock)
    garbage = [
        ("nb/v1/cam-0901/event/plate", b"not json"),  # malformed
        ("nb/v1/cam-0901/event/plate", b"{" + b" " * 20_000 + b"}"),  # too large
        ("nb/v1/cam-0902/event/plate", b"not json"),
    ]
    with caplog.at_level(logging.WARNING, logger=WORKER_LOG):
        for _batch in range(200):
            worker.process(garbage * 5)
        # A real event between the floods still goes through.
        worker.process([wire(plate_read("cam-0901", 1))])
    assert worker.stats.rejected == 3000
    assert worker.stats.inserted == 1
    lines = _warnings(caplog)
    assert len(lines) == 3, lines
    # Each line stands for its whole first batch: itself and 4 more.
    assert all(line.endswith("(+4 more like it since the last such line)") for line in lines)
    assert {(("cam-0901" in line), line.split()[1]) for line in lines} == {
        (True, "malformed_json"),
        (True, "too_large"),
        (False, "malformed_json"),
    }
    with Session(engine) as session:
        counters = session.exec(select(IngestRejection)).all()
    assert sum(row.count for row in counters) == 3000

    # The interval over, the next refusal is logged again, with what went unlogged
    # (1000 of that node and reason, 5 of them told by the first line).
    caplog.clear()
    clock.now += 60.0
    with caplog.at_level(logging.WARNING, logger=WORKER_LOG):
        worker.process(garbage[:1])
    (line,) = _warnings(caplog)
    assert "cam-0901" in line
    assert line.endswith("(+995 more like it since the last such line)")


def test_with_a_zero_interval_every_refusal_is_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    worker = IngestWorker(
        engine=engine,
        publisher=RecordedAcks(),
        notify=lambda _n: None,
        ack_timeout_s=120.0,
        rejection_log_interval_s=0.0,
    )
    with caplog.at_level(logging.WARNING, logger=WORKER_LOG):
        for _ in range(3):
            worker.process([("nb/v1/cam-0903/event/plate", b"not json")])
    assert len(_warnings(caplog)) == 3
