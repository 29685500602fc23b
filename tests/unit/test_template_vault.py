"""The face-template key: made once even by racing workers; clear refusals for bad rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fleet_server.pki.store import PkiPaths
from fleet_server.watchlists.template_vault import KEY_FILE, TemplateVault, TemplateVaultError

SHA = "ab" * 32
ENTRY = "01JDZ0000000000000000000AB"


def test_workers_starting_together_all_use_the_one_key_that_was_made(tmp_path: Path) -> None:
    paths = PkiPaths(tmp_path / "pki")
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: TemplateVault.from_pki(paths).key_id, range(16)))
    assert len(ids) == 1
    assert len((paths.root / KEY_FILE).read_bytes()) == 32
    assert sorted(p.name for p in paths.root.iterdir()) == [KEY_FILE]


def test_a_row_that_is_plain_malformed_or_under_an_unknown_key_is_refused_clearly(
    tmp_path: Path,
) -> None:
    vault = TemplateVault(b"\x01" * 32)
    sealed = vault.seal(b"\x00" * 512, entry_id=ENTRY, photo_sha256=SHA)
    assert vault.open(sealed, entry_id=ENTRY.lower(), photo_sha256=SHA) == b"\x00" * 512
    with pytest.raises(TemplateVaultError, match="not sealed"):
        vault.open("AAAA", entry_id=ENTRY, photo_sha256=SHA)
    with pytest.raises(TemplateVaultError, match="malformed"):
        vault.open(f"aesgcm1:{vault.key_id}:not base64!", entry_id=ENTRY, photo_sha256=SHA)
    with pytest.raises(TemplateVaultError, match="does not hold"):
        TemplateVault(b"\x02" * 32).open(sealed, entry_id=ENTRY, photo_sha256=SHA)
    with pytest.raises(TemplateVaultError, match="does not decrypt"):
        vault.open(sealed, entry_id=ENTRY, photo_sha256="cd" * 32)  # another photo's row
    with pytest.raises(TemplateVaultError, match="32 bytes"):
        TemplateVault(b"short")
    paths = PkiPaths(tmp_path / "pki")
    paths.root.mkdir()
    (paths.root / KEY_FILE).write_bytes(b"truncated")
    with pytest.raises(TemplateVaultError, match="not a 32-byte template key"):
        TemplateVault.from_pki(paths)
