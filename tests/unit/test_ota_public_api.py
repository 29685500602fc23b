"""Every name a module of `ota` exports exists (the public API is `__all__`)."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "ota.artifacts",
    "ota.groups",
    "ota.keys",
    "ota.launcher",
    "ota.memory",
    "ota.repository",
    "ota.slots",
    "ota.system",
    "ota.transport",
    "ota.trust",
]


@pytest.mark.parametrize("name", MODULES)
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__
    assert [n for n in module.__all__ if not hasattr(module, n)] == []


def test_the_error_tree_has_one_root() -> None:
    from ota import errors

    for cls in (
        errors.RepositoryError,
        errors.ArtifactError,
        errors.TrustError,
        errors.TransportError,
        errors.SlotError,
    ):
        assert issubclass(cls, errors.OtaError)
