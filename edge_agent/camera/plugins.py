"""Finding the plate detector and reader a camera's settings name.

A name is either an entry point in ``nigehbaan.anpr.detectors`` /
``nigehbaan.anpr.readers`` (how `edge_agent.anpr` and third-party packages
register theirs) or a ``module:attribute`` path. The attribute is an
instance, or a class or factory called with no arguments. What comes back
must look like `edge_agent.anpr.types.PlateDetector` / `PlateReader`
(a ``detect`` / ``read`` method); anything else is a `PluginError` naming it.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Literal, cast

from edge_agent.anpr.types import PlateDetector, PlateReader
from edge_agent.camera.errors import PluginError

__all__ = ["DETECTOR_GROUP", "READER_GROUP", "load_detector", "load_reader"]

DETECTOR_GROUP = "nigehbaan.anpr.detectors"
READER_GROUP = "nigehbaan.anpr.readers"


def _load(kind: Literal["detector", "reader"], name: str) -> Any:
    group = DETECTOR_GROUP if kind == "detector" else READER_GROUP
    try:
        if ":" in name:
            module_name, _, attribute = name.partition(":")
            target: Any = getattr(importlib.import_module(module_name), attribute)
        else:
            found = [ep for ep in metadata.entry_points(group=group) if ep.name == name]
            if not found:
                known = sorted(ep.name for ep in metadata.entry_points(group=group))
                raise PluginError(
                    f"no {kind} plugin called {name!r} (registered: {', '.join(known) or 'none'}; "
                    "or give module:factory)"
                )
            target = found[0].load()
        instance = target() if callable(target) and not _is_plugin(kind, target) else target
    except PluginError:
        raise
    except Exception as exc:  # an import error, a factory that failed: name it
        raise PluginError(f"cannot load {kind} plugin {name!r}: {exc}") from exc
    if not _is_plugin(kind, instance):
        raise PluginError(f"{kind} plugin {name!r} has no {_method(kind)}() method")
    return instance


def _method(kind: str) -> str:
    return "detect" if kind == "detector" else "read"


def _is_plugin(kind: str, obj: Any) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, _method(kind), None))


def load_detector(name: str) -> PlateDetector:
    """The detector plugin called `name`; `PluginError` when there is none or it fails."""
    return cast(PlateDetector, _load("detector", name))


def load_reader(name: str) -> PlateReader:
    """The reader plugin called `name`; `PluginError` when there is none or it fails."""
    return cast(PlateReader, _load("reader", name))
