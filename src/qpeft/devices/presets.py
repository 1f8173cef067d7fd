"""The device presets: Origin Wukong from its published figures, IBM chips from
qiskit-ibm-runtime's offline fake backends. One table, :data:`DEVICES` (plus the presets plugin
packages register, :data:`REGISTRY`); :func:`get_device` builds one by name (and applies a
calibration dump or unavailable marks on top).

Sources: shared/reference/hardware.md sections 2 (Wukong) and 3.6 (IBM snapshots).
"""

from __future__ import annotations

import functools
import importlib
import random
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

from qpeft.devices.calibration import apply_calibration
from qpeft.devices.device import Device
from qpeft.plugins import Registry

WUKONG_ROWS, WUKONG_COLS = 12, 6
#: Seed of the per-qubit spread of the Wukong preset (reproducible figures).
WUKONG_SEED = 72
#: Published examples (QPanda3 tutorial_qcloud_service): qubit -> (1q fid, readout fid, T1 us, T2 us).
WUKONG_PUBLISHED_QUBITS = {0: (0.995, 0.9234, 9.254, 1.128), 1: (0.9973, 0.9417, 17.436, 1.844)}
#: Published CZ pair fidelities (same source).
WUKONG_PUBLISHED_PAIRS = {(38, 44): 0.9831, (45, 46): 0.9519, (45, 51): 0.9589, (41, 47): 0.964}
#: Published ranges (snapshot: 1q 0.995-0.997, readout 0.92-0.94, T1 9-17 us, T2 1.1-1.8 us, CZ 0.95-0.98).
WUKONG_RANGES = {
    "fid_1q": (0.995, 0.9973),
    "readout": (0.92, 0.9417),
    "t1_us": (9.254, 17.436),
    "t2_us": (1.128, 1.844),
    "fid_cz": (0.9519, 0.9831),
}
#: Gate durations in seconds. Not published for Wukong (hardware.md, "Could not confirm"):
#: assumed values typical of tunable-coupler transmon chips; a calibration dump overrides them.
WUKONG_DURATIONS = {"rz": 0.0, "rx": 30e-9, "u3": 30e-9, "cz": 40e-9, "measure": 2e-6}


def grid_edges(rows: int, cols: int) -> tuple[tuple[int, int], ...]:
    """Nearest-neighbour couplers of a rows x cols grid, qubit q = cols * row + col."""
    edges = []
    for r in range(rows):
        for c in range(cols):
            q = r * cols + c
            if c + 1 < cols:
                edges.append((q, q + 1))
            if r + 1 < rows:
                edges.append((q, q + cols))
    return tuple(sorted(edges))


def wukong72() -> Device:
    """Origin Wukong (Kuafu KF C72-300): 72 computational qubits, CZ, emulated.

    * Topology: a 12 x 6 grid (qubit ``6 * row + col``; neighbours differ by 1 or 6). This is
      the best public inference, not a published map: the documented pair list only joins
      qubits that differ by 1 or 6, and a 12 x 6 grid has exactly the chip's 126 couplers.
    * Native gates: RZ (virtual), RX and U3, CZ (QPanda3's transpiler emits RZ/RX/U3 + CZ).
    * Figures: only two qubits and four CZ pairs are published; those keep their published
      values. Every other qubit and pair is drawn uniformly, with ``random.Random(72)``, from
      the published range of each figure (:data:`WUKONG_RANGES`). Readout error is taken as
      symmetric (p01 = p10 = 1 - readout fidelity): the snapshot gives one figure per qubit.
    * Durations: not published; 30 ns per one-qubit gate, 40 ns per CZ, 2 us per readout are
      assumptions (:data:`WUKONG_DURATIONS`). Load a calibration dump to replace any of this.
      With T2 of 1.1-1.8 us, relaxation during a 30 ns gate already costs about 0.006-0.009 of
      average fidelity, more than the published one-qubit error on many qubits: there the
      emulated gate is as good as T1/T2 allow (no extra depolarizing), as in Qiskit Aer.
    """
    rng = random.Random(WUKONG_SEED)
    n = WUKONG_ROWS * WUKONG_COLS
    fid_1q, readout, t1, t2 = [], [], [], []
    for q in range(n):
        drawn = tuple(rng.uniform(*WUKONG_RANGES[k]) for k in ("fid_1q", "readout", "t1_us", "t2_us"))
        f1, fr, t1_us, t2_us = WUKONG_PUBLISHED_QUBITS.get(q, drawn)
        fid_1q.append(f1)
        readout.append(fr)
        t1.append(t1_us * 1e-6)
        t2.append(t2_us * 1e-6)
    edges = grid_edges(WUKONG_ROWS, WUKONG_COLS)
    drawn_cz = [rng.uniform(*WUKONG_RANGES["fid_cz"]) for _ in edges]
    pair_fid = tuple(WUKONG_PUBLISHED_PAIRS.get(e, f) for e, f in zip(edges, drawn_cz))
    return Device(
        name="wukong72",
        n_qubits=n,
        edges=edges,
        native_gates=("rz", "rx", "u3", "cz"),
        single_qubit_fidelity=tuple(fid_1q),
        readout_p01=tuple(1 - f for f in readout),
        readout_p10=tuple(1 - f for f in readout),
        t1=tuple(t1),
        t2=tuple(t2),
        pair_fidelity=pair_fid,
        durations=dict(WUKONG_DURATIONS),
        description="Origin Wukong 72 (emulated: 12x6 grid inferred, published snapshot figures)",
    )


