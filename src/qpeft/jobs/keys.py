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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter

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
    """A circuit template as the engine keys it: the circuit, its key (a digest of the provider's
    fingerprint and the template's content) and its two-qubit gates as the provider runs it."""

    circuit: Circuit
    key: bytes  # KEY_BYTES digest of the provider fingerprint and the template's content
    two_qubit: int


class Templates:
    """The templates an engine has seen, keyed once per circuit object (a circuit must not be
    changed after it ran); forgotten when the provider's fingerprint changes. ``count`` gives a
    template's two-qubit gates as the provider runs it (e.g. after transpiling to its ISA; the
    logical count by default), for the job split."""

    def __init__(self, count: Callable[[Circuit], int] = two_qubit_gates) -> None:
        self._count = count
        self._fingerprint = ""
        self._known: dict[int, Template] = {}  # id(circuit) -> template; holds the circuit, so ids stay unique

    def reset(self, fingerprint: str) -> None:
        """Forget every template when the provider's ``fingerprint`` differs from the one they were
        keyed with (their keys include it); a no-op for the same fingerprint."""
        if fingerprint != self._fingerprint:
            self._fingerprint, self._known = fingerprint, {}

    def get(self, circuit: Circuit) -> Template:
        """The :class:`Template` of ``circuit``: made (content hashed, two-qubit gates counted) the
        first time this circuit object is seen, then looked up by identity."""
        known = self._known.get(id(circuit))
        if known is None or known.circuit is not circuit:
            content = f"{self._fingerprint}|{template_content(circuit)}"
            key = hashlib.blake2b(content.encode(), digest_size=KEY_BYTES).digest()
            known = self._known[id(circuit)] = Template(circuit, key, self._count(circuit))
        return known


@dataclass
class Keyed:
    """The distinct circuits of a call, grouped by template (input order within a group), and
    where each input circuit went."""

    circuits: list[BoundCircuit]
    keys: list[bytes]  # per distinct circuit: its template's key
    rows: list[bytes]  # per distinct circuit: its angles' float64 bytes
    widths: list[int]  # per distinct circuit: the length of its result, 2**n_qubits
    index: list[int] | range  # per input circuit: its distinct circuit (a range: each its own, in order)
    templates: list[Template]  # one per template content in the call

    def content(self, i: int) -> tuple[bytes, bytes]:
        """The content of distinct circuit ``i``: (its template's key, its angles' float64 bytes)."""
        return self.keys[i], self.rows[i]


def pick(seq: list, members: Sequence[int]) -> list:
    """``[seq[i] for i in members]``; a slice when ``members`` is a range."""
    if isinstance(members, range) and members.step == 1:
        return seq[members.start : members.stop]
    return [seq[i] for i in members]


def _stack(rows: list[tuple[float, ...]], width: int, what: str, circuit: Circuit) -> np.ndarray:
    lengths = set(map(len, rows))
    if lengths - {width}:
        raise ValueError(
            f"a circuit binds {sorted(lengths - {width})[0]} {what} to a template that reads {circuit.n_weights} "
            f"weights and {circuit.n_inputs} inputs; bind exactly those"
        )
    return np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * width).reshape(len(rows), width)


def _rows(group: list[BoundCircuit], template: Template) -> list[bytes]:
    """One bytes object per circuit (made in C): its weights, then its inputs, as float64."""
    c = template.circuit
    made = list(map(_ROW, group))  # rows made by BoundCircuit.batch (input-free, width checked there)
    if None not in made and set(map(len, made)) == {8 * c.n_weights} and not c.n_inputs:
        return made
    angles = _stack(list(map(_WEIGHTS, group)), c.n_weights, "weights", c)
    if c.n_inputs or any(map(_INPUTS, group)):
        angles = np.concatenate([angles, _stack(list(map(_INPUTS, group)), c.n_inputs, "inputs", c)], axis=1)
    if not angles.shape[1]:
        return [b""] * len(group)
    return np.ascontiguousarray(angles).view(np.dtype((np.void, 8 * angles.shape[1]))).ravel().tolist()


_CIRCUIT, _WEIGHTS, _INPUTS, _ROW = map(attrgetter, ("circuit", "weights", "inputs", "_row"))


def key_circuits(circuits: Sequence[BoundCircuit], templates: Templates) -> Keyed:
    """Group ``circuits`` by template content, stack their angles, and de-duplicate."""
    objs = list(map(_CIRCUIT, circuits))
    ids = list(map(id, objs))
    # template objects with equal content (e.g. one per module) form one group; groups are
    # numbered in input order (never by id: job keys must not depend on memory addresses)
    groups: dict[bytes, int] = {}
    reps: list[Template] = []
    group_of_id: dict[int, int] = {}
    for obj in dict(zip(ids, objs)).values():  # distinct objects, first-seen order
        t = templates.get(obj)
        g = group_of_id[id(obj)] = groups.setdefault(t.key, len(groups))
        if g == len(reps):
            reps.append(t)
    group_of = np.fromiter(map(group_of_id.__getitem__, ids), dtype=np.int64, count=len(ids))
    # circuits already grouped (e.g. the step runner's order): groups are slices, no reordering
    grouped = bool((group_of[1:] >= group_of[:-1]).all())
    order = None if grouped else np.argsort(group_of, kind="stable")
    bounds = np.cumsum(np.bincount(group_of, minlength=len(reps))).tolist()
    index = np.empty(len(ids), dtype=np.int64)
    out = Keyed([], [], [], [], [], reps)
    start, identity = 0, grouped
    for template, end in zip(reps, bounds):
        members = range(start, end) if grouped else order[start:end]
        start = end
        group = list(circuits[members.start : members.stop]) if grouped else [circuits[i] for i in members.tolist()]
        rows = _rows(group, template)
        if len(dict.fromkeys(rows)) == len(rows):  # no duplicates (the usual case)
            keep, local = range(len(rows)), np.arange(len(rows))
        else:
            identity = False
            seen: dict[bytes, int] = {}
            keep = []
            for k, row in enumerate(rows):
                if row not in seen:
                    seen[row] = len(keep)
                    keep.append(k)
            local = np.fromiter(map(seen.__getitem__, rows), dtype=np.int64, count=len(rows))
        if grouped:
            index[members.start : members.stop] = len(out.circuits) + local
        else:
            index[members] = len(out.circuits) + local
        out.circuits += pick(group, keep)
        out.rows += pick(rows, keep)
        out.keys += [template.key] * len(keep)
        out.widths += [2**template.circuit.n_qubits] * len(keep)
    out.index = range(len(ids)) if identity else index.tolist()  # a range: circuits are distinct, in order
    return out


def job_key(header: str, keyed: Keyed, members: Sequence[int]) -> str:
    """One hash over a job's circuits (``members`` of ``keyed``) and ``header`` (provider,
    shots, scope): the template keys, then the angle rows (each template fixes its row width)."""
    h = hashlib.blake2b(f"{header}|{len(members)}|".encode(), digest_size=KEY_BYTES)
    h.update(b"".join(pick(keyed.keys, members)))
    h.update(b"".join(pick(keyed.rows, members)))
    return h.hexdigest()
