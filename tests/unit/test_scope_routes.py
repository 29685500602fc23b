"""Every route applies the scope or is on the explicit scope-free list (docs/access.md).

The walk goes over the routes of the app as `create_app` builds it: a new
route module that forgets the scope makes this test name its routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from fleet_server.api.scope import (
    SCOPE_FREE_PREFIXES,
    SCOPE_FREE_ROUTES,
    get_scope,
    get_stream_scope,
)
from fleet_server.app import create_app
from fleet_server.settings import Settings

_SCOPE_CALLS: frozenset[Callable[..., Any]] = frozenset({get_scope, get_stream_scope})


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def _routes(tmp_path: Any) -> list[tuple[str, str, Dependant | None]]:
    app = create_app(
        Settings(
            data_dir=tmp_path, broker_url=None, secret_key="test-secret-key-that-is-long-enough"
        )
    )
    out = []
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        for method in sorted(route.methods or {"*"}):
            if method in ("HEAD", "OPTIONS"):
                continue
            out.append((method, route.path or "", dependant))
    return out


def _scope_free(method: str, path: str) -> bool:
    if (method, path) in SCOPE_FREE_ROUTES:
        return True
    return any(path == p or path.startswith(p + "/") for p in SCOPE_FREE_PREFIXES)


def test_every_route_applies_the_scope_or_is_listed_as_scope_free(tmp_path: Any) -> None:
    missing = []
    for method, path, dependant in _routes(tmp_path):
        if _scope_free(method, path):
            continue
        if dependant is None:
            missing.append(f"{method} {path} (not an API route)")
            continue
        if not _SCOPE_CALLS & set(_calls(dependant)):
            missing.append(f"{method} {path}")
    assert not missing, "routes without ScopeDep/FleetScope/StreamScope:\n" + "\n".join(missing)


def test_the_scope_free_list_names_only_routes_that_exist(tmp_path: Any) -> None:
    present = {(m, p) for m, p, _ in _routes(tmp_path)}
    stale = sorted(set(SCOPE_FREE_ROUTES) - present)
    assert not stale, f"scope-free entries for routes that do not exist: {stale}"
