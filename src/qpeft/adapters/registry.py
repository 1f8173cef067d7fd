"""Method name -> config class and layer class."""

from __future__ import annotations

import importlib

_METHODS = {
    "lora": ("qpeft.adapters.lora.config:LoraConfig", "qpeft.adapters.lora.layer:LoraLayer"),
    "mpo": ("qpeft.adapters.mpo.config:MPOConfig", "qpeft.adapters.mpo.layer:MPOLayer"),
    "qtha": ("qpeft.adapters.qtha.config:QTHAConfig", "qpeft.adapters.qtha.layer:QTHALayer"),
}
METHODS = tuple(_METHODS)


def _load(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def config_class(method: str | None):
    if method not in _METHODS:
        raise ValueError(f"unknown adapter method {method!r}; choose one of {', '.join(METHODS)}")
    return _load(_METHODS[method][0])


def layer_class(method: str):
    if method not in _METHODS:
        raise ValueError(f"unknown adapter method {method!r}; choose one of {', '.join(METHODS)}")
    return _load(_METHODS[method][1])
