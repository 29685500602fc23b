"""The operator web console: server-rendered page shells plus a little JavaScript.

The pages carry no data and need no server-side session: the browser logs in
through the REST API, keeps the bearer token in ``sessionStorage`` (one tab,
gone when the tab closes, never sent automatically, so no CSRF surface), and
fetches everything from ``/api/v1`` with it; the live alert queue follows the
SSE feed with the token in the ``access_token`` query parameter. The app
factory mounts :data:`fleet_server.console.routes.router`.
"""
