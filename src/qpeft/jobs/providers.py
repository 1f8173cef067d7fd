"""The provider table: ``PROVIDER[:BACKEND]`` specs to provider instances.

| spec | what runs | credentials |
|---|---|---|
| ``local[:torch|shots|noisy[:DEVICE]|qiskit|pyqpanda3]`` | qpeft's in-process backends | none |
| ``origin[:CHIP]`` | Origin QCloud QPU (chip from the service's list) | ``QPEFT_ORIGIN_API_KEY`` |
| ``ibm[:BACKEND]`` | IBM Quantum Sampler; ``fake_*``: local testing mode | ``QPEFT_IBM_TOKEN`` / saved account |
"""

from __future__ import annotations

import importlib

from qpeft.jobs.base import Limits, Provider

PROVIDERS = {
    "local": "qpeft.jobs.local:LocalProvider",
    "origin": "qpeft.jobs.origin:OriginProvider",
    "ibm": "qpeft.jobs.ibm:IBMProvider",
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"origin:WK_C180"`` -> ("origin", "WK_C180"); ``"ibm"`` -> ("ibm", None)."""
    name, _, backend = spec.partition(":")
    if name not in PROVIDERS:
        raise ValueError(
            f"unknown quantum provider {name!r} in {spec!r}; use PROVIDER[:BACKEND] with PROVIDER one of "
            f"{', '.join(PROVIDERS)}"
        )
    return name, backend or None


def provider_limits(spec: str, **options) -> Limits:
    """A provider's per-job limits without connecting to it (for ``qpeft plan``)."""
    name, _ = parse_spec(spec)
    if name == "local":
        return Limits(max_circuits=options.get("max_circuits", 200))
    module, cls = PROVIDERS[name].split(":")
    return getattr(importlib.import_module(module), cls).limits


def get_provider(spec: str | Provider, **options) -> Provider:
    """A provider from ``PROVIDER[:BACKEND]`` (see the table above) and its options."""
    if isinstance(spec, Provider):
        return spec
    name, backend = parse_spec(spec)
    if name == "local" and "spool" in options:  # jobs served by another process (qpeft.jobs.spool)
        name = "spool"
    module, cls = {**PROVIDERS, "spool": "qpeft.jobs.spool:SpoolProvider"}[name].split(":")
    provider_cls = getattr(importlib.import_module(module), cls)
    if backend is None:
        return provider_cls(**options)
    return provider_cls(backend, **options)
