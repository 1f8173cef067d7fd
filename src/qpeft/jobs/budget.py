"""A cap on what a run may spend on a provider: jobs, shots, and an estimated amount in the
provider's currency (priced with :mod:`qpeft.jobs.rates`, at the high end of its range).

What a run has spent is read from its ledger: every job it created (``submitted``), and every
submission that may have created one (an ``intent`` or ``unknown`` not settled as ``rejected``).
A job's amount is the high end of its estimate, or, once it ended (finished, failed, cancelled past
its time limit), what the QPU seconds the provider reported it used cost where that is more (IBM
reports the seconds it bills; the rates table's ``billed_seconds``): a job that ran longer than
the estimate counts at what it cost.
Before each submission the engine reserves the job's spend; a job that would take the run past
the cap is not submitted (:class:`BudgetExceededError` says what was spent and what is left). The
cap is not stored: a rerun with a higher cap continues where the run stopped, and nothing it
already paid for is paid again.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, fields

from qpeft.jobs.ledger import TERMINAL
from qpeft.jobs.rates import billed, estimate, rate_of


class BudgetExceededError(RuntimeError):
    """The next job would take the run past its spending cap; nothing more was submitted."""


@dataclass(frozen=True)
class Spend:
    """Jobs, shots (circuits x shots per circuit) and the estimated amount in the provider's currency."""

    jobs: int = 0
    shots: int = 0
    amount: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.jobs + other.jobs, self.shots + other.shots, self.amount + other.amount)

    def __sub__(self, other: Spend) -> Spend:
        return Spend(self.jobs - other.jobs, self.shots - other.shots, self.amount - other.amount)


@dataclass(frozen=True)
class SpendCap:
    """The most a run may spend, per unit (None: no cap in that unit)."""

    jobs: int | None = None
    shots: int | None = None
    amount: float | None = None

    @classmethod
    def parse(cls, value: dict | None) -> SpendCap | None:
        """A cap from ``{"jobs": 20, "shots": 2_000_000, "amount": 50}`` (any subset); None for
        None or ``{}``."""
        if not value:
            return None
        if not isinstance(value, dict):
            raise ValueError(f'`max_spend` must be a mapping like {{"jobs": 20, "amount": 50}}, got {value!r}')
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"`max_spend` has unknown unit(s) {unknown}; use any of {known}")
        for name, limit in value.items():
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0):
                raise ValueError(f"`max_spend` {name} must be a number >= 0 (or null: no cap), got {limit!r}")
        return cls(**value)

    def passed_by(self, spend: Spend) -> list[str]:
        """The units in which ``spend`` exceeds the cap."""
        caps = {f.name: getattr(self, f.name) for f in fields(self)}
        return [name for name, cap in caps.items() if cap is not None and getattr(spend, name) > cap]


def job_spend(
    provider: str, circuits: int, shots: int | None, backend: str | None = None, usage: dict | None = None
) -> Spend:
    """One job of ``circuits`` circuits on ``provider`` (and ``backend``, where prices differ by
    device): 1 job, its shots, and the high end of its estimated price, or of what it cost at the
    QPU seconds the provider reported (``usage``, a job's that ended) where that is more."""
    total_shots = circuits * (shots or 0)
    _, cost = estimate(provider, 1, circuits, total_shots, backend)
    amount = cost[1] if cost else 0.0
    actual = billed(provider, 1, total_shots, usage, backend)
    return Spend(1, total_shots, max(amount, actual) if actual is not None else amount)


def spent_in(records: list[dict], provider: str) -> Spend:
    """What a ledger's jobs spent: every job created or possibly created (an unsettled intent);
    the amount counts the jobs of ``provider`` only (one currency)."""
    maybe: dict[str, dict] = {}  # tag -> its newest intent / unknown / submitted record
    usage = {r.get("job_id"): r["usage"] for r in records if r.get("event") in TERMINAL and r.get("usage")}
    for r in records:
        tag = r.get("tag") or f"{r.get('key')}.{r.get('attempt')}"
        if r.get("event") in ("intent", "unknown", "submitted"):
            maybe[tag] = r
        elif r.get("event") == "rejected":
            maybe.pop(tag, None)
    total = Spend()
    for r in maybe.values():
        one = job_spend(
            r.get("provider", ""), r.get("circuits", 0), r.get("shots"), r.get("backend"), usage.get(r.get("job_id"))
        )
        total += one if r.get("provider") == provider else Spend(one.jobs, one.shots)
    return total


