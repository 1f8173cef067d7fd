"""Load a calibration dump (e.g. saved from pyqpanda3's ``backend.chip_info()``) over a device.

The dump is JSON with these keys, all optional except that it must name something to change;
values it gives replace the device's, values it omits stay::

    {
      "qubits_num": 72,                          # must equal the device's qubit count
      "available_qubits": [0, 1, 2, ...],        # every other qubit becomes unavailable
      "single_qubit_info": [                     # ChipInfo.single_qubit_info(), T1/T2 in us
        {"qubit": 0, "single_gate_fidelity": 0.995, "readout_fidelity": 0.9234,
         "t1": 9.254, "t2": 1.128},
        {"qubit": 1, "readout_p01": 0.03, "readout_p10": 0.08}
      ],
      "double_qubits_info": [                    # ChipInfo.double_qubits_info()
        {"qubits": [38, 44], "fidelity": 0.9831} # fidelity 0 marks the pair unavailable
      ],
      "durations_ns": {"rx": 30, "cz": 40}       # per native gate (and "measure"), nanoseconds
    }

Everything is checked before anything is applied, and the result is a new device.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qpeft.devices.device import Device

TOP_KEYS = {"qubits_num", "available_qubits", "single_qubit_info", "double_qubits_info", "durations_ns"}
QUBIT_KEYS = {
    "qubit",
    "single_gate_fidelity",
    "readout_fidelity",
    "readout_p01",
    "readout_p10",
    "t1",
    "t2",
    "frequency",
}
PAIR_KEYS = {"qubits", "fidelity"}


def _read(source: str | Path | dict) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "calibration dict"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist; pass the path of a JSON dump")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"calibration file {path} is not valid JSON ({err}); fix or re-export it") from err
    return data, f"calibration file {path}"


def _number(where: str, key: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{where}: `{key}` must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _qubit(where: str, device: Device, q) -> int:
    if isinstance(q, bool) or not isinstance(q, int):
        raise ValueError(f"{where}: qubit indices must be integers, got {q!r}")
    if not 0 <= q < device.n_qubits:
        raise ValueError(
            f"{where}: qubit {q} is not on {device.name} (qubits 0..{device.n_qubits - 1}); remove it from "
            f"the dump or load the dump onto the device it was saved from"
        )
    return q


def apply_calibration(device: Device, source: str | Path | dict) -> Device:
    """A copy of ``device`` with the dump's figures (see the module docstring)."""
    data, where = _read(source)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object with keys {sorted(TOP_KEYS)}, got {type(data).__name__}")
    unknown = set(data) - TOP_KEYS
    if unknown or not data:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; a dump may hold {sorted(TOP_KEYS)}")
    if "qubits_num" in data and data["qubits_num"] != device.n_qubits:
        raise ValueError(
            f"{where} describes a {data['qubits_num']}-qubit chip but {device.name} has {device.n_qubits} qubits; "
            f"load it onto the device it was saved from"
        )
    fid_1q, p01, p10 = list(device.single_qubit_fidelity), list(device.readout_p01), list(device.readout_p10)
    t1, t2 = list(device.t1), list(device.t2)
    for entry in _entries(data, "single_qubit_info", where):
        unknown = set(entry) - QUBIT_KEYS
        if unknown or "qubit" not in entry:
            raise ValueError(
                f"{where}: a single_qubit_info entry needs `qubit` and may hold {sorted(QUBIT_KEYS)}; got {entry}"
            )
        q = _qubit(where, device, entry["qubit"])
        at = f"{where}, qubit {q}"
        if "single_gate_fidelity" in entry:
            fid_1q[q] = _number(at, "single_gate_fidelity", entry["single_gate_fidelity"], 0, 1)
        if "readout_fidelity" in entry:
            p01[q] = p10[q] = 1 - _number(at, "readout_fidelity", entry["readout_fidelity"], 0, 1)
        for key, values in (("readout_p01", p01), ("readout_p10", p10)):
            if key in entry:
                values[q] = _number(at, key, entry[key], 0, 1)
        if "t1" in entry:
            t1[q] = _number(at, "t1", entry["t1"], 1e-9, 1e9) * 1e-6
        if "t2" in entry:
            t2[q] = _number(at, "t2", entry["t2"], 1e-9, 1e9) * 1e-6
    pair_fid = list(device.pair_fidelity)
    dead = set()
    for entry in _entries(data, "double_qubits_info", where):
        if set(entry) != PAIR_KEYS or not isinstance(entry["qubits"], list) or len(entry["qubits"]) != 2:
            raise ValueError(f"{where}: a double_qubits_info entry is {{'qubits': [a, b], 'fidelity': f}}, got {entry}")
        a, b = (_qubit(where, device, q) for q in entry["qubits"])
        pair = (min(a, b), max(a, b))
        if not device.has_edge(a, b):
            raise ValueError(f"{where}: {device.name} has no coupler between qubits {a} and {b}; remove that pair")
        f = _number(f"{where}, pair {pair}", "fidelity", entry["fidelity"], 0, 1)
        pair_fid[device.pair_index(*pair)] = f
        if f == 0:
            dead.add(pair)
    unavailable = set(device.unavailable_qubits)
    if "available_qubits" in data:
        listed = data["available_qubits"]
        if not isinstance(listed, list):
            raise ValueError(f"{where}: `available_qubits` must be a list of qubit indices")
        keep = {_qubit(where, device, q) for q in listed}
        unavailable |= set(range(device.n_qubits)) - keep
    durations = dict(device.durations)
    for gate, ns in (data.get("durations_ns") or {}).items():
        if gate not in durations:
            raise ValueError(f"{where}: `durations_ns` names {gate!r}; {device.name} has {sorted(durations)}")
        durations[gate] = _number(f"{where}, durations_ns", gate, ns, 0, 1e9) * 1e-9
    try:
        return replace(
            device,
            single_qubit_fidelity=tuple(fid_1q),
            readout_p01=tuple(p01),
            readout_p10=tuple(p10),
            t1=tuple(t1),
            t2=tuple(t2),
            pair_fidelity=tuple(pair_fid),
            durations=durations,
            unavailable_qubits=frozenset(unavailable),
            unavailable_pairs=device.unavailable_pairs | frozenset(dead),
        )
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def _entries(data: dict, key: str, where: str) -> list[dict]:
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{where}: `{key}` must be a list of objects")
    return entries
