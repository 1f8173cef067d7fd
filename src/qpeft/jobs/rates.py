"""What a QPU job costs in time and money, from the providers' published (or observed) figures:
the one table `qpeft plan`, the spending cap and `qpeft jobs` all price jobs with.

QPU time = jobs x per-job overhead + circuits x per-circuit time + shots x per-shot time
(circuit duration + repetition delay); cost = QPU time x price per QPU second + jobs x price per
job + shots x price per shot (Amazon Braket bills a QPU task and its shots, not seconds). Each
figure is a (low, high) range; where there is no official figure the range is wide. A provider
whose price depends on the device has one entry per device, ``PROVIDER:DEVICE``
(:func:`rate_of`).
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
    price_per_job: tuple[float, float] = (0.0, 0.0)
    price_per_shot: tuple[float, float] = (0.0, 0.0)
    #: the figure of a finished job's usage report (:meth:`qpeft.jobs.base.Provider.usage`) that
    #: holds the QPU seconds the provider bills, where it has one (the spending cap counts it)
    billed_seconds: str | None = None

    @property
    def priced(self) -> bool:
        """Whether there is a price (per QPU second, per job or per shot)."""
        return self.price_per_qpu_s is not None or any(self.price_per_job) or any(self.price_per_shot)


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
        billed_seconds="quantum_seconds",  # (job.metrics()["usage"]: what IBM bills)
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
    **{
        f"braket:{device}": Rate(
            per_job_s=(0.0, 0.0),
            per_circuit_s=(0.0, 0.0),
            per_shot_s=(0.0, 0.0),
            price_per_qpu_s=None,
            currency="USD",
            source=f"Amazon Braket on-demand QPU pricing, {label}: USD 0.30 per task plus USD {per_shot:g} per shot "
            "(aws.amazon.com/braket/pricing, the same figures as shared/reference/hardware.md section 7); a program "
            "set is one task (docs.aws.amazon.com/braket/latest/developerguide/braket-batching-tasks.html). Braket "
            "bills tasks and shots, not seconds: no QPU-time figures",
            date="undated pricing page, read 2026-12",
            official=True,
            price_per_job=(0.30, 0.30),
            price_per_shot=(per_shot, per_shot),
        )
        for device, label, per_shot in (
            ("ionq_forte", "IonQ Forte", 0.08),
            ("iqm_garnet", "IQM Garnet", 0.00145),
            ("rigetti_ankaa", "Rigetti Ankaa", 0.0009),
        )
    },
    **{
        f"braket:{device}": Rate(
            (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), None, "", "Braket's LocalSimulator, in-process: no charge", "-", True
        )
        for device in ("local", "local_dm")
    },
    "braket": Rate(
        (0.0, 0.0),
        (0.0, 0.0),
        (0.0, 0.0),
        None,
        "USD",
        "no figures in qpeft's table for this Braket device: see aws.amazon.com/braket/pricing (QPUs: per task "
        "and per shot; on-demand simulators: per minute)",
        "-",
        False,
    ),
}


def rate_of(provider: str, backend: str | None = None) -> Rate | None:
    """The figures of ``provider`` on ``backend``: the device's own entry (``braket:ionq_forte``)
    where the table has one, else the provider's; None for a provider without figures (a plugin's)."""
    return RATES.get(f"{provider}:{backend}") or RATES.get(provider)


def estimate(
    provider: str, jobs: int, circuits: int, shots: int, backend: str | None = None
) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """((low, high) QPU seconds, (low, high) cost or None where there is no price) of ``jobs``
    jobs holding ``circuits`` circuits and ``shots`` shots in all, on ``provider`` (a provider
    name; ``backend``: its device, where the price depends on it; one without figures costs
    nothing)."""
    rate = rate_of(provider, backend)
    if rate is None:
        return (0.0, 0.0), None
    seconds = tuple(
        jobs * rate.per_job_s[i] + circuits * rate.per_circuit_s[i] + shots * rate.per_shot_s[i] for i in (0, 1)
    )
    if not rate.priced:
        return seconds, None
    per_second = rate.price_per_qpu_s or (0.0, 0.0)
    cost = tuple(
        seconds[i] * per_second[i] + jobs * rate.price_per_job[i] + shots * rate.price_per_shot[i] for i in (0, 1)
    )
    return seconds, cost


def billed(provider: str, jobs: int, shots: int, usage: dict | None, backend: str | None = None) -> float | None:
    """The high end of what ``jobs`` jobs that ended, with ``shots`` shots in all, cost at the QPU
    seconds the provider reported they used (``usage``, summed: its :attr:`Rate.billed_seconds`
    figure), plus their per-job and per-shot prices; None where the report has no billed seconds
    or the provider no price per second."""
    rate = rate_of(provider, backend)
    if rate is None or rate.billed_seconds is None or rate.price_per_qpu_s is None or not usage:
        return None
    seconds = usage.get(rate.billed_seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    return seconds * rate.price_per_qpu_s[1] + jobs * rate.price_per_job[1] + shots * rate.price_per_shot[1]
