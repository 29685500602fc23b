"""A full evidence store gives up its oldest unpinned frames first, never a hit's evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.evidence import EvidenceError, EvidenceStore


def test_eviction_skips_pinned_files_and_takes_the_oldest_unpinned(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, max_files=3)
    hit = store.put(b"hit crop")
    assert store.pin(hit)
    frames = [store.put(f"frame-{i}".encode()) for i in range(4)]
    assert hit in store  # the oldest file, but pinned
    assert [f in store for f in frames] == [False, False, True, True]
    assert store.deleted == 2


def test_a_store_holding_only_pinned_evidence_refuses_new_files_and_counts_it(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path, max_files=2)
    pinned = [store.put(f"hit-{i}".encode()) for i in range(2)]
    for digest in pinned:
        store.pin(digest)
    with pytest.raises(EvidenceError, match="only pinned evidence"):
        store.put(b"another frame")
    assert store.refused == 1
    assert all(d in store for d in pinned)
    store.unpin(pinned[0])
    store.put(b"another frame")  # now the unpinned one gives way
    assert pinned[0] not in store
    assert pinned[1] in store


def test_delete_and_entries_and_describe_listeners(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    told: list[tuple[str, dict[str, object]]] = []
    store.add_describe_listener(lambda sha, meta: told.append((sha, meta)))
    digest = store.put(b"snapshot")
    store.describe(digest, data_class="panic_snapshot", camera_id="cam1")
    assert told == [(digest, {"data_class": "panic_snapshot", "camera_id": "cam1"})]
    assert [d for d, _ in store.entries()] == [digest]
    assert store.pin(digest)
    assert store.delete(digest)  # retention deletes even a pinned file
    assert digest not in store
    assert not store.is_pinned(digest)
    assert store.stored_bytes == 0
    assert not store.delete(digest)
    assert not store.pin(digest)  # nothing to pin
