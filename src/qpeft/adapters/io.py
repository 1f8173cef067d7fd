"""Save and load adapters: ``adapter_config.json`` + ``adapter_model.safetensors``.

Writes are atomic (temporary file, then rename), so an interrupted save never leaves a
half-written adapter behind. Loading checks everything (config, module shapes, tensor
names and shapes) before it changes the base model, so a bad file loads nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from qpeft.adapters.base import in_out_features, inject, is_linear, remove
from qpeft.adapters.config import AdapterConfig
from qpeft.adapters.model import QPeftModel

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_VERSION = 1


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_adapter(model: QPeftModel, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, layer in model.adapter_layers.items():
        if layer.merged:
            raise ValueError(f"module {name} is merged; unmerge() before saving the adapter on its own")
        for pname, p in layer.adapter_parameters().items():
            tensors[f"{name}.{pname}"] = p.detach().contiguous().cpu()
    meta = {
        "format_version": FORMAT_VERSION,
        "method": model.adapter_config.method,
        "config": model.adapter_config.to_dict(),
        "base_model_name_or_path": getattr(getattr(model.base_model, "config", None), "_name_or_path", None),
        "modules": {name: [layer.d_in, layer.d_out] for name, layer in model.adapter_layers.items()},
    }
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    _atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}; point to a directory written by save_adapter()")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); the file is corrupt or truncated, save the adapter again"
        ) from err
    if not isinstance(meta, dict) or "config" not in meta or "modules" not in meta:
        raise ValueError(f"{path} lacks the 'config' / 'modules' entries of a qpeft adapter config")
    return meta


def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}; the adapter directory is incomplete")
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own SafetensorError for bad headers
        raise ValueError(
            f"{path} could not be read ({err}); the file is corrupt or truncated, save the adapter again"
        ) from err


def _check_modules(base_model: nn.Module, modules: dict) -> None:
    present = dict(base_model.named_modules())
    for name, (d_in, d_out) in modules.items():
        module = present.get(name)
        if module is None or not is_linear(module):
            raise ValueError(f"the adapter targets module {name}, which is not a Linear module of this base model")
        have = in_out_features(module)
        if have != (d_in, d_out):
            raise ValueError(
                f"module {name}: the adapter was saved for shape (d_in={d_in}, d_out={d_out}) but the "
                f"base model has (d_in={have[0]}, d_out={have[1]}); load it onto the model it was trained on"
            )


def load_adapter(base_model: nn.Module, directory: str | Path) -> QPeftModel:
    """Restore a saved adapter onto a fresh base model (exactly, or not at all)."""
    directory = Path(directory)
    meta = read_adapter_config(directory)
    config = AdapterConfig.from_dict(meta["config"])
    _check_modules(base_model, meta["modules"])
    tensors = _read_tensors(directory)
    layers = inject(base_model, config, targets=list(meta["modules"]))
    try:
        copy_weights(layers, tensors, directory)
    except Exception:
        remove(base_model, layers)  # nothing half-loaded
        raise
    return QPeftModel(base_model, config, layers)


def copy_weights(layers: dict, tensors: dict[str, torch.Tensor], directory: Path) -> None:
    """Check every name and shape first, then copy: all tensors or none."""
    expected = {
        f"{name}.{pname}": p for name, layer in layers.items() for pname, p in layer.adapter_parameters().items()
    }
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{directory / WEIGHTS_NAME} does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, p in expected.items():
        if tuple(tensors[key].shape) != tuple(p.shape):
            raise ValueError(f"tensor {key}: saved shape {tuple(tensors[key].shape)}, expected {tuple(p.shape)}")
    with torch.no_grad():
        for key, p in expected.items():
            p.copy_(tensors[key].to(dtype=p.dtype, device=p.device))


def load_adapter_weights(model: QPeftModel, directory: str | Path) -> None:
    """Load saved adapter weights into a model that already carries the same adapters
    (e.g. when resuming training from a checkpoint)."""
    directory = Path(directory)
    read_adapter_config(directory)
    copy_weights(model.adapter_layers, _read_tensors(directory), directory)
