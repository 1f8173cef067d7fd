"""``qpeft plan``: circuits, jobs, shots, QPU time and cost of a run, before running it.

Counts come from the code that builds the submissions (:func:`qpeft.jobs.step.step_circuits`
for the circuits of a module, the engine's split for the jobs, with two-qubit gates counted as
the provider counts them: on IBM, on the transpiled ISA circuit), so a plan and the ledger of
the run agree, periodic evaluations (``--eval-steps``) included. Time and money are estimates
from the providers' published figures (:data:`RATES`, each with its source and date); where there
is no official figure the plan gives a range. QPU time = jobs x per-job overhead + circuits x per-circuit time + shots x
per-shot time (circuit duration + repetition delay).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from qpeft.jobs.base import jobs_for
from qpeft.jobs.budget import Spend, SpendCap
from qpeft.jobs.providers import plan_gate_count, plan_rate, provider_limits
from qpeft.jobs.rates import RATES, Rate, estimate  # noqa: F401 (RATES, Rate: public here too)
from qpeft.jobs.step import circuits_per_module, step_templates
from qpeft.quantum.circuit import Circuit

ACTIVATION_WARNING = (
    "impractical on hardware: qnn_mode='activation' runs one circuit per token per module (and its gradient "
    "circuits per token), so a step needs {circuits:,} circuits, {jobs:,} jobs. Use qnn_mode='weights' "
    "(preset qtha-weights): its circuits take no input, so a step needs one forward circuit per module plus "
    "its gradient circuits, all sent as one submission."
)


@dataclass
class Plan:
    """What ``qpeft plan`` reports for one run (each field below): the provider and its settings;
    circuits, jobs and shots per module, step, evaluation pass and run; the estimated QPU seconds
    and cost of the run as (low, high) with the currency and the source of the rates; the
    two-qubit gates per circuit and what they were counted on; whether the run fits its spending
    cap; and a warning for circuits that take inputs (activation mode)."""

    provider: str
    shots: int | None
    diff_method: str
    modules: int
    circuits_per_module: int
    circuits_per_step: int
    jobs_per_step: int
    shots_per_step: int
    steps: int
    eval_circuits: int
    eval_jobs: int
    circuits_per_run: int
    jobs_per_run: int
    shots_per_run: int
    qpu_seconds_per_run: tuple[float, float]
    cost_per_run: tuple[float, float] | None
    currency: str
    rate_source: str
    rate_official: bool
    eval_passes: int = 1
    two_qubit_gates_per_circuit: int = 0
    gates_counted_on: str = "the logical circuit"
    cap: str = ""
    warning: str = ""
    #: whether the provider has time figures (Braket bills tasks and shots, and publishes none)
    timed: bool = True

    def as_dict(self) -> dict:
        """The plan as a dict of its fields (what ``qpeft plan --json`` prints)."""
        return asdict(self)


def _jobs(circuits: int, spec: str, shots, two_qubit: int, options: dict) -> int:
    return jobs_for(circuits, provider_limits(spec, **options), shots, two_qubit)


def plan_run(
    circuits: list[Circuit],
    spec: str,
    shots: int | None,
    steps: int,
    diff_method: str,
    eval_passes: int = 1,
    provider_options: dict | None = None,
    tokens_per_step: int = 0,
    activation_modules: int = 0,
    gate_count: tuple[Callable[[Circuit], int], str] | None = None,
    max_spend: dict | None = None,
) -> Plan:
    """The plan of a run whose weights-mode modules execute ``circuits`` (one per module).

    eval_passes: forward-only evaluations of all modules in the run (the periodic ones and the
    final one). activation_modules / tokens_per_step: modules that run a circuit per token (a
    warning). gate_count: (two-qubit gates per circuit as the provider counts them, what they
    were counted on); by default :func:`qpeft.jobs.providers.plan_gate_count`. max_spend: the
    run's spending cap, checked against the plan.
    """
    name, backend, rate = plan_rate(spec)
    options = provider_options or {}
    count, counted_on = gate_count or plan_gate_count(spec, **options)
    per_module = [circuits_per_module(c, diff_method) for c in circuits]
    # (the engine sizes a call's jobs for the largest template in it)
    step_two_qubit = max((count(t) for c in circuits for t in step_templates(c, diff_method)), default=0)
    eval_two_qubit = max((count(c) for c in circuits), default=0)
    step_circuits = sum(per_module)
    step_jobs = _jobs(step_circuits, spec, shots, step_two_qubit, options)
    eval_jobs = eval_passes * _jobs(len(circuits), spec, shots, eval_two_qubit, options)
    eval_circuits = eval_passes * len(circuits)
    run_circuits = steps * step_circuits + eval_circuits
    run_jobs = steps * step_jobs + eval_jobs
    run_shots = run_circuits * (shots or 0)
    seconds, cost = estimate(name, run_jobs, run_circuits, run_shots, backend)
    warning = ""
    if activation_modules:
        act_circuits = tokens_per_step * activation_modules
        warning = ACTIVATION_WARNING.format(circuits=act_circuits, jobs=_jobs(act_circuits, spec, shots, 0, options))
    return Plan(
        provider=spec,
        shots=shots,
        diff_method=diff_method,
        modules=len(circuits),
        circuits_per_module=max(per_module, default=0),
        circuits_per_step=step_circuits,
        jobs_per_step=step_jobs,
        shots_per_step=step_circuits * (shots or 0),
        steps=steps,
        eval_circuits=eval_circuits,
        eval_jobs=eval_jobs,
        circuits_per_run=run_circuits,
        jobs_per_run=run_jobs,
        shots_per_run=run_shots,
        qpu_seconds_per_run=seconds,
        cost_per_run=cost,
        currency=rate.currency,
        rate_source=rate.source,
        rate_official=rate.official,
        eval_passes=eval_passes,
        two_qubit_gates_per_circuit=step_two_qubit,
        gates_counted_on=counted_on,
        cap=_cap_note(max_spend, Spend(run_jobs, run_shots, cost[1] if cost else 0.0), rate.currency),
        warning=warning,
        # (a simulator's 0 s is a figure; a provider priced without time figures, or without any, has none)
        timed=any(rate.per_job_s + rate.per_circuit_s + rate.per_shot_s) or (rate.official and not rate.priced),
    )


def _cap_note(max_spend: dict | None, need: Spend, currency: str) -> str:
    """What the cap means for this run: it fits, or in which units the run passes it."""
    cap = SpendCap.parse(max_spend)
    if cap is None:
        return ""
    passed = cap.passed_by(need)
    if not passed:
        return "the run fits its --max-spend cap"
    return (
        f"the run needs more than its --max-spend cap allows ({', '.join(passed)}): the engine stops before the job "
        "that would pass it; rerun with a higher cap to continue"
    )


def _span(low: float, high: float, fmt: str = "{:,.0f}") -> str:
    return fmt.format(low) if math.isclose(low, high) else f"{fmt.format(low)} - {fmt.format(high)}"


def _n(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless the count is 1: "1 job", "12 jobs"."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def format_plan(plan: Plan) -> str:
    """The plan as a short text report (one labelled line per figure, the values aligned)."""
    hours = _span(*(s / 3600 for s in plan.qpu_seconds_per_run), "{:,.1f}")
    rows = [
        ("provider", f"{plan.provider} (shots {plan.shots or 'exact'}, gradients {plan.diff_method})"),
        ("quantum modules", f"{plan.modules} x {_n(plan.circuits_per_module, 'circuit')} per step"),
        (
            "per step",
            f"{_n(plan.circuits_per_step, 'circuit')}, {_n(plan.jobs_per_step, 'job')}, "
            f"{_n(plan.shots_per_step, 'shot')}",
        ),
        (
            "evaluation",
            f"{_n(plan.eval_circuits, 'circuit')}, {_n(plan.eval_jobs, 'job')} "
            f"({_n(plan.eval_passes, 'pass')}: every --eval-steps, and the final one)",
        ),
        (
            f"per run ({_n(plan.steps, 'step')})",
            f"{_n(plan.circuits_per_run, 'circuit')}, {_n(plan.jobs_per_run, 'job')}, {_n(plan.shots_per_run, 'shot')}",
        ),
        ("QPU time", f"{_span(*plan.qpu_seconds_per_run)} s ({hours} h)" if plan.timed else "not estimated"),
    ]
    if plan.cost_per_run is not None:
        money = "{:,.0f}" if plan.cost_per_run[1] >= 100 else "{:,.2f}"
        rows.append(("cost", f"{_span(*plan.cost_per_run, money)} {plan.currency}"))
    kind = "published figures" if plan.rate_official else "NO official figures; observed values, wide range"
    rows.append(("rates", f"{kind}: {plan.rate_source}"))
    if plan.two_qubit_gates_per_circuit:
        rows.append(
            ("two-qubit gates", f"{plan.two_qubit_gates_per_circuit} per circuit, counted on {plan.gates_counted_on}")
        )
    if plan.cap:
        rows.append(("cap", str(plan.cap)))
    if plan.warning:
        rows.append(("WARNING", plan.warning))
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:{width}s}{value}" for label, value in rows)
