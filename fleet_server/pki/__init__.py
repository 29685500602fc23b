"""The fleet certificate authority (docs/provisioning.md, "Certificate authority").

`ca` holds the cryptography (pure functions), `store` the files on disk and
the online `IssuingCa`.
"""

from fleet_server.pki.ca import RESERVED_NAMES, CsrInvalid, PkiError, key_fingerprint
from fleet_server.pki.store import IssuingCa, PkiPaths, init_dev_pki

__all__ = [
    "RESERVED_NAMES",
    "CsrInvalid",
    "IssuingCa",
    "PkiError",
    "PkiPaths",
    "init_dev_pki",
    "key_fingerprint",
]
