"""``QPeftModel``: a Hugging Face causal LM with adapters, used as PEFT users use a
``PeftModel``: ``generate()``, ``transformers.Trainer``, TRL's ``SFTTrainer``,
``save_pretrained`` / ``from_pretrained`` (adapter only), ``disable_adapter()``, ``copy.deepcopy``
and ``pickle``; plus trainable-parameter accounting and merging.

Structure (what Trainer and TRL rely on): ``model.get_base_model()`` is the wrapped causal LM
(as on a ``PeftModel``), ``model.base_model`` its decoder backbone (as on a ``PreTrainedModel``:
TRL's fused LM head runs the backbone, then the output layer). The class derives from
``PreTrainedModel`` so that ``Trainer`` checkpoints call :meth:`QPeftModel.save_pretrained`, which
writes the adapter and no base weight.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

from qpeft.adapters import io
from qpeft.adapters.base import AdapterLayer, inject, remove
from qpeft.adapters.config import AdapterConfig
from qpeft.adapters.export import export_peft_lora
from qpeft.adapters.presets import preset
from qpeft.adapters.registry import config_from_dict, layer_class
from qpeft.qnn import batch_layers

logger = logging.getLogger(__name__)


class QPeftModel(PreTrainedModel):
    """A causal LM whose target linear layers carry adapters (everything else frozen).

    Build one with :func:`get_model`, or :meth:`from_pretrained` / :func:`load_adapter` from a
    saved adapter. Attributes the wrapper lacks are read from the wrapped model.
    """

    def __init__(self, model: nn.Module, config: AdapterConfig, layers: dict[str, AdapterLayer]):
        # nn.Module's init, not PreTrainedModel's: that one would re-check the attention
        # implementation on the wrapped model's config (which this wrapper shares) and set up
        # generation and loss state that belong to the wrapped model.
        nn.Module.__init__(self)
        self.model = model
        self.config = getattr(model, "config", None)
        self.adapter_config = config
        self.adapter_layers = layers  # plain dict: the layers are registered under self.model
        batch_layers(self)  # weights mode: all modules' circuits run as one batch per forward pass

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ):
        """The wrapped causal LM's forward. The named arguments are those ``Trainer`` keeps
        as dataset columns (it reads this signature); any other keyword passes through."""
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            **kwargs,
        )

    def generate(self, *args, **kwargs):
        """Generate with the wrapped causal LM (``transformers``' ``generate``, same arguments and
        return value); the adapter takes part in every forward pass. In no-grad forwards a mergeable
        adapter reuses its delta's factors, so a token costs what it costs with a LoRA."""
        return self.model.generate(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":  # not set yet (unpickling): do not recurse
                raise
            return getattr(self.model, name)

    # ---- the structure Trainer and TRL read ---------------------------------------------------

    def get_base_model(self) -> nn.Module:
        """The wrapped causal LM (with the adapter layers in it), as ``PeftModel.get_base_model``."""
        return self.model

    @property
    def base_model(self) -> nn.Module:
        """The wrapped model's decoder backbone, as ``PreTrainedModel.base_model``."""
        return getattr(self.model, "base_model", self.model)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        """The wrapped model's output layer (``lm_head``), or None when it has none."""
        return self.model.get_output_embeddings()

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return getattr(self.model, "supports_gradient_checkpointing", False)

    def activation_checkpointing_enable(self, *args, **kwargs):
        return self.model.activation_checkpointing_enable(*args, **kwargs)

    def gradient_checkpointing_enable(self, *args, **kwargs):
        return self.model.gradient_checkpointing_enable(*args, **kwargs)

    def gradient_checkpointing_disable(self, *args, **kwargs):
        return self.model.gradient_checkpointing_disable(*args, **kwargs)

    @property
    def is_activation_checkpointing(self) -> bool:
        return getattr(self.model, "is_activation_checkpointing", False)

    def tie_weights(self, *args, **kwargs):
        """The wrapped model's weight tying (Trainer calls it after loading a checkpoint)."""
        if hasattr(self.model, "tie_weights"):
            self.model.tie_weights(*args, **kwargs)

    @property
    def _keys_to_ignore_on_save(self) -> list[str]:
        """State-dict keys that :meth:`save_pretrained` does not write: every key but the
        adapter's. Trainer compares them with the keys missing from a checkpoint it resumes."""
        adapter = set(self.adapter_state())
        return [k for k in self.state_dict(keep_vars=True) if k not in adapter]

    # ---- parameters -------------------------------------------------------------------------

    def adapter_state(self) -> dict[str, nn.Parameter]:
        """The adapter's parameters under their names in this model (what is saved)."""
        return {
            f"{io.TENSOR_PREFIX}{name}.{pname}": p
            for name, layer in self.adapter_layers.items()
            for pname, p in layer.adapter_parameters().items()
        }

    def trainable_parameter_count(self) -> int:
        """The number of parameters with ``requires_grad`` (the adapter's, the base model being
        frozen)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def lora_equivalent_count(self) -> int:
        """Parameters of a LoRA with the same r on the same target modules."""
        r = self.adapter_config.r
        return sum(r * (layer.d_in + layer.d_out) for layer in self.adapter_layers.values())

    def parameter_summary(self) -> dict:
        """Parameter counts of the adapted model, as :meth:`print_trainable_parameters` prints them.

        Returns:
            ``{"trainable", "total", "trainable_share", "lora_equivalent", "reduction_vs_lora"}``:
            trainable and total parameter counts, their ratio, the count of a LoRA of the same r on the
            same modules, and ``1 - trainable / lora_equivalent``.
        """
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

    # ---- switching the adapter off, merging -------------------------------------------------

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Within the block the model computes as its base model; the adapter is back after it."""
        if any(layer.merged for layer in self.adapter_layers.values()):
            raise ValueError("the adapter is merged into the base weights; unmerge() before disable_adapter()")
        for layer in self.adapter_layers.values():
            layer.disabled = True
        try:
            yield
        finally:
            for layer in self.adapter_layers.values():
                layer.disabled = False

    def merge(self) -> None:
        """Fold every (linear) delta into its base weight; raises for non-linear adapters."""
        for layer in self.adapter_layers.values():
            layer.merge()

    def unmerge(self) -> None:
        """Undo :meth:`merge` on every adapter layer: subtract each delta from its base weight again
        (layers that are not merged are left alone)."""
        for layer in self.adapter_layers.values():
            layer.unmerge()

    def merge_and_unload(self) -> nn.Module:
        """The base model with the deltas merged in and the adapter wrappers removed."""
        self.merge()
        remove(self.model, self.adapter_layers)
        self.adapter_layers = {}
        return self.model

    # ---- files ------------------------------------------------------------------------------

    def save_pretrained(
        self,
        save_directory: str | Path,
        state_dict: dict[str, torch.Tensor] | None = None,
        is_main_process: bool = True,
        **kwargs,
    ) -> Path:
        """Write the adapter only (config, weights and their index), never a base weight.

        ``state_dict`` (as ``Trainer`` passes it when the model is sharded) supplies the
        adapter tensors instead of the live parameters; other keyword arguments of
        ``PreTrainedModel.save_pretrained`` concern full-model files and are ignored.
        """
        if kwargs.get("push_to_hub"):
            raise ValueError("save_pretrained(push_to_hub=True) is not supported; upload the directory yourself")
        for name, layer in self.adapter_layers.items():
            if layer.merged:
                raise ValueError(f"module {name} is merged; unmerge() before saving the adapter on its own")
        tensors = self.adapter_state()
        if state_dict is not None:
            tensors = {key: state_dict[key] for key in tensors}
        if not is_main_process:
            return Path(save_directory)
        meta = {
            "method": self.adapter_config.method,
            "config": self.adapter_config.to_dict(),
            "base_model_name_or_path": getattr(self.config, "_name_or_path", None),
            "modules": {name: [layer.d_in, layer.d_out] for name, layer in self.adapter_layers.items()},
        }
        return io.write_adapter(save_directory, meta, tensors)

    def save_adapter(self, directory: str | Path) -> Path:
        """Same as :meth:`save_pretrained`."""
        return self.save_pretrained(directory)

    def load_weights(self, directory: str | Path) -> None:
        """Copy a saved adapter's weights into this model's adapter, in place (all or none).

        The directory must hold this very adapter: the same config and the same modules (a
        checkpoint of this model's training, say); the base model is not touched.

        Raises:
            ValueError: the saved adapter has another config or other modules, a layer is
                merged, or the files do not fit (see :func:`load_adapter`).
        """
        directory = Path(directory)
        meta = io.read_adapter_config(directory)
        mine = {name: [layer.d_in, layer.d_out] for name, layer in self.adapter_layers.items()}
        if meta["config"] != self.adapter_config.to_dict() or meta["modules"] != mine:
            what = "config" if meta["config"] != self.adapter_config.to_dict() else "modules"
            raise ValueError(
                f"{directory} holds another adapter than this model's (its {what} differ); load it onto a "
                "fresh base model with qpeft.load_adapter(base_model, directory)"
            )
        for name, layer in self.adapter_layers.items():
            if layer.merged:
                raise ValueError(f"module {name} is merged; unmerge() before loading adapter weights")
        prefix = io.tensor_prefix(meta)
        expected = {
            f"{prefix}{name}.{pname}": p
            for name, layer in self.adapter_layers.items()
            for pname, p in layer.adapter_parameters().items()
        }
        io.copy_weights(expected, io.read_tensors(directory), directory)

    @classmethod
    def from_pretrained(cls, base_model: nn.Module, directory: str | Path, is_trainable: bool = False) -> QPeftModel:
        """Load a saved adapter onto a fresh ``base_model`` (exactly, or not at all).

        As with PEFT, the adapter is frozen unless ``is_trainable``; :func:`load_adapter` loads
        it trainable."""
        model = load_adapter(base_model, directory)
        for p in model.adapter_state().values():
            p.requires_grad_(is_trainable)
        return model

    def export_peft_lora(self, directory: str | Path) -> Path:
        """Write a standard PEFT LoRA directory equivalent to this (mergeable) adapter."""
        name = getattr(self.config, "_name_or_path", None)
        return export_peft_lora(self.adapter_layers, self.adapter_config, directory, name)


def get_model(model: nn.Module, config: AdapterConfig | str, **overrides) -> QPeftModel:
    """Wrap the target linear layers of ``model`` (in place) with adapters.

    ``config`` is a config object or a preset name (``qtha-default``, ``qtha-weights``,
    ``lora``, ``mpo``, ...); ``overrides`` replace preset fields.
    """
    if isinstance(config, str):
        config = preset(config, **overrides)
    elif overrides:
        raise ValueError("field overrides apply to preset names; build the config with those fields instead")
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"config must be an AdapterConfig or a preset name, got {type(config).__name__}")
    if any(isinstance(m, AdapterLayer) for m in model.modules()):
        raise ValueError("this model already carries adapters; start from a fresh base model")
    layers = inject(model, config, layer_class(config.method))
    logger.info("qpeft: %s adapters on %d modules", config.method, len(layers))
    return QPeftModel(model, config, layers)


def save_adapter(model: QPeftModel, directory: str | Path) -> Path:
    """Write ``model``'s adapter (config and weights only) to ``directory``."""
    return model.save_pretrained(directory)


def load_adapter(base_model: nn.Module, directory: str | Path) -> QPeftModel:
    """Restore a saved adapter onto a fresh base model (exactly, or not at all), trainable."""
    directory = Path(directory)
    meta = io.read_adapter_config(directory)
    config = config_from_dict(meta["config"])
    io.check_modules(base_model, meta["modules"])
    tensors = io.read_tensors(directory)
    layers = inject(base_model, config, layer_class(config.method), targets=list(meta["modules"]))
    prefix = io.tensor_prefix(meta)
    expected = {
        f"{prefix}{name}.{pname}": p
        for name, layer in layers.items()
        for pname, p in layer.adapter_parameters().items()
    }
    try:
        io.copy_weights(expected, tensors, directory)
    except Exception:
        remove(base_model, layers)  # nothing half-loaded
        raise
    return QPeftModel(base_model, config, layers)
