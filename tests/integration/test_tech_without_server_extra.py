"""A technician's laptop runs `nigehbaan tech` without the server extra.

The technician tools are an HTTP client of the fleet server; they must not
import FastAPI, SQLModel/SQLAlchemy, Alembic, uvicorn or any other part of
the server's stack. Each check runs in a fresh interpreter whose import
system refuses those packages (a `sys.meta_path` finder that raises), so an
import that sneaks in fails here rather than on the laptop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from proto.bundle import Bundle
from tests.support.pki import FleetCA

# Every distribution the `server` extra brings besides the HTTP client (httpx,
# which the `tech` extra brings on its own).
SERVER_ONLY = (
    "fastapi", "starlette", "sqlmodel", "sqlalchemy", "alembic", "uvicorn", "argon2",
    "psycopg", "multipart", "python_multipart", "jinja2",
)  # fmt: skip
# The fleet server's own modules that need that stack (or are the server itself).
SERVER_MODULES = ("fleet_server.settings", "fleet_server.models", "fleet_server.db",
                  "fleet_server.app", "fleet_server.alerting", "fleet_server.ingest")  # fmt: skip

_PRELUDE = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = {blocked!r}

    class NoServerExtra(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{{name}} is not installed (no server extra)", name=name)
            return None

    sys.meta_path.insert(0, NoServerExtra())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    """
)


def run_without_server_extra(code: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that cannot import the server stack.

    Afterwards the program prints `LOADED [...]`: which refused packages and
    server modules ended up imported anyway (there should be none).
    """
    program = "\n".join(
        (
            _PRELUDE.format(blocked=set(SERVER_ONLY)),
            textwrap.dedent(code),
            _REPORT.format(server=set(SERVER_MODULES)),
        )
    )
    return subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True, text=True, check=False, cwd=cwd, timeout=120,
    )  # fmt: skip


_REPORT = textwrap.dedent(
    """
    loaded = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED or n in {server!r})
    print("LOADED " + json.dumps(loaded))
    """
)


def _loaded(stdout: str) -> list[str]:
    lines = [x for x in stdout.splitlines() if x.startswith("LOADED ")]
    assert len(lines) == 1, stdout[-2000:]
    return list(json.loads(lines[0].removeprefix("LOADED ")))


def test_the_blocker_really_refuses_the_server_stack(tmp_path: Path) -> None:
    done = run_without_server_extra("import sqlmodel\n", cwd=tmp_path)
    assert done.returncode != 0
    assert "sqlmodel is not installed (no server extra)" in done.stderr


def test_tech_help_works_without_the_server_extra(tmp_path: Path) -> None:
    done = run_without_server_extra(
        """
        from edge_agent.console import main
        try:
            main(["tech", "--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        import fleet_server.tech.client, fleet_server.tech.commission  # the HTTP side imports too
        """,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for command in ("flash", "token", "register", "commission"):
        assert command in done.stdout
    assert _loaded(done.stdout) == []


def test_tech_flash_writes_a_bundle_without_the_server_extra(tmp_path: Path) -> None:
    ca_file = FleetCA().write_ca(tmp_path / "ca-chain.pem")
    boot = tmp_path / "boot"
    boot.mkdir()
    done = run_without_server_extra(
        f"""
        from edge_agent.console import main
        code = main(["tech", "flash", {str(boot)!r},
                     "--server-url", "https://fleet.lahore.example:8443",
                     "--ca-chain", {str(ca_file)!r}, "--token", "nbet_laptop",
                     "--site", "lahore-gulberg-site-0007", "--district", "lahore-gulberg"])
        assert code == 0, code
        """,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert _loaded(done.stdout) == []
    bundle = Bundle.model_validate_json((boot / "nigehbaan-bundle.json").read_text())
    assert (bundle.token, bundle.site_id) == ("nbet_laptop", "lahore-gulberg-site-0007")


def test_server_commands_without_httpx_say_which_extra_to_install(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c",
         _PRELUDE.format(blocked={*SERVER_ONLY, "httpx"})
         + "\nfrom edge_agent.console import main\n"
         + "sys.exit(main(['tech', 'token', '--server', 'https://fleet.example']))\n"],
        capture_output=True, text=True, check=False, cwd=tmp_path, timeout=120,
        env={**os.environ, "NIGEHBAAN_TOKEN": "t"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install 'nigehbaan[tech]'" in done.stderr
