"""The Wukong preset's published figures, calibration dumps, unavailable qubits and pairs,
and bad input (all or nothing)."""

from __future__ import annotations

import json

import pytest

from qpeft.devices import get_device
from qpeft.devices.presets import WUKONG_PUBLISHED_PAIRS, WUKONG_RANGES, wukong72


def test_wukong72_is_a_12_by_6_grid_with_the_published_figures():
    d = get_device("wukong72")
    assert d.n_qubits == 72 and len(d.edges) == 126  # 72 qubits, 126 couplers (hardware.md section 2)
    assert all(b - a in (1, 6) and not (b - a == 1 and b % 6 == 0) for a, b in d.edges)
    assert set(d.native_gates) == {"rz", "rx", "u3", "cz"}
    assert d.single_qubit_fidelity[:2] == (0.995, 0.9973)
    assert d.readout_fidelity(0) == pytest.approx(0.9234) and d.readout_fidelity(1) == pytest.approx(0.9417)
    assert d.t1[1] == pytest.approx(17.436e-6) and d.t2[0] == pytest.approx(1.128e-6)
    for pair, fid in WUKONG_PUBLISHED_PAIRS.items():
        assert d.pair_fidelity[d.pair_index(*pair)] == fid
    lo, hi = WUKONG_RANGES["fid_cz"]
    assert all(lo <= f <= hi for f in d.pair_fidelity)
    lo, hi = WUKONG_RANGES["t2_us"]
    assert all(lo * 1e-6 <= t <= hi * 1e-6 for t in d.t2)
    assert wukong72() == d  # the spread is seeded


def test_calibration_dump_replaces_the_snapshot(tmp_path):
    dump = {
        "qubits_num": 72,
        "available_qubits": [q for q in range(72) if q not in (18, 23)],
        "single_qubit_info": [
            {"qubit": 5, "single_gate_fidelity": 0.99, "readout_fidelity": 0.9, "t1": 20.0, "t2": 3.0},
            {"qubit": 6, "readout_p01": 0.01, "readout_p10": 0.05},
        ],
        "double_qubits_info": [{"qubits": [7, 13], "fidelity": 0.99}, {"qubits": [8, 9], "fidelity": 0.0}],
        "durations_ns": {"cz": 60},
    }
    path = tmp_path / "chip.json"
    path.write_text(json.dumps(dump))
    base = get_device("wukong72")
    d = get_device("wukong72", calibration=path)
    assert d.single_qubit_fidelity[5] == 0.99 and d.t1[5] == pytest.approx(20e-6) and d.t2[5] == pytest.approx(3e-6)
    assert d.readout_p01[5] == pytest.approx(0.1) and (d.readout_p01[6], d.readout_p10[6]) == (0.01, 0.05)
    assert d.pair_fidelity[d.pair_index(7, 13)] == 0.99
    assert (8, 9) in d.unavailable_pairs and (8, 9) not in d.available_edges
    assert {18, 23} == set(d.unavailable_qubits)
    assert d.durations["cz"] == pytest.approx(60e-9)
    assert d.single_qubit_fidelity[4] == base.single_qubit_fidelity[4]  # untouched figures stay
    assert get_device("wukong72") == base  # the preset itself is unchanged


@pytest.mark.parametrize(
    ("dump", "match"),
    [
        ({"single_qubit_info": [{"qubit": 80, "t1": 10.0}]}, "qubit 80 is not on wukong72"),
        ({"double_qubits_info": [{"qubits": [0, 7], "fidelity": 0.9}]}, "no coupler between qubits 0 and 7"),
        ({"single_qubit_info": [{"qubit": 3, "readout_fidelity": 1.5}]}, "readout_fidelity"),
        ({"single_qubit_info": [{"qubit": 3, "t1": 1.0, "t2": 5.0}]}, "T2 <= 2 T1"),
        ({"qubits_num": 102}, "102-qubit chip"),
        ({"qubit_info": []}, "unknown key"),
        ({"durations_ns": {"ecr": 60}}, "ecr"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_calibration_says_what_to_change_and_applies_nothing(tmp_path, dump, match):
    base = get_device("wukong72")
    # A valid first entry before the bad one: it must not be applied either.
    if isinstance(dump, dict):
        dump = {**dump, "single_qubit_info": [{"qubit": 2, "t1": 30.0}] + dump.get("single_qubit_info", [])}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dump))
    with pytest.raises(ValueError, match=match):
        get_device("wukong72", calibration=path)
    assert get_device("wukong72") == base


def test_malformed_or_missing_calibration_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"single_qubit_info": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        get_device("wukong72", calibration=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_device("wukong72", calibration=tmp_path / "absent.json")


def test_unavailable_qubits_and_pairs():
    d = get_device("wukong72", unavailable_qubits=[18, 23, 42, 43, 49, 68], unavailable_pairs=[(0, 1)])
    assert len(d.available_qubits) == 66  # the example of hardware.md section 2
    assert (0, 1) not in d.available_edges and not any(18 in e for e in d.available_edges)
    with pytest.raises(ValueError, match="no qubit"):
        d.with_unavailable(qubits=[72])
    with pytest.raises(ValueError, match="no coupler"):
        d.with_unavailable(pairs=[(0, 2)])
    # Cutting every coupler of rows 0-5 from rows 6-11 leaves two 36-qubit blocks.
    cut = get_device("wukong72", unavailable_pairs=[(q, q + 6) for q in range(30, 36)])
    assert len(cut.largest_connected_block()) == 36
