"""Adapters: LoRA, MPO and QTHA injected into Hugging Face causal LMs."""

from qpeft.adapters.base import AdapterLayer
from qpeft.adapters.config import AdapterConfig, field_help
from qpeft.adapters.lora.config import LoraConfig
from qpeft.adapters.model import QPeftModel, get_model, load_adapter, save_adapter
from qpeft.adapters.mpo.config import MPOConfig
from qpeft.adapters.presets import PRESETS, preset
from qpeft.adapters.qtha.config import QTHAConfig

__all__ = [
    "PRESETS",
    "AdapterConfig",
    "AdapterLayer",
    "LoraConfig",
    "MPOConfig",
    "QPeftModel",
    "QTHAConfig",
    "field_help",
    "get_model",
    "load_adapter",
    "preset",
    "save_adapter",
]
