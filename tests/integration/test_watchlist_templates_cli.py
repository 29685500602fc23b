"""`nigehbaan server watchlist-templates`: status, reseal and rotate on a real SQLite database.

A database with one plain template row (as written before templates were
encrypted) is resealed from the command line, then the key is rotated: every
row moves to the new key, the old key is kept as retired, and the raw column
never holds the template in clear.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from sqlalchemy import text
from sqlmodel import Session, col, select

from fleet_server.db import make_engine
from fleet_server.models import utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.models.watchlist import Watchlist, WatchlistEntry, WatchlistPhoto
from fleet_server.schema import migrate
from fleet_server.watchlists.template_vault import RETIRED_DIR

NIGEHBAAN = [sys.executable, "-m", "edge_agent.console"]
VECTOR = (np.arange(128, dtype="<f4") + 3.0) / 100.0


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NIGEHBAAN, "server", "--data-dir", str(data), "watchlist-templates", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_an_admin_reseals_and_rotates_the_template_key_from_the_command_line(
    tmp_path: Path,
) -> None:
    data = tmp_path / "server"
    data.mkdir()
    engine = make_engine(f"sqlite:///{data / 'fleet.db'}")
    migrate(engine)
    now = utcnow()
    plain = base64.b64encode(VECTOR.tobytes()).decode()
    with Session(engine) as session:
        wl = Watchlist(name="wanted-cli", category="wanted_person", purpose="warrants",
                       owner_agency="Punjab Police", districts=["lahore"], expires_at=now,
                       created_by="user:admin")  # fmt: skip
        session.add(wl)
        session.flush()
        entry = WatchlistEntry(watchlist_id=wl.id, kind="person", note="x")
        session.add(entry)
        session.flush()
        session.add(WatchlistPhoto(
            entry_id=entry.id, sha256="ab" * 32, size=1, template=plain, dim=128,
            model="sface", model_sha256="cd" * 32, quality={}, uploaded_by="user:admin",
        ))  # fmt: skip
        session.commit()

    status = _cli(data, "status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["rows"] == {"plain": 1}

    resealed = _cli(data, "reseal")
    assert resealed.returncode == 0, resealed.stderr
    first = json.loads(resealed.stdout)
    assert first["resealed"] == 1

    rotated = _cli(data, "rotate")
    assert rotated.returncode == 0, rotated.stderr
    second = json.loads(rotated.stdout)
    assert second == {"current_key": second["current_key"], "resealed": 1}
    assert second["current_key"] != first["current_key"]
    assert (data / "pki" / RETIRED_DIR / f"{first['current_key']}.key").exists()

    after = json.loads(_cli(data, "status").stdout)
    assert after["rows"] == {second["current_key"]: 1}
    with engine.connect() as conn:
        [raw] = [r[0] for r in conn.execute(text("SELECT template FROM watchlistphoto"))]
    with Session(engine) as session:
        actions = [
            (r.action, r.detail)
            for r in session.exec(select(AuditRecord).order_by(col(AuditRecord.seq))).all()
            if r.action.startswith("watchlist.templates_")
        ]
    engine.dispose()
    assert actions == [
        ("watchlist.templates_resealed", {"key_id": first["current_key"], "rows": 1}),
        ("watchlist.templates_rotated", {"key_id": second["current_key"], "rows": 1}),
    ]
    assert raw.startswith(f"aesgcm1:{second['current_key']}:")
    assert plain[:40] not in raw
