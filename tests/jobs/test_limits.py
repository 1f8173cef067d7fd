"""Jobs stay inside each provider's real per-job limits, read from the provider classes
themselves (reference/hardware.md: IBM Sampler jobs <= 10 M executions = circuits x shots and
fewer than 10,000 two-qubit gates; Origin batches <= 200 programs), at shot counts where the
split's rounding matters; the engine's split and `qpeft plan`'s count use those limits.

The Origin test runs the Origin provider class against its stand-in QCloud service (the
unreachable network service, replaced at the SDK's service boundary; see standins.py)."""

import math

import numpy as np
import pytest
from standins import ScriptedProvider, StandInQCloudService

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.base import jobs_for, split
from qpeft.jobs.ibm import IBMProvider
from qpeft.jobs.origin import OriginProvider
from qpeft.jobs.providers import provider_limits
from qpeft.quantum.circuit import Circuit, Weight

IBM_EXECUTIONS, IBM_TWO_QUBIT_BELOW = 10_000_000, 10_000  # hardware.md §3.3
ORIGIN_PROGRAMS = 200  # hardware.md §1.4
# shot counts that do not divide 10 M (3,000: 3,333.3 circuits), that do, and the extremes
SHOTS = [1, 7, 999, 1000, 2999, 3000, 3001, 4096, 9999, 100_000, 3_333_334, 5_000_001, 10_000_000]
TWO_QUBIT = [0, 1, 3, 7, 10_000 - 1]
FAST = dict(poll_interval=0.001, max_poll_interval=0.002, progress=False)
NO_FAULTS = dict(transient=0, throttle=0, hang=0, slow=0, failed=0, lost=0)


def _fits_ibm(circuits: int, shots: int, two_qubit: int) -> bool:
    return circuits * shots <= IBM_EXECUTIONS and circuits * two_qubit < IBM_TWO_QUBIT_BELOW


@pytest.mark.parametrize("two_qubit", TWO_QUBIT)
@pytest.mark.parametrize("shots", SHOTS)
def test_ibm_jobs_are_as_large_as_the_limits_allow_and_no_larger(shots, two_qubit):
    chunk = IBMProvider.limits.chunk_size(shots, two_qubit)
    assert _fits_ibm(chunk, shots, two_qubit)
    assert not _fits_ibm(chunk + 1, shots, two_qubit)  # (a split that rounds down too far wastes jobs)
    for n in (chunk - 1, chunk, chunk + 1, 3 * chunk + 1):
        jobs = split(max(n, 1), chunk)
        assert len(jobs) == jobs_for(max(n, 1), IBMProvider.limits, shots, two_qubit) == math.ceil(max(n, 1) / chunk)
        assert all(_fits_ibm(len(job), shots, two_qubit) for job in jobs)


def test_ibm_3000_shots_take_3333_circuits_per_job():
    assert IBMProvider.limits.chunk_size(3000) == 3333  # not 3,334: 10,002,000 executions
    assert jobs_for(3334, IBMProvider.limits, 3000) == 2


def test_ibm_one_circuit_past_a_limit_is_an_error_naming_shots():
    with pytest.raises(ValueError, match="lower `shots`"):
        IBMProvider.limits.chunk_size(IBM_EXECUTIONS + 1)
    with pytest.raises(ValueError, match="10000 two-qubit gates"):
        IBMProvider.limits.chunk_size(1, IBM_TWO_QUBIT_BELOW)


@pytest.mark.parametrize("shots", SHOTS)
def test_origin_batches_hold_at_most_200_programs_at_any_shot_count(shots):
    assert OriginProvider.limits.chunk_size(shots, 7) == ORIGIN_PROGRAMS
    assert jobs_for(450, OriginProvider.limits, shots) == 3


@pytest.mark.parametrize(
    "spec,cls", [("ibm", IBMProvider), ("ibm:ibm_fez", IBMProvider), ("origin:WK_C180", OriginProvider)]
)
def test_plan_counts_with_the_provider_classes_own_limits(spec, cls):
    assert provider_limits(spec) == cls.limits


class _Recording(ScriptedProvider):
    """A fault-free scripted provider with another provider's limits; records every job's size."""

    def __init__(self, limits):
        super().__init__(max_circuits=1, **NO_FAULTS)
        self.limits = limits
        self.sizes: list[tuple[int, int]] = []

    def submit(self, circuits, shots, tag):
        self.sizes.append((len(circuits), shots))
        return super().submit(circuits, shots, tag)


@pytest.mark.parametrize(
    "n_circuits,shots,cz,expected",
    [(3334, 3000, 0, [3333, 1]), (2442, 4096, 0, [2441, 1]), (3001, 1, 7, [1428, 1428, 145])],
    ids=["3000-shots", "4096-shots", "7-cz-per-circuit"],
)
def test_the_engine_splits_within_ibms_limits(tmp_path, n_circuits, shots, cz, expected):
    template = Circuit(2).add("RY", [0], Weight(0))
    for _ in range(cz):
        template.add("CZ", [0, 1])
    angles = np.linspace(0, math.pi, n_circuits)
    provider = _Recording(IBMProvider.limits)
    engine = JobEngine(provider, tmp_path, **FAST)
    out = engine.run(BoundCircuit.batch(template, angles[:, None]), shots)
    assert len(out) == n_circuits
    assert sorted((n for n, _ in provider.sizes), reverse=True) == expected
    assert all(_fits_ibm(n, s, cz) for n, s in provider.sizes)


def test_origin_provider_splits_450_circuits_into_jobs_of_at_most_200(tmp_path):
    service = StandInQCloudService()
    provider = OriginProvider(api_key="sk-test", service=service, job_factory=service.job)
    template = Circuit(1).add("RY", [0], Weight(0))
    angles = np.linspace(0, math.pi, 450)
    out = JobEngine(provider, tmp_path, **FAST).run(BoundCircuit.batch(template, angles[:, None]), 100)
    assert len(out) == 450
    assert sorted(service.submissions, reverse=True) == [(200, 100), (200, 100), (50, 100)]
    p1 = np.array([p[1] for p in out])  # P(1) = sin^2(a / 2), sampled with 100 shots
    assert np.abs(p1 - np.sin(angles / 2) ** 2).max() < 0.25
