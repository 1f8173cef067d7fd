"""Export a mergeable adapter as a standard PEFT LoRA directory.

Every mergeable delta ``scaling * delta_weight`` has rank <= r, so its truncated SVD
``U S V^T`` gives an exact rank-r factorisation ``B_eff = U sqrt(S)``, ``A_eff = sqrt(S) V^T``
(up to float error). The exported config uses ``lora_alpha = r`` (scaling 1): PEFT, vLLM and
TGI can load and serve it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from qpeft.adapters.base import AdapterLayer
from qpeft.adapters.config import AdapterConfig
from qpeft.adapters.io import atomic_write


def lora_factors(delta: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (r, d_in), B (d_out, r)) with B @ A == delta for a delta of rank <= r."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    k = min(r, s.numel())
    root = s[:k].sqrt()
    a, b = root[:, None] * vh[:k], u[:, :k] * root[None, :]
    if k < r:  # pad to the declared rank with zero rows / columns
        a = torch.cat([a, a.new_zeros(r - k, a.shape[1])])
        b = torch.cat([b, b.new_zeros(b.shape[0], r - k)], dim=1)
    return a, b


def export_peft_lora(
    layers: dict[str, AdapterLayer], config: AdapterConfig, directory: str | Path, base_model_name: str | None = None
) -> Path:
    """Write the adapter ``layers`` (module name -> layer) as a standard PEFT LoRA directory."""
    if not config.mergeable:
        layer = next(iter(layers.values()))
        raise ValueError(f"cannot export as LoRA: {layer.not_mergeable_reason()}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, fan_in_fan_out = {}, False
    for name, layer in layers.items():
        with torch.no_grad():
            delta = layer.delta_weight() * layer.scaling  # (d_out, d_in)
        a, b = lora_factors(delta, config.r)
        dtype = layer.weight_dtype
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.to(dtype).contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.to(dtype).contiguous().cpu()
        fan_in_fan_out |= layer.fan_in_fan_out
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": config.r,
        "lora_alpha": config.r,
        "lora_dropout": 0.0,
        "target_modules": sorted(layers),
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "inference_mode": True,
        "base_model_name_or_path": base_model_name,
    }
    atomic_write(directory / "adapter_model.safetensors", save(tensors, metadata={"format": "pt"}))
    atomic_write(directory / "adapter_config.json", json.dumps(peft_config, indent=2))
    return directory
