"""OTA on the fleet server: the artifact repository, campaigns in waves, node progress.

- `storage`: where artifact bytes and repository metadata live (`ArtifactStore`,
  `LocalArtifactStore` by default; an S3-compatible store is a later plugin);
- `artifacts`: upload (kind, version, hardware checked; SHA-256 computed),
  list, find by target path, delete when no campaign names it;
- `ranges`: HTTP Range for resumable target downloads (pure);
- `waves`: the pure wave rule `decide_wave(plan, nodes, now) -> actions`;
- `campaigns`: campaigns and per-node progress as data (create, pause,
  resume, abort, retry-failed; `ota` events applied);
- `offers`: the `ota_check` command a node is offered;
- `job`: `OtaWaveJob`, the timer job that runs the waves;
- `ingest`: the handler for `ota` events, registered when this package is imported.

Errors: `fleet_server.ota.errors` (root `OtaServerError`, tree in its docstring).
The TUF metadata itself is built and signed by `ota.repository` (shared with
the node side); docs/ota-server.md says what is built and what is not.
"""

from __future__ import annotations

from fleet_server.ota import ingest as _ingest
from fleet_server.ota.errors import (
    ArtifactInUse,
    ArtifactNotFound,
    ArtifactRefused,
    CampaignNotFound,
    CampaignRefused,
    OtaServerError,
    StorageError,
)
from fleet_server.ota.storage import ArtifactStore, LocalArtifactStore, StoredBlob
from fleet_server.ota.waves import decide_wave

__all__ = [
    "ArtifactInUse",
    "ArtifactNotFound",
    "ArtifactRefused",
    "ArtifactStore",
    "CampaignNotFound",
    "CampaignRefused",
    "LocalArtifactStore",
    "OtaServerError",
    "StorageError",
    "StoredBlob",
    "decide_wave",
]

_ingest.register()
