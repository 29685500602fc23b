"""Open registries of hardware backends: one per capability, filled from entry points.

Each capability (the board's button and light, the power monitor, the camera)
has a `BackendRegistry`. A backend is registered by its pydantic config model:
a subclass of `BackendConfig` whose ``type`` field is ``Literal["<name>"]``,
which forbids unknown keys, documents every field, and knows how to build the
backend (``create(clock=...)``), importing the backend's library only then.
The model lives next to the backend's code.

Backends come from two places: the built-in ones this package ships (listed
in code, so a stale install still finds them) and the entry points of the
registry's group (``nigehbaan.hardware``, ``nigehbaan.hardware.power_monitors``,
``nigehbaan.hardware.cameras``; see pyproject.toml), so a package that adds a
``jetson`` board registers it without editing this one. `validate` turns a
config section into the right model through a discriminated union on
``type`` over everything registered, so ``[hardware] type = "jetson"`` works
as soon as the package that provides it is installed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Annotated, Any, Generic, TypeVar, Union, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hardware.clock import Clock
from hardware.errors import HardwareError

__all__ = ["BackendConfig", "BackendRegistry", "describe_validation_error", "factory_model"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BackendConfig(BaseModel, Generic[T]):
    """Base of every backend's config model: ``type`` names it, nothing unknown is allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="which registered backend this section configures")

    def create(self, *, clock: Clock) -> T:
        """Build the backend (import its library now); `BackendUnavailable` if it cannot load."""
        raise NotImplementedError


def _type_name(model: type[BackendConfig[Any]]) -> str:
    annotation = model.model_fields["type"].annotation
    names = get_args(annotation)
    if len(names) != 1 or not isinstance(names[0], str):
        raise HardwareError(f"{model.__name__}.type must be Literal['<backend name>']")
    return names[0]


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each problem (field path: message), like the agent's config errors."""
    parts = []
    for item in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in item["loc"]) or "(section)"
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts)


class BackendRegistry(Generic[T]):
    """The backends of one capability, by name; see the module docstring."""

    def __init__(self, *, capability: str, group: str, builtin: Mapping[str, str]) -> None:
        self.capability = capability
        self.group = group
        self._builtin = dict(builtin)  # name -> "module:ConfigModel", imported on first use
        self._models: dict[str, type[BackendConfig[T]]] = {}
        self._broken: dict[str, str] = {}
        self._discovered = False
        self._adapter: tuple[tuple[type[BackendConfig[T]], ...], TypeAdapter[Any]] | None = None

    # ---------------------------------------------------------- registration

    def register(self, model: type[BackendConfig[T]]) -> None:
        """Add (or replace) a backend by its config model."""
        name = _type_name(model)
        self._models[name] = model
        self._broken.pop(name, None)
        self._adapter = None

    def _load(self, name: str, target: str) -> None:
        module_name, _, attr = target.partition(":")
        try:
            model = getattr(importlib.import_module(module_name), attr)
            self.register(model)
        except Exception as exc:  # a third-party plugin must not break the others
            self._broken[name] = f"{type(exc).__name__}: {exc}"
            logger.warning("%s backend %r cannot be imported: %s", self.capability, name, exc)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for name, target in self._builtin.items():
            if name not in self._models:
                self._load(name, target)
        for ep in entry_points(group=self.group):
            if ep.name in self._models or ep.name in self._broken:
                continue
            self._load(ep.name, ep.value)

    def names(self) -> list[str]:
        """Every backend name that can be configured."""
        self._discover()
        return sorted(self._models)

    def model(self, name: str) -> type[BackendConfig[T]]:
        """The config model of backend `name`; `HardwareError` if none is registered."""
        self._discover()
        try:
            return self._models[name]
        except KeyError:
            pass
        if name in self._broken:
            raise HardwareError(
                f"{self.capability} backend {name!r} is registered but cannot be imported: "
                f"{self._broken[name]}"
            )
        raise HardwareError(
            f"unknown {self.capability} backend {name!r}; choose one of {self.names()}"
        )

    # ------------------------------------------------------------ validation

    def _union(self) -> TypeAdapter[Any]:
        models = tuple(self._models[n] for n in self.names())
        if self._adapter is None or self._adapter[0] != models:
            if len(models) == 1:
                adapter: TypeAdapter[Any] = TypeAdapter(models[0])
            else:
                union: Any = Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007
                adapter = TypeAdapter(union)
            self._adapter = (models, adapter)
        return self._adapter[1]

    def validate(self, data: Mapping[str, Any] | BackendConfig[T]) -> BackendConfig[T]:
        """A config section → its backend's model; `HardwareError` naming what is wrong."""
        if isinstance(data, BackendConfig):
            return data
        if not isinstance(data, Mapping):
            raise HardwareError(f"{self.capability}: expected a table with a 'type' key")
        name = data.get("type")
        if not isinstance(name, str):
            raise HardwareError(
                f"{self.capability}: 'type' is missing; choose one of {self.names()}"
            )
        self.model(name)  # a clear error for an unknown or broken name
        try:
            model: BackendConfig[T] = self._union().validate_python(dict(data))
        except ValidationError as exc:
            raise HardwareError(
                f"{self.capability} backend {name!r}: {describe_validation_error(exc)}"
            ) from exc
        return model

    def default(self, name: str) -> BackendConfig[T]:
        """Backend `name` with every option at its default."""
        return self.validate({"type": name})

    def create(
        self,
        data: Mapping[str, Any] | BackendConfig[T],
        *,
        clock: Clock,
    ) -> T:
        """Validate `data` and build the backend it names."""
        return self.validate(data).create(clock=clock)


def factory_model(
    base: type[BackendConfig[T]], name: str, factory: Callable[..., T]
) -> type[BackendConfig[T]]:
    """A config model with no options for a backend registered by a bare factory (old API)."""
    from typing import Literal

    from pydantic import create_model

    def create(self: BackendConfig[T], *, clock: Clock) -> T:
        return factory(clock=clock)

    literal: Any = Literal[name]
    model: Any = create_model(
        f"{name.title().replace('-', '')}Config",
        __base__=base,
        type=(literal, Field(description=f"the {name!r} backend")),
    )
    setattr(model, "create", create)  # noqa: B010 - a method on a made-up class
    return cast("type[BackendConfig[T]]", model)
