"""Method name -> config class and layer class; rebuilding a config from its saved dict."""

from __future__ import annotations

import dataclasses

from qpeft.adapters.base import AdapterLayer
from qpeft.adapters.config import AdapterConfig
from qpeft.adapters.lora.config import LoraConfig
from qpeft.adapters.lora.layer import LoraLayer
from qpeft.adapters.mpo.config import MPOConfig
from qpeft.adapters.mpo.layer import MPOLayer
from qpeft.adapters.qtha.config import QTHAConfig
from qpeft.adapters.qtha.layer import QTHALayer

_METHODS: dict[str, tuple[type[AdapterConfig], type[AdapterLayer]]] = {
    "lora": (LoraConfig, LoraLayer),
    "mpo": (MPOConfig, MPOLayer),
    "qtha": (QTHAConfig, QTHALayer),
}
METHODS = tuple(_METHODS)


def _check(method: str | None) -> str:
    if method not in _METHODS:
        raise ValueError(f"unknown adapter method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def config_class(method: str | None) -> type[AdapterConfig]:
    """The config class of an adapter method.

    Args:
        method: ``"lora"``, ``"mpo"`` or ``"qtha"``.

    Returns:
        :class:`LoraConfig`, :class:`MPOConfig` or :class:`QTHAConfig`.

    Raises:
        ValueError: an unknown method, listing the known ones.
    """
    return _METHODS[_check(method)][0]


def layer_class(method: str) -> type[AdapterLayer]:
    """The adapter layer class of an adapter method.

    Args:
        method: ``"lora"``, ``"mpo"`` or ``"qtha"``.

    Returns:
        :class:`LoraLayer`, :class:`MPOLayer` or :class:`QTHALayer`.

    Raises:
        ValueError: an unknown method, listing the known ones.
    """
    return _METHODS[_check(method)][1]


def config_from_dict(data: dict) -> AdapterConfig:
    """Rebuild a config saved by :meth:`AdapterConfig.to_dict` (unknown keys are an error)."""
    data = dict(data)
    cls = config_class(data.pop("method", None))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.method} config field(s) {unknown}; known: {sorted(names)}")
    return cls(**data)
