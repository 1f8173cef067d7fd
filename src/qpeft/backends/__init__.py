"""Backends that run circuits: in-process simulators and optional external SDKs."""

from qpeft.backends.base import BACKENDS, Backend, get_backend

__all__ = ["BACKENDS", "Backend", "get_backend"]
