"""Content keys of bound circuits, computed per template rather than per circuit.

A circuit's content is its template (the provider's fingerprint, the canonical circuit text
and its weight / input counts: hashed once per template object) and its angles (the exact
float64 bytes of its weights, then its inputs). Per engine call, the circuits of each
template are stacked into one float64 array whose rows are their angles; two circuits are
the same circuit when their template keys and angle rows are equal. A job's key is one hash
over its circuits' template keys and angle rows (plus provider, shots and scope), so no
circuit is hashed on its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from qpeft.jobs.base import BoundCircuit, circuit_text, two_qubit_gates
from qpeft.quantum.circuit import Circuit

KEY_BYTES = 16


def template_content(circuit: Circuit) -> str:
    """Everything about a template that changes its results: two templates with equal
    contents are one template."""
    return f"{circuit_text(circuit)}|{circuit.n_weights}|{circuit.n_inputs}|{int(circuit.amplitude_encoding)}"


@dataclass(frozen=True, eq=False)
class Template:
    circuit: Circuit
    key: bytes  # KEY_BYTES digest of the provider fingerprint and the template's content
    two_qubit: int


class Templates:
    """The templates an engine has seen, keyed once per circuit object (a circuit must not be
    changed after it ran); forgotten when the provider's fingerprint changes."""

    def __init__(self) -> None:
        self._fingerprint = ""
        self._known: dict[int, Template] = {}  # id(circuit) -> template; holds the circuit, so ids stay unique

    def reset(self, fingerprint: str) -> None:
        if fingerprint != self._fingerprint:
            self._fingerprint, self._known = fingerprint, {}

    def get(self, circuit: Circuit) -> Template:
        known = self._known.get(id(circuit))
        if known is None or known.circuit is not circuit:
            content = f"{self._fingerprint}|{template_content(circuit)}"
            key = hashlib.blake2b(content.encode(), digest_size=KEY_BYTES).digest()
            known = self._known[id(circuit)] = Template(circuit, key, two_qubit_gates(circuit))
        return known


@dataclass
class Keyed:
    """The distinct circuits of a call (first-occurrence order) and where each input went."""

    circuits: list[BoundCircuit]
    templates: list[Template]  # per distinct circuit
    rows: list[bytes]  # per distinct circuit: its angles' float64 bytes
    index: list[int]  # per input circuit: its distinct circuit

    def content(self, i: int) -> tuple[bytes, bytes]:
        return self.templates[i].key, self.rows[i]


def _stack(rows: list[tuple[float, ...]], width: int, what: str, circuit: Circuit) -> np.ndarray:
    lengths = set(map(len, rows))
    if lengths - {width}:
        raise ValueError(
            f"a circuit binds {sorted(lengths - {width})[0]} {what} to a template that reads {circuit.n_weights} "
            f"weights and {circuit.n_inputs} inputs; bind exactly those"
        )
    return np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * width).reshape(len(rows), width)


def _angles(circuits: Sequence[BoundCircuit], members: list[int], template: Template) -> np.ndarray:
    """(len(members), n_weights + n_inputs) float64: the stacked angles of one template's circuits."""
    c = template.circuit
    weights = _stack([circuits[i].weights for i in members], c.n_weights, "weights", c)
    inputs = _stack([circuits[i].inputs for i in members], c.n_inputs, "inputs", c)
    return np.concatenate([weights, inputs], axis=1) if c.n_inputs else weights


def key_circuits(circuits: Sequence[BoundCircuit], templates: Templates) -> Keyed:
    """Group ``circuits`` by template content, stack their angles, and de-duplicate."""
    n = len(circuits)
    ids = np.fromiter((id(c.circuit) for c in circuits), dtype=np.uint64, count=n)
    _, first, obj_of = np.unique(ids, return_index=True, return_inverse=True)
    # template objects with equal content (e.g. one per module) form one group
    groups: dict[bytes, int] = {}
    reps: list[Template] = []
    group_of_obj = []
    for i in first.tolist():
        t = templates.get(circuits[i].circuit)
        g = groups.setdefault(t.key, len(groups))
        if g == len(reps):
            reps.append(t)
        group_of_obj.append(g)
    group_of = np.asarray(group_of_obj, dtype=np.int64)[obj_of.ravel()]
    order = np.argsort(group_of, kind="stable").tolist()
    bounds = np.cumsum(np.bincount(group_of)).tolist()
    rows: list[bytes] = [b""] * n
    group_rows: list[int] = [0] * n
    start = 0
    for g, end in enumerate(bounds):
        members = order[start:end]
        start = end
        angles = _angles(circuits, members, reps[g])
        if angles.shape[1]:  # one bytes object per row, made in C
            values = angles.view(np.dtype((np.void, angles.itemsize * angles.shape[1]))).ravel().tolist()
            for i, row in zip(members, values):
                rows[i] = row
        for i in members:
            group_rows[i] = g
    seen: dict[tuple[int, bytes], int] = {}
    keep: list[int] = []
    index: list[int] = []
    for i, k in enumerate(zip(group_rows, rows)):
        j = seen.get(k)
        if j is None:
            j = seen[k] = len(keep)
            keep.append(i)
        index.append(j)
    return Keyed([circuits[i] for i in keep], [reps[group_rows[i]] for i in keep], [rows[i] for i in keep], index)


def job_key(header: str, keyed: Keyed, members: Sequence[int]) -> str:
    """One hash over a job's circuits (``members`` of ``keyed``) and ``header`` (provider,
    shots, scope): the template keys, then the angle rows (each template fixes its row width)."""
    h = hashlib.blake2b(f"{header}|{len(members)}|".encode(), digest_size=KEY_BYTES)
    h.update(b"".join([keyed.templates[i].key for i in members]))
    h.update(b"".join([keyed.rows[i] for i in members]))
    return h.hexdigest()
