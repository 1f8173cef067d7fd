"""QTHA: an MPO adapter whose bottleneck runs through a parameterized quantum circuit."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import ClassVar

from qpeft.adapters.config import TensorTrainFields, _choice, _positive_int, doc
from qpeft.backends.base import backend_names, check_options
from qpeft.devices import DEVICES, device_names
from qpeft.qnn import DIFF_METHODS
from qpeft.quantum.ansatz import ANSATZE
from qpeft.quantum.density import NoiseModel
from qpeft.quantum.statevector import check_memory

QNN_MODES = ("activation", "weights")
FUSIONS = ("linear", "weighted")
BRANCHES = ("qnn", "mlp", "none")
ENCODINGS = ("angle", "amplitude")
SAMPLING_BACKENDS = ("shots", "noisy", "qiskit", "pennylane")
NOISE_FIELDS = tuple(f.name for f in dataclasses.fields(NoiseModel))


@dataclass
class QTHAConfig(TensorTrainFields):
    """Quantum Tensor Hybrid Adaptation (see DESIGN.md section 3)."""

    method: ClassVar[str] = "qtha"

    n_qubits: int | None = doc(
        None,
        "QNN qubits; None derives it: r (angle encoding), log2 r (amplitude), 2 log2 r "
        "(weights mode); an explicit value must equal the derived one",
    )
    qnn_layers: int = doc(2, "layers of the QNN ansatz")
    ansatz: str = doc("hardware_efficient", f"QNN ansatz: one of {', '.join(ANSATZE)}")
    encoding: str = doc("angle", "activation mode: 'angle' (RY(h_i) on wire i) or 'amplitude' (h as the state)")
    qnn_mode: str = doc(
        "activation",
        "'activation': one circuit per token, q = QNN(h) fused with h; 'weights': one input-free "
        "circuit per module whose r^2 probabilities form an r x r mixing matrix (mergeable)",
    )
    fusion: str = doc("linear", "activation mode: 'linear' z = h + gamma*q, or 'weighted' z = h*(1 + gamma*q)")
    branch: str = doc("qnn", "'qnn'; 'mlp': a classical MLP with the same parameter count (control); 'none': pure MPO")
    backend: str = doc(
        "torch", "circuit backend: torch, shots, noisy, qiskit, pennylane, pyqpanda3, or a plugin's (`qpeft providers`)"
    )
    shots: int | None = doc(None, "shots per circuit for sampling backends (None: exact)")
    diff_method: str = doc("backprop", f"QNN gradients: one of {', '.join(DIFF_METHODS)}")
    noise: dict | str | None = doc(
        None,
        "noise of the 'noisy' backend: a device name (circuits are transpiled onto the chip and get its "
        f"calibrated noise: {', '.join(DEVICES)}; backend_options={{'mitigate_readout': True}} inverts its "
        f"readout error) or a dict of NoiseModel fields ({', '.join(NOISE_FIELDS)}), e.g. "
        "{'depolarizing': 0.01, 'readout_p01': 0.02}",
    )
    backend_options: dict = doc(
        {},
        "extra keyword options of the backend's constructor, e.g. {'seed': 0} (shots, noisy, "
        "qiskit), {'device': 'lightning.qubit'} (pennylane), {'dtype': 'complex128'} (torch, noisy)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int("qnn_layers", self.qnn_layers)
        _choice("ansatz", self.ansatz, tuple(ANSATZE))
        _choice("encoding", self.encoding, ENCODINGS)
        _choice("qnn_mode", self.qnn_mode, QNN_MODES)
        _choice("fusion", self.fusion, FUSIONS)
        _choice("branch", self.branch, BRANCHES)
        _choice("diff_method", self.diff_method, DIFF_METHODS)
        _choice("backend", self.backend, tuple(backend_names()))  # (plugin packages' backends included)
        if self.shots is not None:
            _positive_int("shots", self.shots)
            if self.backend not in SAMPLING_BACKENDS:
                raise ValueError(
                    f"`shots` = {self.shots} needs a sampling backend ({', '.join(SAMPLING_BACKENDS)}); "
                    f"backend {self.backend!r} is exact: drop `shots` or change `backend`"
                )
        if self.backend == "shots" and self.shots is None:
            raise ValueError("backend 'shots' needs `shots` (a positive integer)")
        self._check_noise()
        self._check_backend_options()
        sampled = self.shots is not None or self.backend in ("qiskit", "pyqpanda3")
        if self.diff_method == "backprop" and sampled and self.branch == "qnn":
            raise ValueError(
                f"backend {self.backend!r}{' with shots' if self.shots else ''} is not differentiable by "
                f"autograd; use diff_method='parameter_shift' or 'hybrid'"
            )
        power_of_two = self.r & (self.r - 1) == 0
        if self.qnn_mode == "weights" and not power_of_two:
            raise ValueError(f"qnn_mode='weights' needs r to be a power of two (r^2 = 2^n_qubits), got r = {self.r}")
        if self.qnn_mode == "activation" and self.encoding == "amplitude" and not power_of_two:
            raise ValueError(
                f"amplitude encoding needs r to be a power of two (r = 2^n_qubits), got r = {self.r}; "
                f"use r = {2 ** round(math.log2(self.r))} or encoding='angle'"
            )
        derived = self.derived_qubits()
        if self.n_qubits is not None and self.n_qubits != derived:
            raise ValueError(
                f"`n_qubits` = {self.n_qubits} does not fit r = {self.r} with {self._layout()}: it must be "
                f"{derived} (or None to derive it)"
            )
        self.n_qubits = derived
        if self.branch == "qnn":
            try:
                check_memory(derived, 1)
            except ValueError as err:
                raise ValueError(
                    f"QTHA with r = {self.r} and {self._layout()} needs a {derived}-qubit circuit, "
                    f"beyond the simulator's memory; lower r, or use encoding='amplitude' (log2 r "
                    f"qubits). ({err})"
                ) from err

    def _check_noise(self) -> None:
        if isinstance(self.noise, str) and self.noise not in device_names():
            raise ValueError(
                f"`noise` = {self.noise!r} is not a known device; choose one of {', '.join(device_names())}, or "
                f"give a dict of NoiseModel fields ({', '.join(NOISE_FIELDS)}), e.g. {{'depolarizing': 0.01}}"
            )
        if self.noise is not None and not isinstance(self.noise, dict | str):
            raise ValueError(f"`noise` must be a device name, a dict of NoiseModel fields or None, got {self.noise!r}")
        if self.noise is not None and self.backend != "noisy":
            raise ValueError(
                f"`noise` is simulated only by backend 'noisy', not {self.backend!r}: set backend='noisy' "
                f"or drop `noise`"
            )
        if self.backend != "noisy" or isinstance(self.noise, str):
            return
        unknown = sorted(set(self.noise or {}) - set(NOISE_FIELDS))
        if unknown:
            raise ValueError(f"`noise` has unknown field(s) {unknown}; NoiseModel fields are {list(NOISE_FIELDS)}")
        if not self.noise or NoiseModel(**self.noise).is_noiseless:
            raise ValueError(
                f"backend 'noisy' needs a non-zero `noise`, got {self.noise!r}: set e.g. "
                f"noise={{'depolarizing': 0.01, 'readout_p01': 0.02}} (fields: {', '.join(NOISE_FIELDS)}), "
                f"or use backend='torch' for an exact simulation"
            )

    def _check_backend_options(self) -> None:
        if not isinstance(self.backend_options, dict):
            raise ValueError(f"`backend_options` must be a dict, got {self.backend_options!r}")
        own = sorted({"shots", "noise"} & set(self.backend_options))
        if own:
            raise ValueError(f"set {own} through the config field(s) of the same name, not `backend_options`")
        try:
            json.dumps(self.backend_options)
        except TypeError as err:
            raise ValueError(
                f"`backend_options` must be JSON values (they are saved with the adapter), got "
                f"{self.backend_options!r}; give a dtype by name, e.g. 'complex128'"
            ) from err
        try:
            check_options(self.backend, self.backend_options)
        except ValueError as err:
            raise ValueError(f"`backend_options`: {err}") from err

    def _layout(self) -> str:
        return "qnn_mode='weights'" if self.qnn_mode == "weights" else f"encoding={self.encoding!r}"

    def derived_qubits(self) -> int:
        """The number of qubits the QNN needs for this config: ``2 log2 r`` in weights mode (its r^2
        basis probabilities form the r x r mixing matrix), else ``r`` for angle encoding and
        ``log2 r`` for amplitude encoding. ``n_qubits``, when given, must equal it."""
        if self.qnn_mode == "weights":
            return 2 * int(math.log2(self.r))
        return self.r if self.encoding == "angle" else int(math.log2(self.r))

    @property
    def mergeable(self) -> bool:
        return self.qnn_mode == "weights" or self.branch == "none"
