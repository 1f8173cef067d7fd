"""The adapter directory format: ``adapter_config.json`` + ``adapter_model.safetensors``
(+ ``model.safetensors.index.json``).

Writes are atomic (temporary file, then rename), so an interrupted save never leaves a
half-written adapter behind, and the files get the permissions of any file the user writes
(``0666`` less the umask), so a serving account can read them. Reading checks everything (format, config, module shapes,
tensor names and shapes) before anything is copied, so a bad file loads nothing.

The file names are PEFT's, the schema is not: the config is marked ``"format": "qpeft"``,
and its ``peft_type`` is a sentence that PEFT cannot resolve, so ``peft.PeftModel.from_pretrained``
fails with a message that names ``qpeft.load_adapter`` and ``qpeft export``. The index maps
every saved tensor to the weights file, in the format of a sharded transformers checkpoint:
it is how ``transformers.Trainer(resume_from_checkpoint=...)`` finds the adapter weights
in a checkpoint that holds no base model.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from qpeft.adapters.base import in_out_features, is_linear

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
FORMAT = "qpeft"
#: 2: tensor names are those of the QPeftModel (``model.<module>.<parameter>``); 1: of the base model
FORMAT_VERSION = 2
#: what saved tensor names put before ``<module>.<parameter>``: the QPeftModel attribute holding the base model
TENSOR_PREFIX = "model."
NOT_PEFT = (
    "qpeft: this is a qpeft adapter, not a PEFT one; load it with qpeft.load_adapter(base_model, directory) "
    "or convert a mergeable adapter to a PEFT LoRA with `qpeft export`"
)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it to ``path``.

    The temporary file is created as ``open()`` creates files (mode ``0666`` less the umask;
    ``tempfile.mkstemp`` would make it ``0600``, readable by its owner only), so ``path`` ends
    up with the permissions of every other file the user writes."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_adapter(directory: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write the weights, the index and the config (``meta`` gains the format marks)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: t.detach().contiguous().cpu() for k, t in tensors.items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "peft_type": NOT_PEFT, **meta}
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
        "weight_map": dict.fromkeys(sorted(tensors), WEIGHTS_NAME),
    }
    atomic_write(directory / WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
    atomic_write(directory / INDEX_NAME, json.dumps(index, indent=2))
    atomic_write(directory / CONFIG_NAME, json.dumps(meta, indent=2))
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    """Read and check ``adapter_config.json`` in ``directory``.

    Args:
        directory: an adapter directory written by ``save_pretrained`` / ``save_adapter``.

    Returns:
        The file's dict: ``"config"`` (the adapter config's fields), ``"modules"`` (each adapted
        module's shapes) and the format entries.

    Raises:
        FileNotFoundError: there is no ``adapter_config.json`` in ``directory``.
        ValueError: the file is not valid JSON, is a PEFT adapter's config (load it with PEFT),
            lacks the ``config`` / ``modules`` entries, or has a format version newer than this
            qpeft reads.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}; point to a directory written by save_pretrained()")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); the file is corrupt or truncated, save the adapter again"
        ) from err
    if isinstance(meta, dict) and "peft_type" in meta and meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a PEFT adapter ({meta['peft_type']}), not a qpeft one; load it with "
            "peft.PeftModel.from_pretrained"
        )
    if not isinstance(meta, dict) or "config" not in meta or "modules" not in meta:
        raise ValueError(f"{path} lacks the 'config' / 'modules' entries of a qpeft adapter config")
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta['format_version']}, newer than this qpeft reads "
            f"({FORMAT_VERSION}); upgrade qpeft"
        )
    return meta


def tensor_prefix(meta: dict) -> str:
    """What the saved tensor names put before ``<module>.<parameter>``."""
    return "" if meta.get("format_version", 1) == 1 else TENSOR_PREFIX


def read_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """Read the adapter's weights, ``adapter_model.safetensors`` in ``directory``.

    Args:
        directory: an adapter directory.

    Returns:
        {tensor name: tensor}, as saved (names start with the adapter's tensor prefix).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file cannot be read (corrupt or truncated).
    """
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}; the adapter directory is incomplete")
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own SafetensorError for bad headers
        raise ValueError(
            f"{path} could not be read ({err}); the file is corrupt or truncated, save the adapter again"
        ) from err


def check_modules(base_model: nn.Module, modules: dict) -> None:
    """Every module the adapter targets exists in ``base_model`` as a linear layer of the saved shape."""
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


def copy_weights(expected: dict[str, nn.Parameter], tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Check every name and shape first, then copy: all tensors or none."""
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source / WEIGHTS_NAME} does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, p in expected.items():
        if tuple(tensors[key].shape) != tuple(p.shape):
            raise ValueError(f"tensor {key}: saved shape {tuple(tensors[key].shape)}, expected {tuple(p.shape)}")
    with torch.no_grad():
        for key, p in expected.items():
            p.copy_(tensors[key].to(dtype=p.dtype, device=p.device))
