"""``qpeft plan``: circuits, jobs, shots, QPU time and cost of a run, before running it.

Counts come from the code that builds the submissions (:func:`qpeft.jobs.step.step_circuits`
for the circuits of a module, the engine's split for the jobs), so a plan and the ledger of
the run agree. Time and money are estimates from the providers' published figures
(:data:`RATES`, each with its source and date); where there is no official figure the plan
gives a range. QPU time = jobs x per-job overhead + circuits x per-circuit time + shots x
per-shot time (circuit duration + repetition delay).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from qpeft.jobs.base import jobs_for, two_qubit_gates
from qpeft.jobs.providers import parse_spec, provider_limits
from qpeft.jobs.step import circuits_per_module
from qpeft.quantum.circuit import Circuit


@dataclass(frozen=True)
class Rate:
    """Published (or observed) time and price figures of one provider; (low, high) ranges."""

    per_job_s: tuple[float, float]
    per_circuit_s: tuple[float, float]
    per_shot_s: tuple[float, float]
    price_per_qpu_s: tuple[float, float] | None
    currency: str
    source: str
    date: str
    official: bool


RATES = {
    "ibm": Rate(
        per_job_s=(2.0, 4.1),
        per_circuit_s=(0.0, 0.0),
        per_shot_s=(250e-6, 260e-6),
        price_per_qpu_s=(1.60, 1.60),
        currency="USD",
        source="IBM docs guides/estimate-job-run-time (4.1 quantum s for one Bell job, the upper per-job bound; "
        "the lower one is our inference), guides/repetition-rate-execution + fake backend snapshots "
        "(default rep_delay 250 us plus ~2-10 us of circuit and readout); pay-as-you-go $1.60/s "
        "(api-evangelist/ibm-quantum plans yml citing ibm.com/quantum/pricing); Open plan: 10 free min / 28 days",
        date="2026-05",
        official=True,
    ),
    "origin": Rate(
        per_job_s=(0.0, 211.0),
        per_circuit_s=(0.5, 4.5),
        per_shot_s=(0.0, 0.0),
        price_per_qpu_s=(1000 / 60, 1000 / 60),
        currency="CNY",
        source="no official figures: 'time usage' 0.5-4.5 s per small task observed on Wukong "
        "(Kahsolt/OriginQ-wukong-playground README, 2024-02); one 100-shot Bell task on chip 180 ran a 211 s "
        "window (LoomQ-2026 evidence, 2026-08); price implied by a sign-up credit of 10 min 'worth 10,000 RMB'",
        date="2024-02 / 2026-08",
        official=False,
    ),
    "local": Rate((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), None, "", "in-process simulator: no QPU time", "-", True),
}

ACTIVATION_WARNING = (
    "impractical on hardware: qnn_mode='activation' runs one circuit per token per module (and its gradient "
    "circuits per token), so a step needs {circuits:,} circuits, {jobs:,} jobs. Use qnn_mode='weights' "
    "(preset qtha-weights): its circuits take no input, so a step needs one forward circuit per module plus "
    "its gradient circuits, all sent as one submission."
)


@dataclass
class Plan:
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
    warning: str = ""

    def as_dict(self) -> dict:
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
) -> Plan:
    """The plan of a run whose weights-mode modules execute ``circuits`` (one per module).

    eval_passes: forward-only evaluations of all modules in the run (the final evaluation).
    activation_modules / tokens_per_step: modules that run a circuit per token (a warning).
    """
    name, _ = parse_spec(spec)
    options = provider_options or {}
    per_module = [circuits_per_module(c, diff_method) for c in circuits]
    two_qubit = max((two_qubit_gates(c) for c in circuits), default=0)
    step_circuits = sum(per_module)
    step_jobs = _jobs(step_circuits, spec, shots, two_qubit, options)
    eval_jobs = eval_passes * _jobs(len(circuits), spec, shots, two_qubit, options)
    eval_circuits = eval_passes * len(circuits)
    run_circuits = steps * step_circuits + eval_circuits
    run_jobs = steps * step_jobs + eval_jobs
    run_shots = run_circuits * (shots or 0)
    rate = RATES[name]
    seconds = tuple(
        run_jobs * rate.per_job_s[i] + run_circuits * rate.per_circuit_s[i] + run_shots * rate.per_shot_s[i]
        for i in (0, 1)
    )
    cost = None if rate.price_per_qpu_s is None else tuple(s * p for s, p in zip(seconds, rate.price_per_qpu_s))
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
        warning=warning,
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
        ("evaluation", f"{_n(plan.eval_circuits, 'circuit')}, {_n(plan.eval_jobs, 'job')}"),
        (
            f"per run ({_n(plan.steps, 'step')})",
            f"{_n(plan.circuits_per_run, 'circuit')}, {_n(plan.jobs_per_run, 'job')}, {_n(plan.shots_per_run, 'shot')}",
        ),
        ("QPU time", f"{_span(*plan.qpu_seconds_per_run)} s ({hours} h)"),
    ]
    if plan.cost_per_run is not None:
        rows.append(("cost", f"{_span(*plan.cost_per_run)} {plan.currency}"))
    kind = "published figures" if plan.rate_official else "NO official figures; observed values, wide range"
    rows.append(("rates", f"{kind}: {plan.rate_source}"))
    if plan.warning:
        rows.append(("WARNING", plan.warning))
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:{width}s}{value}" for label, value in rows)