#: IBM preset name -> qiskit-ibm-runtime fake backend class (CZ chips: Heron r1 / r2).
IBM_FAKES = {
    "ibm_torino": "FakeTorino",
    "ibm_fez": "FakeFez",
    "ibm_marrakesh": "FakeMarrakesh",
    "ibm_aachen": "FakeAachen",
}


def ibm_device(name: str) -> Device:
    """An IBM chip from its qiskit-ibm-runtime fake backend (offline snapshot): coupling
    map, basis (rz, sx, x, cz), per-qubit sx error, T1, T2, readout P(1|0) and P(0|1), per-pair
    CZ error. Durations are the snapshot's medians per gate. T2 is capped at 2 T1 (the physical
    limit; a few snapshot qubits exceed it), as Qiskit Aer's ``NoiseModel.from_backend`` does.
    Qubits or pairs without a calibration are marked unavailable."""
    try:
        fake_provider = importlib.import_module("qiskit_ibm_runtime.fake_provider")
    except ImportError as err:
        raise ImportError("IBM device presets need qiskit-ibm-runtime: `pip install qpeft[ibm]`") from err
    backend = getattr(fake_provider, IBM_FAKES[name])()
    target = backend.target
    props = backend.properties()
    n = backend.num_qubits
    broken: set[int] = set()

    def error(gate: str, qargs: tuple[int, ...]) -> float | None:
        inst = target[gate].get(qargs)
        return None if inst is None or inst.error is None or inst.error >= 1 else float(inst.error)

    fid_1q, p01, p10, t1, t2 = [], [], [], [], []
    for q in range(n):
        qp = target.qubit_properties[q]
        sx_err, meas_err = error("sx", (q,)), error("measure", (q,))
        if sx_err is None or meas_err is None or not qp or not qp.t1 or not qp.t2:
            broken.add(q)
            sx_err, meas_err, q_t1, q_t2 = 0.0, 0.0, 1.0, 1.0
        else:
            q_t1, q_t2 = qp.t1, min(qp.t2, 2 * qp.t1)
        fid_1q.append(1 - sx_err)
        read = props.qubit_property(q) if props is not None else {}
        p01.append(read["prob_meas1_prep0"][0] if "prob_meas1_prep0" in read else meas_err)
        p10.append(read["prob_meas0_prep1"][0] if "prob_meas0_prep1" in read else meas_err)
        t1.append(q_t1)
        t2.append(q_t2)
    pair_errors: dict[tuple[int, int], list[float]] = {}
    for qargs in target["cz"]:
        e = error("cz", qargs)
        pair_errors.setdefault(tuple(sorted(qargs)), []).append(1.0 if e is None else e)
    edges = tuple(sorted(pair_errors))
    pair_fid = tuple(1 - statistics.fmean(pair_errors[e]) for e in edges)
    dead_pairs = {e for e, f in zip(edges, pair_fid) if f <= 0}

    def median_duration(gate: str) -> float:
        values = [p.duration for p in target[gate].values() if p is not None and p.duration is not None]
        return float(statistics.median(values))

    durations = {g: median_duration(g) for g in ("sx", "x", "cz", "measure")}
    durations["rz"] = 0.0
    return Device(
        name=name,
        n_qubits=n,
        edges=edges,
        native_gates=("rz", "sx", "x", "cz"),
        single_qubit_fidelity=tuple(fid_1q),
        readout_p01=tuple(p01),
        readout_p10=tuple(p10),
        t1=tuple(t1),
        t2=tuple(t2),
        pair_fidelity=tuple(max(f, 0.0) for f in pair_fid),
        durations=durations,
        unavailable_qubits=frozenset(broken),
        unavailable_pairs=frozenset(dead_pairs),
        description=f"IBM {name[4:]} from qiskit-ibm-runtime {IBM_FAKES[name]} (offline snapshot)",
    )


