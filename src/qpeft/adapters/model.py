"""``get_model``: a Hugging Face causal LM with adapters, usable with ``generate()`` and
``transformers.Trainer``; plus trainable-parameter accounting and merging."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from torch import nn

from qpeft.adapters.base import AdapterLayer, inject, remove
from qpeft.adapters.config import AdapterConfig

logger = logging.getLogger(__name__)


class QPeftModel(nn.Module):
    """A base model whose target linear layers carry adapters (everything else frozen).

    Attribute access falls through to the base model, and ``forward`` keeps the base
    model's signature (Trainer inspects it to choose dataset columns).
    """

    def __init__(self, base_model: nn.Module, config: AdapterConfig, layers: dict[str, AdapterLayer]):
        super().__init__()
        self.base_model = base_model
        self.adapter_config = config
        self.adapter_layers = layers  # plain dict: the layers are registered under base_model

        def forward(*args, **kwargs):
            return self.base_model(*args, **kwargs)

        forward.__signature__ = inspect.signature(base_model.forward)
        forward.__doc__ = base_model.forward.__doc__
        self.forward = forward

    def generate(self, *args, **kwargs):
        return self.base_model.generate(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base_model, name)

    # ---- parameters -------------------------------------------------------------------------

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def lora_equivalent_count(self) -> int:
        """Parameters of a LoRA with the same r on the same target modules."""
        r = self.adapter_config.r
        return sum(r * (layer.d_in + layer.d_out) for layer in self.adapter_layers.values())

    def parameter_summary(self) -> dict:
        trainable = self.trainable_parameter_count()
        total = sum(p.numel() for p in self.parameters())
        lora = self.lora_equivalent_count()
        return {
            "trainable": trainable,
            "total": total,
            "trainable_share": trainable / total,
            "lora_equivalent": lora,
            "reduction_vs_lora": 1 - trainable / lora,
        }

    def print_trainable_parameters(self) -> dict:
        """Print (and return) trainable count, share of the model, the count of a LoRA of the
        same r and targets, and the reduction versus that LoRA."""
        s = self.parameter_summary()
        print(
            f"trainable params: {s['trainable']:,} || all params: {s['total']:,} || "
            f"trainable%: {100 * s['trainable_share']:.4f} || LoRA (r={self.adapter_config.r}, same "
            f"targets): {s['lora_equivalent']:,} || reduction vs LoRA: {100 * s['reduction_vs_lora']:.1f}%"
        )
        return s

    # ---- merging ----------------------------------------------------------------------------

    def merge(self) -> None:
        """Fold every (linear) delta into its base weight; raises for non-linear adapters."""
        for layer in self.adapter_layers.values():
            layer.merge()

    def unmerge(self) -> None:
        for layer in self.adapter_layers.values():
            layer.unmerge()

    def merge_and_unload(self) -> nn.Module:
        """The base model with the deltas merged in and the adapter wrappers removed."""
        self.merge()
        remove(self.base_model, self.adapter_layers)
        self.adapter_layers = {}
        return self.base_model

    # ---- files ------------------------------------------------------------------------------

    def save_adapter(self, directory: str | Path) -> Path:
        """Write adapter_config.json + adapter_model.safetensors (adapter weights only)."""
        from qpeft.adapters.io import save_adapter

        return save_adapter(self, directory)

    def export_peft_lora(self, directory: str | Path) -> Path:
        """Write a standard PEFT LoRA directory equivalent to this (mergeable) adapter."""
        from qpeft.adapters.export import export_peft_lora

        return export_peft_lora(self, directory)


def get_model(model: nn.Module, config: AdapterConfig | str, **overrides) -> QPeftModel:
    """Wrap the target linear layers of ``model`` (in place) with adapters.

    ``config`` is a config object or a preset name (``qtha-default``, ``qtha-weights``,
    ``lora``, ``mpo``, ...); ``overrides`` replace preset fields.
    """
    if isinstance(config, str):
        from qpeft.adapters.presets import preset

        config = preset(config, **overrides)
    elif overrides:
        raise ValueError("field overrides apply to preset names; build the config with those fields instead")
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"config must be an AdapterConfig or a preset name, got {type(config).__name__}")
    if any(isinstance(m, AdapterLayer) for m in model.modules()):
        raise ValueError("this model already carries adapters; start from a fresh base model")
    layers = inject(model, config)
    logger.info("qpeft: %s adapters on %d modules", config.method, len(layers))
    return QPeftModel(model, config, layers)
