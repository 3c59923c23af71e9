"""Backends: one module each (local, slurm, beaker) behind the small interface of `base.Backend`.

`get_backend` is the one place that maps a backend's name to its implementation; callers look it up here, at
call time (`backends.get_backend(...)`), so a test that replaces it replaces it for everyone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ni.errors import ConfigError

if TYPE_CHECKING:
    from launcher.backends.base import Backend

BACKENDS = ("local", "slurm", "beaker")


def get_backend(name: str, **kwargs: Any) -> Backend:
    if name == "local":
        from launcher.backends.local import LocalBackend

        return LocalBackend(**kwargs)
    if name == "slurm":
        from launcher.backends import slurm

        return slurm.SlurmBackend()
    if name == "beaker":
        from launcher.backends import beaker

        return beaker.BeakerBackend()
    raise ConfigError(f"unknown backend '{name}'", hint=f"Valid backends: {', '.join(BACKENDS)}.")
