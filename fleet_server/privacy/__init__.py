"""Privacy at the edge, on the server: masks per camera, private cameras, and who applies what.

- `service`: the model functions (versions of each node's privacy policy,
  delivery as a ``set_config`` command, the version nodes apply, private
  cameras' agreements and the expiry warning job);
- `ingest`: private cameras' terms enforced again at ingest, and the
  ``privacy_version`` from telemetry;
- `routes`: the ``/privacy`` API; `console`: the console's privacy page.

The node's side is `edge_agent.camera.privacy`; the whole story is in
docs/privacy.md.
"""