def priced(records: list[dict]) -> dict[str, dict]:
    """Per provider of a ledger's submitted jobs: ``qpu_seconds`` and ``cost`` (low, high; cost
    None where there is no price) from the plan's rates, the jobs of each backend priced on its
    own figures where they differ by device, and ``currency``."""
    counts: dict[tuple[str, str | None], list[int]] = {}  # (provider, backend) -> [jobs, circuits, shots]
    for r in records:
        if r.get("event") == "submitted":
            c = counts.setdefault((r["provider"], r.get("backend")), [0, 0, 0])
            c[0], c[1], c[2] = c[0] + 1, c[1] + r["circuits"], c[2] + r["circuits"] * (r["shots"] or 0)
    out: dict[str, dict] = {}
    for (provider, backend), (jobs, circuits, shots) in sorted(counts.items(), key=lambda kv: str(kv[0])):
        seconds, cost = estimate(provider, jobs, circuits, shots, backend)
        rate = rate_of(provider, backend)
        total = out.setdefault(provider, {"qpu_seconds": None, "cost": None, "currency": ""})
        total["qpu_seconds"] = seconds if total["qpu_seconds"] is None else _add(total["qpu_seconds"], seconds)
        if cost is not None:
            total["cost"] = cost if total["cost"] is None else _add(total["cost"], cost)
        total["currency"] = total["currency"] or (rate.currency if rate is not None else "")
    return dict(sorted(out.items()))


def _add(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return (a[0] + b[0], a[1] + b[1])


class Budget:
    """A run's spending cap and what its ledger has spent; thread-safe. ``backend``: the
    provider's backend, where its prices differ by device (Braket)."""

    def __init__(self, cap: SpendCap | None, provider: str, records: list[dict], backend: str | None = None):
        self.cap, self.provider, self.backend = cap, provider, backend
        rate = rate_of(provider, backend)
        if cap is not None and cap.amount is not None and (rate is None or not rate.priced):
            where = f"the {provider} provider" + (f" on {backend}" if backend else "")
            raise ValueError(f"`max_spend` amount: there is no price figure for {where}; cap jobs or shots instead")
        self.currency = rate.currency if rate is not None else ""
        self.spent = spent_in(records, provider) if cap is not None else Spend()
        self._lock = threading.Lock()

    def reserve(self, key: str, circuits: int, shots: int | None) -> Spend:
        """Count a job about to be submitted; raises :class:`BudgetExceededError` (counting
        nothing) when it would take the run past the cap."""
        if self.cap is None:  # (nothing to count: no work per job)
            return Spend()
        need = job_spend(self.provider, circuits, shots, self.backend)
        with self._lock:
            passed = self.cap.passed_by(self.spent + need)
            if passed:
                raise BudgetExceededError(self._refusal(key, need, passed))
            self.spent += need
        return need

    def finished(self, circuits: int, shots: int | None, usage: dict | None) -> None:
        """A job ended (finished, failed, cancelled) and its provider reported ``usage``: where what
        it cost is more than its reserved estimate, count the difference."""
        if self.cap is None or not usage:
            return
        reserved = job_spend(self.provider, circuits, shots, self.backend)
        more = job_spend(self.provider, circuits, shots, self.backend, usage).amount - reserved.amount
        if more > 0:
            with self._lock:
                self.spent += Spend(amount=more)

    def release(self, spend: Spend) -> None:
        """Give back a reservation whose submission created nothing."""
        if self.cap is not None:
            with self._lock:
                self.spent -= spend

    def _format(self, spend: Spend) -> str:
        parts = [f"{spend.jobs:,} job(s)", f"{spend.shots:,} shots"]
        if self.currency:
            parts.append(f"~{spend.amount:,.2f} {self.currency}")
        return ", ".join(parts)

    def _refusal(self, key: str, need: Spend, passed: list[str]) -> str:
        cap = self.cap
        limits = {"jobs": cap.jobs, "shots": cap.shots, "amount": cap.amount}
        left = Spend(*(max(v - getattr(self.spent, k), 0) if v is not None else math.inf for k, v in limits.items()))
        shown = {k: v for k, v in limits.items() if v is not None}
        left_text = ", ".join(f"{getattr(left, k):,.{2 if k == 'amount' else 0}f} {k}" for k in shown)
        return (
            f"spending cap reached ({', '.join(passed)}): the next job (key {key}) needs {self._format(need)}, and "
            f"the run has spent {self._format(self.spent)} (amounts: the plan's high estimate, or what a finished "
            f"job's reported QPU time cost where more); cap {shown}, "
            f"left {left_text}. Nothing more was submitted; rerun with a higher --max-spend to continue (the jobs "
            "already run are kept and not paid again)"
        )
