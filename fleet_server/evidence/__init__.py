"""Evidence: node-signed files, their store, export bundles a court can verify, retention and holds.

See docs/evidence.md. Deliberately imports nothing here: `fleet_server.evidence.verify`
(the offline bundle verifier behind ``nigehbaan evidence verify``) must load
on a machine with only `cryptography`, `pydantic` and this package — no
database, no web stack — so the package root pulls in none of the server.
The server parts are `store`, `service`, `bundle`, `retention` and `routes`.
"""
