"""What every adapter method shares: the wrapper around a frozen linear layer, and the
injection of wrappers into a model.

``y = W0 x + scaling * delta(dropout(x))``: methods differ only in ``delta`` (and, when it
is linear in x, ``delta_factors``). A freshly injected adapter is an exact no-op because
the last factor of every delta is zero-initialised.

**The delta cache.** A linear delta is ``up @ down`` with ``down`` (k, d_in) and ``up``
(d_out, k), k <= r; for MPO and QTHA-weights adapters, computing them contracts the tensor
trains and (QTHA) runs the input-free circuit. In no-grad forwards (evaluation, ``generate``)
a mergeable adapter computes them once and reuses them, so a generated token costs two thin
GEMMs per module, as a LoRA does, until the weights change. A method whose delta is not linear
may cache the parts that are fixed (activation-mode QTHA: both MPO factors and its folded
circuit, see :meth:`AdapterLayer.cache_contents`). What the cached contents depend on
is checked at every forward: each adapter parameter's identity, storage and version counter
(every in-place change bumps it: an optimizer step, ``load_state_dict``, ``load_adapter``), a
count of optimizer steps in the process (fused optimizers update parameters without bumping
the counter), the base weight's dtype and device, and what a method adds (QTHA: its backend
object). ``.to()`` / ``.float()`` / ``.cuda()``, ``merge()`` and ``unmerge()`` drop the cache;
so does :meth:`AdapterLayer.clear_delta_cache`, for code that writes ``param.data`` directly.
With gradients on (training), the delta is computed anew at every forward, as before.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.checkpoint import checkpoint

from qpeft.adapters.config import ALL_LINEAR, AdapterConfig

try:  # GPT-2 style models use Conv1D (weight stored as (d_in, d_out))
    from transformers.pytorch_utils import Conv1D
except ImportError:  # transformers is optional for the core
    Conv1D = None


#: optimizer steps taken in this process (a fused optimizer updates parameters in place without
#: bumping their version counters); part of every cached delta's key
_optimizer_steps = [0]


def _count_step(optimizer, args, kwargs) -> None:
    _optimizer_steps[0] += 1


register_optimizer_step_post_hook(_count_step)


def is_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a layer an adapter can wrap: an ``nn.Linear`` or a GPT-2 ``Conv1D``.

    Args:
        module: any module of the model.

    Returns:
        True for ``nn.Linear`` and ``transformers``' ``Conv1D`` (when transformers is installed).
    """
    return isinstance(module, nn.Linear) or (Conv1D is not None and isinstance(module, Conv1D))


