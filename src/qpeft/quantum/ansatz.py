"""Ansatz builders: each returns a :class:`Circuit` with its inputs and weights numbered.

Encodings (``encoding=``):
  * ``"angle"``: ``RY(x_i)`` on wire ``i``; ``n_inputs = n_qubits``.
  * ``"amplitude"``: the normalised input vector of length ``2**n_qubits`` is the initial state.
  * ``None``: no inputs (e.g. QTHA's weights mode).
``reupload=True`` repeats the angle encoding before every layer (data re-uploading).
"""

from __future__ import annotations

from collections.abc import Callable

from qpeft.quantum.circuit import Circuit, Input, Weight

ENCODINGS = ("angle", "amplitude", None)


def _new_circuit(n_qubits: int, encoding: str | None, reupload: bool) -> Circuit:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; choose 'angle', 'amplitude' or None")
    if reupload and encoding != "angle":
        raise ValueError("data re-uploading needs encoding='angle'")
    return Circuit(n_qubits, amplitude_encoding=encoding == "amplitude")


def angle_encoding(circuit: Circuit, rotation: str = "RY") -> Circuit:
    """Append ``rotation(x_i)`` on every wire ``i``."""
    for w in range(circuit.n_qubits):
        circuit.add(rotation, [w], Input(w))
    return circuit


def _check_layers(layers: int) -> None:
    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"`layers` must be a positive integer, got {layers!r}")


def _ring(n_qubits: int) -> list[tuple[int, int]]:
    """Nearest-neighbour ring (i, i+1 mod n); a single pair for 2 qubits, none for 1."""
    if n_qubits == 1:
        return []
    if n_qubits == 2:
        return [(0, 1)]
    return [(i, (i + 1) % n_qubits) for i in range(n_qubits)]


def hardware_efficient(
    n_qubits: int,
    layers: int = 2,
    *,
    encoding: str | None = "angle",
    entangler: str = "CZ",
    reupload: bool = False,
) -> Circuit:
    """Per layer: ``RY(w) RZ(w)`` on every wire, then an entangler (CZ or CNOT) ring.

    Weights: ``2 * n_qubits * layers``, index ``(layer * 2 + k) * n_qubits + wire``.
    """
    _check_layers(layers)
    if entangler.upper() not in ("CZ", "CNOT"):
        raise ValueError(f"`entangler` must be 'CZ' or 'CNOT', got {entangler!r}")
    c = _new_circuit(n_qubits, encoding, reupload)
    for layer in range(layers):
        if encoding == "angle" and (layer == 0 or reupload):
            angle_encoding(c)
        for k, gate in enumerate(("RY", "RZ")):
            for w in range(n_qubits):
                c.add(gate, [w], Weight((layer * 2 + k) * n_qubits + w))
        for a, b in _ring(n_qubits):
            c.add(entangler, [a, b])
    return c


def strongly_entangling(
    n_qubits: int, layers: int = 2, *, encoding: str | None = "angle", reupload: bool = False
) -> Circuit:
    """PennyLane's StronglyEntanglingLayers: ``Rot(phi, theta, omega) = RZ(omega) RY(theta)
    RZ(phi)`` on every wire, then CNOT(i, i + r mod n) with range ``r = layer mod (n-1) + 1``.

    Weights: ``3 * n_qubits * layers``, index ``(layer * n_qubits + wire) * 3 + k``
    (the same layout as PennyLane's ``(layers, n_qubits, 3)`` weight tensor).
    """
    _check_layers(layers)
    c = _new_circuit(n_qubits, encoding, reupload)
    for layer in range(layers):
        if encoding == "angle" and (layer == 0 or reupload):
            angle_encoding(c)
        for w in range(n_qubits):
            base = (layer * n_qubits + w) * 3
            c.add("RZ", [w], Weight(base)).add("RY", [w], Weight(base + 1)).add("RZ", [w], Weight(base + 2))
        if n_qubits > 1:
            r = layer % (n_qubits - 1) + 1
            for w in range(n_qubits):
                c.add("CNOT", [w, (w + r) % n_qubits])
    return c


def basic_entangler(
    n_qubits: int,
    layers: int = 2,
    *,
    encoding: str | None = "angle",
    rotation: str = "RX",
    reupload: bool = False,
) -> Circuit:
    """PennyLane's BasicEntanglerLayers: ``rotation(w)`` on every wire, then a CNOT ring.

    Weights: ``n_qubits * layers``, index ``layer * n_qubits + wire``.
    """
    _check_layers(layers)
    c = _new_circuit(n_qubits, encoding, reupload)
    for layer in range(layers):
        if encoding == "angle" and (layer == 0 or reupload):
            angle_encoding(c)
        for w in range(n_qubits):
            c.add(rotation, [w], Weight(layer * n_qubits + w))
        for a, b in _ring(n_qubits):
            c.add("CNOT", [a, b])
    return c


ANSATZE: dict[str, Callable[..., Circuit]] = {
    "hardware_efficient": hardware_efficient,
    "strongly_entangling": strongly_entangling,
    "basic_entangler": basic_entangler,
}


def build_ansatz(name: str, n_qubits: int, layers: int = 2, **kwargs) -> Circuit:
    """Build a named ansatz; unknown names list the known ones."""
    builder = ANSATZE.get(name)
    if builder is None:
        raise ValueError(f"unknown ansatz {name!r}; choose one of {', '.join(ANSATZE)}")
    return builder(n_qubits, layers, **kwargs)
