"""Placement prefers the best-calibrated connected qubits; routing reports its swaps; circuits
that cannot be placed say what to change."""

from __future__ import annotations

import pytest

from qpeft.devices import get_device
from qpeft.devices.transpile import transpile
from qpeft.quantum.circuit import Circuit, Weight

pytest.importorskip("qiskit")


def chain(n: int, closed: bool = False) -> Circuit:
    c = Circuit(n)
    for w in range(n):
        c.add("RY", [w], Weight(w))
    for w in range(n - 1 + closed):
        c.add("CZ", [w, (w + 1) % n])
    for w in range(n):
        c.add("RX", [w], Weight(n + w))
    return c


def test_layout_prefers_the_best_calibrated_connected_qubits():
    # One pair far better than the rest (CZ, one-qubit gates and readout of both qubits).
    good = {"qubits": [52, 58], "fidelity": 0.999}
    qubits = [{"qubit": q, "single_gate_fidelity": 0.9999, "readout_fidelity": 0.995} for q in (52, 58)]
    d = get_device("wukong72", calibration={"single_qubit_info": qubits, "double_qubits_info": [good]})
    report = transpile(chain(2), d).report
    assert set(report.physical_qubits) == {52, 58}
    assert report.swaps_added == 0 and report.two_qubit_gates == 1
    # With that pair unavailable, the circuit goes elsewhere.
    elsewhere = transpile(chain(2), d.with_unavailable(pairs=[(52, 58)])).report
    assert set(elsewhere.physical_qubits) != {52, 58}


def test_routing_reports_swaps():
    d = get_device("wukong72")
    line = transpile(chain(4), d).report
    assert line.swaps_added == 0 and line.two_qubit_gates == 3
    triangle = Circuit(3).add("H", [0]).add("CZ", [0, 1]).add("CZ", [1, 2]).add("CZ", [0, 2])
    triangle.add("RX", [0], Weight(0)).add("RX", [1], Weight(1)).add("RX", [2], Weight(2))
    report = transpile(triangle, d).report  # a grid has no triangles: routing must swap
    assert report.swaps_added >= 1
    assert report.two_qubit_gates > 3
    assert report.depth > 0 and len(report.physical_qubits) >= 3


def test_circuit_wider_than_the_device():
    d = get_device("wukong72")
    with pytest.raises(ValueError, match="needs 73 qubits but wukong72 has 72"):
        transpile(chain(73), d)
    cut = d.with_unavailable(pairs=[(q, q + 6) for q in range(30, 36)])
    with pytest.raises(ValueError, match="needs 40 qubits but wukong72 has 36 connected"):
        transpile(chain(40), cut)


def test_amplitude_encoding_cannot_run_on_a_chip():
    c = Circuit(2, amplitude_encoding=True).add("CZ", [0, 1])
    with pytest.raises(ValueError, match="angle encoding"):
        transpile(c, get_device("wukong72"))
