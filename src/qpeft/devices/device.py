"""What a chip is: qubits, couplers, native gates, calibration figures and gate durations.

A :class:`Device` is immutable; marking qubits or pairs unavailable, or loading a
calibration, returns a new one, so a bad request never leaves a half-changed device.

Conventions, stated once:

* fidelities are *average gate fidelities* of the whole physical gate (what randomized
  benchmarking reports), decoherence during the gate included;
* ``readout_p01[q]`` is P(read 1 | prepared 0), ``readout_p10[q]`` is P(read 0 | prepared 1);
* T1, T2 and durations are in seconds; gates listed in ``virtual_gates`` (RZ, a frame change)
  take no time and add no error;
* native gates use Qiskit's lower-case names (``rz``, ``rx``, ``sx``, ``x``, ``u3``, ``cz``),
  since the transpile target is Qiskit's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

#: Native gates a device may declare, and how many qubits each acts on.
NATIVE_GATES = {"rz": 1, "rx": 1, "sx": 1, "x": 1, "u3": 1, "cz": 2}


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True)
class Device:
    """A superconducting chip as the transpiler and the noise simulator see it."""

    name: str
    n_qubits: int
    edges: tuple[tuple[int, int], ...]
    """undirected couplers (a, b) with a < b"""
    native_gates: tuple[str, ...]
    single_qubit_fidelity: tuple[float, ...]
    """per qubit: average fidelity of one physical one-qubit gate"""
    readout_p01: tuple[float, ...]
    readout_p10: tuple[float, ...]
    t1: tuple[float, ...]
    """per qubit, seconds"""
    t2: tuple[float, ...]
    """per qubit, seconds (at most 2 T1)"""
    pair_fidelity: tuple[float, ...]
    """per edge (same order as ``edges``): average fidelity of the two-qubit gate"""
    durations: dict[str, float]
    """seconds per native gate name, plus ``measure``"""
    unavailable_qubits: frozenset[int] = frozenset()
    unavailable_pairs: frozenset[tuple[int, int]] = frozenset()
    virtual_gates: frozenset[str] = frozenset({"rz"})
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        n = self.n_qubits
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"device `n_qubits` must be a positive integer, got {n!r}")
        unknown = [g for g in self.native_gates if g not in NATIVE_GATES]
        if unknown:
            raise ValueError(f"unknown native gate(s) {unknown}; choose from {sorted(NATIVE_GATES)}")
        two_qubit = [g for g in self.native_gates if NATIVE_GATES[g] == 2]
        if len(two_qubit) != 1:
            raise ValueError(f"a device needs exactly one native two-qubit gate, got {two_qubit}")
        for name in ("single_qubit_fidelity", "readout_p01", "readout_p10", "t1", "t2"):
            values = getattr(self, name)
            if len(values) != n:
                raise ValueError(f"device `{name}` needs one value per qubit ({n}), got {len(values)}")
        for name in ("single_qubit_fidelity", "readout_p01", "readout_p10", "pair_fidelity"):
            bad = [(i, v) for i, v in enumerate(getattr(self, name)) if not 0.0 <= v <= 1.0]
            if bad:
                raise ValueError(f"device `{name}` must lie in [0, 1]; got (index, value) {bad[:3]}")
        for q in range(n):
            if not (self.t1[q] > 0 and self.t2[q] > 0 and self.t2[q] <= 2 * self.t1[q] * (1 + 1e-9)):
                raise ValueError(
                    f"qubit {q}: need T1 > 0 and 0 < T2 <= 2 T1, got T1 = {self.t1[q]}, T2 = {self.t2[q]} (seconds)"
                )
        if len(self.pair_fidelity) != len(self.edges):
            raise ValueError(
                f"`pair_fidelity` needs one value per edge ({len(self.edges)}), got {len(self.pair_fidelity)}"
            )
        seen = set()
        for a, b in self.edges:
            if not (0 <= a < b < n):
                raise ValueError(f"edge {(a, b)} must be (a, b) with 0 <= a < b < {n}")
            if (a, b) in seen:
                raise ValueError(f"edge {(a, b)} is listed twice")
            seen.add((a, b))
        missing = [g for g in self.native_gates if g not in self.durations]
        if missing or "measure" not in self.durations:
            raise ValueError(
                f"`durations` needs a value for every native gate and 'measure'; missing {missing or ['measure']}"
            )
        self._check_marks(self.unavailable_qubits, self.unavailable_pairs)

    def _check_marks(self, qubits: Iterable[int], pairs: Iterable[tuple[int, int]]) -> None:
        bad_q = sorted(q for q in qubits if not (isinstance(q, int) and 0 <= q < self.n_qubits))
        if bad_q:
            raise ValueError(f"{self.name} has qubits 0..{self.n_qubits - 1}; it has no qubit(s) {bad_q}")
        edges = set(self.edges)
        bad_p = sorted(p for p in pairs if _pair(*p) not in edges)
        if bad_p:
            raise ValueError(f"{self.name} has no coupler between {bad_p}; pairs must be edges of its coupling graph")

    # ---- derived views ---------------------------------------------------------------------

    @property
    def two_qubit_gate(self) -> str:
        """The device's one native two-qubit gate (e.g. ``"cz"``)."""
        return next(g for g in self.native_gates if NATIVE_GATES[g] == 2)

    @property
    def available_qubits(self) -> tuple[int, ...]:
        """The qubits a circuit may be placed on: every qubit but ``unavailable_qubits``, in order."""
        return tuple(q for q in range(self.n_qubits) if q not in self.unavailable_qubits)

    @property
    def available_edges(self) -> tuple[tuple[int, int], ...]:
        """Edges whose pair and both qubits are usable."""
        return tuple(
            e for e in self.edges if e not in self.unavailable_pairs and not ({e[0], e[1]} & self.unavailable_qubits)
        )

    def has_edge(self, a: int, b: int) -> bool:
        """Whether qubits ``a`` and ``b`` (in either order) share a coupler."""
        return _pair(a, b) in self._edge_index

    def pair_index(self, a: int, b: int) -> int:
        """The position of the coupler between ``a`` and ``b`` (either order) in ``edges``, which
        indexes its ``pair_fidelity``.

        Raises:
            KeyError: the two qubits share no coupler.
        """
        return self._edge_index[_pair(a, b)]

    @property
    def _edge_index(self) -> dict[tuple[int, int], int]:
        cached = self.__dict__.get("_edge_index_cache")
        if cached is None:
            cached = {e: i for i, e in enumerate(self.edges)}
            object.__setattr__(self, "_edge_index_cache", cached)
        return cached

    def readout_fidelity(self, qubit: int) -> float:
        """(P(0|0) + P(1|1)) / 2."""
        return 1 - (self.readout_p01[qubit] + self.readout_p10[qubit]) / 2

    def largest_connected_block(self) -> tuple[int, ...]:
        """The largest set of available qubits connected by available edges."""
        neighbours: dict[int, set[int]] = {q: set() for q in self.available_qubits}
        for a, b in self.available_edges:
            neighbours[a].add(b)
            neighbours[b].add(a)
        best: set[int] = set()
        unseen = set(neighbours)
        while unseen:
            block, frontier = set(), [unseen.pop()]
            while frontier:
                q = frontier.pop()
                block.add(q)
                frontier.extend(neighbours[q] - block - set(frontier))
            unseen -= block
            best = max(best, block, key=len)
        return tuple(sorted(best))

    # ---- new devices from this one ----------------------------------------------------------

    def with_unavailable(self, qubits: Iterable[int] = (), pairs: Iterable[Iterable[int]] = ()) -> Device:
        """A copy with more qubits and couplers marked unusable (checked first: all or nothing)."""
        qubits = list(qubits)
        pairs = [tuple(p) for p in pairs]
        bad = [p for p in pairs if len(p) != 2]
        if bad:
            raise ValueError(f"pairs must be two qubit indices each, got {bad}")
        self._check_marks(qubits, pairs)
        return replace(
            self,
            unavailable_qubits=self.unavailable_qubits | frozenset(qubits),
            unavailable_pairs=self.unavailable_pairs | frozenset(_pair(*p) for p in pairs),
        )

    def summary(self) -> dict:
        """Medians and counts for reports."""

        def median(values) -> float:
            values = sorted(values)
            return values[len(values) // 2] if values else math.nan

        qs = self.available_qubits
        return {
            "name": self.name,
            "qubits": self.n_qubits,
            "available_qubits": len(qs),
            "couplers": len(self.edges),
            "available_couplers": len(self.available_edges),
            "native_gates": list(self.native_gates),
            "median_1q_fidelity": median(self.single_qubit_fidelity[q] for q in qs),
            "median_2q_fidelity": median(self.pair_fidelity[self.pair_index(*e)] for e in self.available_edges),
            "median_readout_fidelity": median(self.readout_fidelity(q) for q in qs),
            "median_t1_us": median(self.t1[q] * 1e6 for q in qs),
            "median_t2_us": median(self.t2[q] * 1e6 for q in qs),
        }
