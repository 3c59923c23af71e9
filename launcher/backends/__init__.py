"""Backends: one module each (local, slurm, beaker) behind the interface of `base.Backend`.

`get_backend` is the one place that maps a backend's name to its implementation; callers look it up here, at
call time (`backends.get_backend(...)`), so a test that replaces it replaces it for everyone. A backend's module is
imported only when it is asked for (the SDKs stay off the light paths).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ni.errors import ConfigError

if TYPE_CHECKING:
    from launcher.backends.base import Backend


def _local() -> type[Backend]:
    from launcher.backends.local import LocalBackend

    return LocalBackend


def _slurm() -> type[Backend]:
    from launcher.backends.slurm import SlurmBackend

    return SlurmBackend


def _beaker() -> type[Backend]:
    from launcher.backends.beaker import BeakerBackend

    return BeakerBackend


_REGISTRY: dict[str, Callable[[], type[Backend]]] = {"local": _local, "slurm": _slurm, "beaker": _beaker}
BACKENDS = tuple(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The backend of this name, made with its defaults (its settings come from each sweep it is given)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend '{name}'", hint=f"Valid backends: {', '.join(BACKENDS)}.")
    return _REGISTRY[name]()()
