"""Named adapter presets. The QTHA presets are sized against SmolLM2-135M (hidden 576,
30 layers, 3 KV heads of 64): see ``tests/adapters/test_presets.py`` for the computed
parameter counts and ``benchmarks/results/overhead.md`` for their step-time cost."""

from __future__ import annotations

import dataclasses

from qpeft.adapters.config import AdapterConfig
from qpeft.adapters.registry import config_class

# qtha-default amplitude-encodes the r = 8 bottleneck on 3 qubits: on SmolLM2-135M (CPU, fp32)
# it measured 1.09x a LoRA step and 1.03x its peak memory, while the 8-qubit angle-encoded QNN
# (qtha-angle) measured 1.61x (benchmarks/results/overhead.md, 2026-11-29).
_QTHA = {
    "r": 8,
    "alpha": 16.0,
    "bond_dim": 6,
    "n_cores": 2,
    "qnn_layers": 2,
    "ansatz": "hardware_efficient",
    "encoding": "amplitude",
}

PRESETS: dict[str, tuple[str, dict, str]] = {
    "lora": ("lora", {"r": 8, "alpha": 16.0}, "LoRA r=8 on q_proj, v_proj (the reference)"),
    "mpo": ("mpo", {"r": 8, "alpha": 16.0, "bond_dim": 6, "n_cores": 2}, "pure MPO adapter, r=8, D=6"),
    "qtha-default": (
        "qtha",
        dict(_QTHA),
        "QTHA: MPO (D=6) + 3-qubit amplitude-encoded 2-layer QNN per token",
    ),
    "qtha-angle": (
        "qtha",
        dict(_QTHA, encoding="angle"),
        "QTHA with an 8-qubit angle-encoded QNN per token (richer circuit, ~1.6x LoRA step time)",
    ),
    "qtha-weights": (
        "qtha",
        dict(_QTHA, qnn_mode="weights"),
        "hardware-friendly QTHA: one 6-qubit circuit per module per step; mergeable",
    ),
    "qtha-mlp": (
        "qtha",
        dict(_QTHA, branch="mlp"),
        "classical control: qtha-default with an MLP of equal size",
    ),
    "qtha-none": ("qtha", dict(_QTHA, branch="none"), "classical control: qtha-default without the QNN"),
}


def preset(name: str, **overrides) -> AdapterConfig:
    """A fresh config of preset ``name`` with ``overrides`` applied (and validated)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    method, fields, _ = PRESETS[name]
    cls = config_class(method)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"preset {name!r} ({method}) has no field(s) {unknown}; its fields are {sorted(known)}")
    return cls(**{**fields, **overrides})