def in_out_features(module: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of an nn.Linear or a GPT-2 Conv1D."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    d_in, d_out = module.weight.shape  # Conv1D: y = x @ W + b
    return d_in, d_out


def _no_autocast(device_type: str):
    """Autocast off on ``device_type``: the cached contents keep the adapter's own precision (an
    evaluation under autocast would otherwise leave them in its dtype for every later forward)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class AdapterLayer(nn.Module):
    """Wraps a frozen linear layer and adds ``scaling * delta(x)``."""

    def __init__(self, base_layer: nn.Module, config: AdapterConfig):
        super().__init__()
        self.base_layer = base_layer
        self.config = config
        self.d_in, self.d_out = in_out_features(base_layer)
        self.fan_in_fan_out = not isinstance(base_layer, nn.Linear)
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False  # set by QPeftModel.disable_adapter(): the base layer alone
        self._delta_cache: tuple | None = None  # (key, down, scaling * up, the tensors keyed): module docstring
        for p in self.base_layer.parameters():
            p.requires_grad_(False)

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the wrapped base layer's weight, which the adapter's parameters and the
        delta's input use."""
        return self.base_layer.weight.dtype

    @property
    def weight_device(self) -> torch.device:
        """The device of the wrapped base layer's weight, where the adapter's parameters are made."""
        return self.base_layer.weight.device

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_in) -> (..., d_out), before scaling."""
        raise NotImplementedError

    def delta_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(down (k, d_in), up (d_out, k)) of a linear delta, ``delta(x) = up @ down @ x``, before
        scaling. Raises ValueError for a delta that is not linear in x."""
        raise ValueError(self.not_mergeable_reason())

    def delta_weight(self) -> torch.Tensor:
        """The (d_out, d_in) matrix of a linear delta, before scaling (ValueError if not linear)."""
        down, up = self.delta_factors()
        return up @ down

    def not_mergeable_reason(self) -> str:
        """Why this layer's delta cannot be merged into the base weight: the text of the ValueError
        that :meth:`merge` and :meth:`delta_factors` raise (methods override it with their own reason)."""
        return f"{type(self).__name__} is not linear in x, so it cannot be merged into the base weight"

    @property
    def recompute(self) -> bool:
        """Whether to recompute delta in backward (activation checkpointing)."""
        return False

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = self.base_layer(x, *args, **kwargs)
        if self.merged or self.disabled:
            return y
        if self.uses_delta_cache():
            return y + self.cached_delta(x).to(y.dtype)
        x = self.dropout(x)
        if self.recompute and self.training and torch.is_grad_enabled():
            delta = checkpoint(self.delta, x, use_reentrant=False)
        else:
            delta = self.delta(x)
        return y + delta.to(y.dtype) * self.scaling

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The adapter's own parameters (everything but the base layer's)."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("base_layer.")}

    # ---- the delta cache (module docstring) ----------------------------------------------

    def cacheable(self) -> bool:
        """Whether what the delta is computed from may be cached (:meth:`cache_contents`): the
        delta is linear and a deterministic function of the adapter's parameters (methods narrow
        this down, or widen it for a nonlinear delta with cacheable parts)."""
        return self.config.mergeable

    def uses_delta_cache(self) -> bool:
        """Whether this forward uses the cached factors: no gradients wanted, a cacheable delta,
        and no active dropout."""
        return (
            not torch.is_grad_enabled()
            and (not self.training or isinstance(self.dropout, nn.Identity))
            and self.cacheable()
        )

    def delta_cache_key(self) -> tuple:
        """What the cached factors depend on; a method adds what else its delta reads."""
        weight = self.base_layer.weight
        tensors = tuple((id(p), p.data_ptr(), p._version) for p in self.adapter_parameters().values())
        return (_optimizer_steps[0], weight.dtype, weight.device, tensors)

    def cache_contents(self) -> tuple:
        """What the delta cache holds, computed under no_grad: ``(down, scaling * up)`` of a
        linear delta (a method with a nonlinear delta returns its own, for :meth:`cached_delta`)."""
        down, up = self.delta_factors()
        return down.detach(), (up * self.scaling).detach()

    def cached_contents(self) -> tuple:
        """:meth:`cache_contents`, computed once and reused while :meth:`delta_cache_key` holds."""
        key = self.delta_cache_key()
        if self._delta_cache is None or self._delta_cache[0] != key:
            with torch.no_grad(), _no_autocast(self.weight_device.type):
                # the tensors keyed stay referenced, so their ids and storages cannot be reused
                self._delta_cache = (key, self.cache_contents(), self.adapter_parameters())
        return self._delta_cache[1]

    def cached_delta(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled delta from the cached contents: two thin GEMMs for a linear delta."""
        down, up = self.cached_contents()
        return F.linear(F.linear(x.to(down.dtype), down), up)

    def clear_delta_cache(self) -> None:
        """Drop the cached factors (recomputed at the next no-grad forward)."""
        self._delta_cache = None

    def _apply(self, fn, *args, **kwargs):
        # .to() / .float() / .cuda() / .half() move or convert the parameters: factors anew
        self.clear_delta_cache()
        return super()._apply(fn, *args, **kwargs)

    # ---- merging -----------------------------------------------------------------------

    def _scaled_delta_for_base(self) -> torch.Tensor:
        delta = self.delta_weight().detach() * self.scaling  # (d_out, d_in)
        return (delta.T if self.fan_in_fan_out else delta).to(self.weight_dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the scaled delta into the base layer's weight (``W0 += scaling * up @ down``); the
        layer then computes with the base layer alone. Does nothing when already merged.

        Raises:
            ValueError: the delta is not linear in its input (activation-mode QTHA), with the reason.
        """
        if not self.config.mergeable:
            raise ValueError(f"cannot merge: {self.not_mergeable_reason()}")
        if not self.merged:
            self.base_layer.weight += self._scaled_delta_for_base()
            self.merged = True
            self.clear_delta_cache()

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the scaled delta that :meth:`merge` added, so the adapter computes beside the
        base weight again. Does nothing when not merged. (The result equals the weight before the
        merge up to floating-point rounding.)"""
        if self.merged:
            self.base_layer.weight -= self._scaled_delta_for_base()
            self.merged = False
            self.clear_delta_cache()


def find_targets(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Full names of the linear modules ``config.target_modules`` selects (``all-linear``:
    every linear module but the output layer, as in PEFT).

    Raises ValueError listing the linear module names that exist when nothing matches.
    """
    linear = [name for name, module in model.named_modules() if is_linear(module)]
    targets = [name for name in linear if config.matches(name)]
    if config.target_modules == ALL_LINEAR:
        get_output = getattr(model, "get_output_embeddings", None)
        output = get_output() if callable(get_output) else None
        targets = [name for name in targets if model.get_submodule(name) is not output]
    if not targets:
        leaves = sorted({name.rsplit(".", 1)[-1] for name in linear})
        example = f" (e.g. {linear[0]})" if linear else ""
        raise ValueError(
            f"target_modules {config.target_modules!r} matched no Linear module; this model's Linear "
            f"modules are named: {', '.join(leaves)}{example}"
        )
    return targets


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in the place of the submodule called ``name`` (a dotted path) in ``model``.

    Args:
        model: the model that holds the submodule.
        name: its full dotted name, e.g. ``"model.layers.0.self_attn.q_proj"``.
        new: the module to set in its place.

    Raises:
        AttributeError: ``name``'s parent path is not a submodule of ``model``.
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def inject(
    model: nn.Module, config: AdapterConfig, layer_cls: type[AdapterLayer], targets: list[str] | None = None
) -> dict[str, AdapterLayer]:
    """Wrap every target of ``model`` (in place) with ``layer_cls(base, config)`` and freeze
    everything else. Returns {module name: adapter layer}."""
    targets = find_targets(model, config) if targets is None else targets
    for p in model.parameters():
        p.requires_grad_(False)
    layers = {}
    for name in targets:
        base = model.get_submodule(name)
        if isinstance(base, AdapterLayer):
            raise ValueError(f"module {name} already has an adapter; load or inject onto a fresh base model")
        layer = layer_cls(base, config).train(base.training)
        replace_module(model, name, layer)
        layers[name] = layer
    return layers


def remove(model: nn.Module, layers: dict[str, AdapterLayer]) -> None:
    """Put the base layers back (used to undo a failed load, and by merge_and_unload)."""
    for name, layer in layers.items():
        replace_module(model, name, layer.base_layer)
