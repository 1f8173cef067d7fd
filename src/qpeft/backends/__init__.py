"""Backends that run circuits: in-process simulators and optional external SDKs."""

from qpeft.backends.base import BACKENDS, Backend, backend_names, get_backend

__all__ = ["BACKENDS", "Backend", "backend_names", "get_backend"]
