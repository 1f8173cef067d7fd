"""Circuits on remote QPUs and local simulators through one fault-tolerant job engine."""

from qpeft.jobs.base import BoundCircuit, JobFailedError, Limits, Provider, State, Status, TransientError
from qpeft.jobs.engine import JobEngine
from qpeft.jobs.local import LocalProvider

__all__ = [
    "BoundCircuit",
    "JobEngine",
    "JobFailedError",
    "Limits",
    "LocalProvider",
    "Provider",
    "State",
    "Status",
    "TransientError",
]