def ibm_torino() -> Device:
    """IBM Torino (Heron r1, 133 qubits) from its offline snapshot (:func:`ibm_device`)."""
    return ibm_device("ibm_torino")


def ibm_fez() -> Device:
    """IBM Fez (Heron r2, 156 qubits) from its offline snapshot (:func:`ibm_device`)."""
    return ibm_device("ibm_fez")


def ibm_marrakesh() -> Device:
    """IBM Marrakesh (Heron r2, 156 qubits) from its offline snapshot (:func:`ibm_device`)."""
    return ibm_device("ibm_marrakesh")


def ibm_aachen() -> Device:
    """IBM Aachen (Heron r2, 156 qubits) from its offline snapshot (:func:`ibm_device`)."""
    return ibm_device("ibm_aachen")


#: qpeft's own presets, name -> builder (also its entry points in the ``qpeft.devices`` group). A
#: new device joins this table and the contract test covers it; plugin packages add theirs
#: through the entry points (:data:`REGISTRY`).
DEVICES: dict[str, Callable[[], Device]] = {
    "wukong72": wukong72,
    "ibm_torino": ibm_torino,
    "ibm_fez": ibm_fez,
    "ibm_marrakesh": ibm_marrakesh,
    "ibm_aachen": ibm_aachen,
}


def _as_device(obj: object) -> Callable[[], Device]:
    """A registry check: a Device, or a function that returns one (called when the preset is used)."""
    if isinstance(obj, Device):
        return lambda: obj
    if callable(obj) and not isinstance(obj, type):
        return obj
    raise TypeError(f"it is {obj!r}, not a qpeft.devices.Device or a function returning one")


#: the built-in presets plus those other packages register in the ``qpeft.devices`` entry-point group
REGISTRY = Registry(
    "device",
    "qpeft.devices",
    {name: f"{fn.__module__}:{fn.__name__}" for name, fn in DEVICES.items()},
    _as_device,
    choices="known devices:",
)


def device_names() -> list[str]:
    """Every device preset's name: the built-ins, then those plugin packages register."""
    return REGISTRY.names()


@functools.cache
def _preset(name: str) -> Device:
    device = REGISTRY.load(name)()
    if not isinstance(device, Device):
        entry = REGISTRY.entries()[name]
        raise TypeError(
            f"the device preset {name!r} from {entry.origin} ({entry.target}) returned {type(device).__name__}, "
            "not a qpeft.devices.Device"
        )
    return device


def get_device(
    name: str | Device,
    calibration: str | Path | dict | None = None,
    unavailable_qubits: Iterable[int] = (),
    unavailable_pairs: Iterable[Iterable[int]] = (),
) -> Device:
    """A device preset by name (a built-in or a plugin's, see :data:`REGISTRY`; or the given
    Device), with an optional calibration dump (a JSON file or dict, see
    :mod:`qpeft.devices.calibration`) and unavailable qubits / pairs applied on top. Every change
    is checked before any is applied. Raises ValueError for an unknown name (listing the known
    ones), ImportError for a plugin preset that fails to load (naming its distribution)."""
    device = name if isinstance(name, Device) else _preset(name)
    if calibration is not None:
        device = apply_calibration(device, calibration)
    if unavailable_qubits or unavailable_pairs:
        device = device.with_unavailable(unavailable_qubits, unavailable_pairs)
    return device
