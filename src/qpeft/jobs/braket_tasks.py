"""What an Amazon Braket quantum task holds and gives back, for :mod:`qpeft.jobs.braket`: the task
specification of a job's bound circuits (a ``ProgramSet`` with one ``CircuitBinding`` per circuit
template, or one bound circuit), the probabilities of its result in the job's order, and what
GetQuantumTask says a task used.

A program set's executables are the job's circuits grouped by template (:func:`templates`), in
input order within each group; results come back in that order and are put back in input order.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Sequence

import numpy as np

from qpeft.backends.base import require
from qpeft.backends.braket import counts_to_probs, to_braket
from qpeft.jobs.base import BoundCircuit, circuit_text
from qpeft.quantum.circuit import Const


def templates(circuits: Sequence[BoundCircuit]) -> dict[str, list[int]]:
    """Circuit template text -> the indices of the circuits that share it (one binding each)."""
    groups: dict[str, list[int]] = defaultdict(list)
    texts: dict[int, str] = {}
    for i, c in enumerate(circuits):
        groups[texts.setdefault(id(c.circuit), circuit_text(c.circuit))].append(i)
    return groups


def task_specification(
    circuits: Sequence[BoundCircuit],
    shots: int,
    one_per_task: bool = False,
    supported: Collection[str] | None = None,
    noise=None,
):
    """A ``ProgramSet`` of ``circuits`` (``shots`` per executable), or, with ``one_per_task``,
    the single bound Braket circuit of the one circuit given. Every circuit measures all its wires;
    ``supported``: the device's operations (see :func:`qpeft.backends.braket.to_braket`);
    ``noise``: a Braket ``NoiseModel`` applied to each circuit (the LocalSimulator's density matrix).

    Raises:
        ValueError: a gate the device does not support.
    """
    sets = require("braket.program_sets", "braket")
    free = require("braket.circuits", "braket").FreeParameter
    entries = []
    for members in templates(circuits).values():
        template = circuits[members[0]].circuit
        slots = [p for op in template.ops for p in op.params]
        free_slots = [k for k, p in enumerate(slots) if not isinstance(p, Const)]
        names = {k: f"t{k}" for k in free_slots}  # (Braket reserves the names q and b)
        parameters = [free(names[k]) if k in names else p.value for k, p in enumerate(slots)]
        circuit = to_braket(template, parameters=parameters, measure=True, supported=supported)
        circuit = noise.apply(circuit) if noise is not None else circuit
        values = np.array([circuits[i].angles() for i in members], dtype=np.float64)
        if not free_slots or one_per_task:
            entries += [circuit.make_bound_circuit({names[k]: row[k] for k in free_slots}) for row in values]
        else:
            inputs = {names[k]: values[:, k].tolist() for k in free_slots}
            entries.append(sets.CircuitBinding(circuit, input_sets=inputs))
    if one_per_task:
        if len(entries) != 1:
            raise ValueError(f"a task of this device holds one circuit, got {len(entries)}")
        return entries[0]
    return sets.ProgramSet(entries, shots_per_executable=shots)


def probabilities(result, circuits: Sequence[BoundCircuit]) -> list[np.ndarray]:
    """One probability vector per circuit, in input order, from a task's result (a program set's,
    or one circuit's). Raises RuntimeError when the result holds another number of executables."""
    if hasattr(result, "entries"):  # a program set: result[program][executable]
        executables = [(e.counts, e.measured_qubits) for program in result.entries for e in program.entries]
    else:
        executables = [(result.measurement_counts, result.measured_qubits)]
    if len(executables) != len(circuits):
        raise RuntimeError(f"the task returned {len(executables)} results for {len(circuits)} circuits")
    order = [i for members in templates(circuits).values() for i in members]
    out: list[np.ndarray | None] = [None] * len(circuits)
    for i, (counts, measured) in zip(order, executables):
        out[i] = counts_to_probs(counts, list(measured), circuits[i].circuit.n_qubits)
    return out


def task_usage(metadata: dict) -> dict:
    """What GetQuantumTask's ``metadata`` says a finished task used: its ``shots`` and the
    ``seconds`` from creation to end."""
    out = {"shots": metadata.get("shots")}
    created, ended = metadata.get("createdAt"), metadata.get("endedAt")
    if isinstance(created, dt.datetime) and isinstance(ended, dt.datetime):
        out["seconds"] = (ended - created).total_seconds()
    return {k: v for k, v in out.items() if isinstance(v, int | float)}


def result_usage(result) -> dict:
    """What a program set's result says it used: ``successful_shots`` and ``failed_executables``
    (nothing for a one-circuit task)."""
    task = getattr(result, "task_metadata", None)
    if task is None or not hasattr(task, "successfulShots"):
        return {}
    return {"successful_shots": task.successfulShots, "failed_executables": task.totalFailedExecutables}
