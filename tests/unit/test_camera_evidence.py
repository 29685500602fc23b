"""The evidence store keeps crops by their SHA-256 and deletes the oldest first when full."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edge_agent.evidence import EvidenceError, EvidenceStore


def test_a_crop_is_stored_under_its_sha256(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "ev")
    digest = store.put(b"crop-1")
    assert digest == hashlib.sha256(b"crop-1").hexdigest()
    path = store.path(digest)
    assert path is not None
    assert path.read_bytes() == b"crop-1"
    assert path.name == f"{digest}.jpg"
    assert store.put(b"crop-1") == digest  # the same bytes once
    assert len(store) == 1


def test_the_oldest_files_go_first_when_the_count_bound_is_reached(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, max_files=3)
    digests = [store.put(f"crop-{i}".encode()) for i in range(5)]
    assert [d in store for d in digests] == [False, False, True, True, True]
    assert sorted(p.name[:64] for p in tmp_path.iterdir()) == sorted(digests[2:])
    assert store.deleted == 2


def test_the_byte_bound_holds_and_a_file_larger_than_the_store_is_refused(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, max_bytes=100)
    for i in range(10):
        store.put(bytes([i]) * 30)
    assert store.stored_bytes <= 100
    assert len(store) == 3
    with pytest.raises(EvidenceError, match="more than the whole store"):
        store.put(b"x" * 101)


def test_a_restart_finds_the_files_in_age_order_and_clears_half_written_ones(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path, max_files=10)
    digests = [store.put(f"crop-{i}".encode()) for i in range(3)]
    for age, digest in enumerate(digests):  # oldest first, whatever the clock's resolution
        path = store.path(digest)
        assert path is not None
        os.utime(path, ns=(1_000_000_000 * (age + 1), 1_000_000_000 * (age + 1)))
    (tmp_path / ".tmp-deadbeef").write_bytes(b"half")
    again = EvidenceStore(tmp_path, max_files=2)
    assert [d in again for d in digests] == [False, True, True]
    assert not (tmp_path / ".tmp-deadbeef").exists()
