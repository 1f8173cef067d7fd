"""What a QPU job costs in time and money, from the providers' published (or observed) figures:
the one table `qpeft plan`, the spending cap and `qpeft jobs` all price jobs with.

QPU time = jobs x per-job overhead + circuits x per-circuit time + shots x per-shot time
(circuit duration + repetition delay); cost = QPU time x price per QPU second. Each figure is a
(low, high) range; where there is no official figure the range is wide.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def estimate(
    provider: str, jobs: int, circuits: int, shots: int
) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """((low, high) QPU seconds, (low, high) cost or None where there is no price) of ``jobs``
    jobs holding ``circuits`` circuits and ``shots`` shots in all, on ``provider`` (a provider
    name; one without figures costs nothing)."""
    rate = RATES.get(provider)
    if rate is None:
        return (0.0, 0.0), None
    seconds = tuple(
        jobs * rate.per_job_s[i] + circuits * rate.per_circuit_s[i] + shots * rate.per_shot_s[i] for i in (0, 1)
    )
    if rate.price_per_qpu_s is None:
        return seconds, None
    return seconds, tuple(s * p for s, p in zip(seconds, rate.price_per_qpu_s))
