"""The text tables of `qpeft plan` and `qpeft jobs RUN_DIR`: every value starts in one column
(labels longer than the old fixed width included) and counts of one are singular."""

import re

import numpy as np

from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine, LocalProvider
from qpeft.jobs.plan import Plan, format_plan
from qpeft.quantum.circuit import Circuit, Weight


def _value_columns(text: str) -> set[int]:
    """Where the value starts on each line: after the label and its run of (2+) spaces; -1 where
    a label runs into its value."""
    matches = [re.match(r"(\S+(?: \S+)*?)\s{2,}", line) for line in text.splitlines()]
    return {m.end() if m else -1 for m in matches}


def _plan(steps: int, jobs: int) -> Plan:
    return Plan(
        provider="origin:WK_C180",
        shots=1000,
        diff_method="spsa",
        modules=1,
        circuits_per_module=1,
        circuits_per_step=1,
        jobs_per_step=jobs,
        shots_per_step=1000,
        steps=steps,
        eval_circuits=1,
        eval_jobs=1,
        circuits_per_run=steps,
        jobs_per_run=steps * jobs,
        shots_per_run=1000 * steps,
        qpu_seconds_per_run=(1.0, 2.0),
        cost_per_run=None,
        currency="",
        rate_source="observed",
        rate_official=False,
    )


def test_plan_text_is_aligned_and_singular_for_one():
    one = format_plan(_plan(steps=1, jobs=1))
    assert "per run (1 step)" in one and "1 job," in one and "1 circuit," in one and "1 jobs" not in one
    many = format_plan(_plan(steps=1000, jobs=12))
    assert "per run (1,000 steps)" in many and "12 jobs" in many
    for text in (one, many):
        assert len(_value_columns(text)) == 1, text


def test_jobs_totals_are_aligned(tmp_path, capsys):
    circuit = Circuit(1).add("RY", [0], Weight(0))
    engine = JobEngine(LocalProvider("shots", max_circuits=4), tmp_path, poll_interval=0.001, progress=False)
    engine.run([BoundCircuit(circuit, (float(t),)) for t in np.linspace(0, 1, 6)], 50)
    assert main(["jobs", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "resubmitted_after_loss" in text
    assert len(_value_columns(text)) == 1, text
