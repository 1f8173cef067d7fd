"""The Amazon Braket provider beyond the shared contract (test_providers.py): its remote path
against a stand-in for the unreachable service (braket_standin.py: the SDK and boto3 run for real,
the service answers where botocore would send a request), and its offline path on Braket's
LocalSimulator. Money first: throttled creates are retried (they created nothing), a create whose
answer was lost is settled by the task's tag, a task past its run time is cancelled before it is
submitted again; per-task limits split the jobs as the plan counts them; prices, usage and
secrets."""

import json
import math
import re

import numpy as np
import pytest
from braket_standin import IQM_GARNET, SECRET, SV1, StandInBraketService

from qpeft.backends import get_backend
from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine, JobFailedError, Limits
from qpeft.jobs.budget import BudgetExceededError
from qpeft.jobs.calls import ProviderError
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.providers import get_provider, provider_limits
from qpeft.jobs.rates import estimate
from qpeft.quantum.circuit import Circuit, Weight

pytest.importorskip("braket.default_simulator")

from qpeft.jobs.base import account_digest  # noqa: E402
from qpeft.jobs.braket import CREATES, PROGRAM_SET_LIMITS, BraketProvider  # noqa: E402

RY = Circuit(1).add("RY", [0], Weight(0))
FAST = dict(poll_interval=0.001, max_poll_interval=0.004, progress=False)


def _circuits(n):
    return [BoundCircuit(RY, (float(t),)) for t in np.linspace(0.2, 3.0, n)]


def _expected(n):
    t = np.linspace(0.2, 3.0, n)
    return np.stack([np.cos(t / 2) ** 2, np.sin(t / 2) ** 2], axis=1)


def _remote(service, device="iqm_garnet", **options):
    return BraketProvider(device, aws_session=service.aws_session(), s3_folder="s3://results/qpeft", **options)


def _events(run_dir):
    return [r["event"] for r in read_ledger(run_dir / "jobs" / "ledger.jsonl")]


def test_a_task_is_found_by_its_tag_through_pages_of_search_results():
    service = StandInBraketService(page_size=2)
    first = _remote(service)
    arns = [first.submit(_circuits(2), 100, tag=f"key{k}.1") for k in range(5)]
    restarted = _remote(service)  # a new process: nothing in memory, the service's search only
    assert [restarted.find(f"key{k}.1") for k in range(5)] == arns
    assert restarted.find("key9.1") is None
    assert all(service.tasks[a]["tags"] == {"qpeft-tag": f"key{k}.1"} for k, a in enumerate(arns))


def test_throttled_creates_are_retried_and_pay_once(tmp_path):
    service = StandInBraketService()
    service.faults["CreateQuantumTask"] = ["ThrottlingException", "ServiceQuotaExceededException"]
    out = JobEngine(_remote(service), tmp_path, **FAST).run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    assert len(service.bill) == 1 and _events(tmp_path) == ["intent", "submitted", "done"]


@pytest.mark.parametrize("created", [True, False], ids=["created", "not-created"])
def test_a_create_whose_answer_is_lost_is_settled_by_its_tag(tmp_path, created):
    """A 500 from CreateQuantumTask: the task may exist. It is looked up by its tag; found, it is
    the job; not found within settle_s, nothing was created and the create is made again."""
    service = StandInBraketService()
    if created:
        service.created_but_lost = 1
    else:
        service.faults["CreateQuantumTask"] = ["InternalServiceException"]
    provider = _remote(service, settle_s=0.2)
    out = JobEngine(provider, tmp_path, **FAST).run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    assert len(service.bill) == 1


@pytest.mark.parametrize(
    "engine",
    [{}, {"max_attempts": 1}, {"submit_timeout": 0.05}],
    ids=["default", "no-engine-retries", "no-answer-in-time"],
)
def test_a_create_made_again_after_a_lagging_search_gets_its_task_not_a_second_one(tmp_path, engine):
    """The create's answer is lost after the task was made, and the search does not list the task
    within settle_s (its index lags): the create is made again, with the same clientToken, and
    the service answers with the task it made. One task, paid once, whether or not the engine
    may retry the submit and whether or not the submit answered within submit_timeout."""
    service = StandInBraketService()
    service.created_but_lost, service.index_lag_s = 1, 30.0
    provider = _remote(service, settle_s=0.2)
    out = JobEngine(provider, tmp_path, **FAST, **engine).run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    assert len(service.bill) == 1
    assert len(service.create_tokens) == 2 and len(set(service.create_tokens)) == 1
    assert "rejected" not in _events(tmp_path)


def test_creates_left_unsettled_are_settled_by_the_tag_not_submitted_again(tmp_path):
    """Every create call's answer is lost and the search lags past settle_s each time: the
    provider says the task may exist (not 'nothing was created'), the engine records the
    submission as unknown and settles it by its tag once the index lists it: paid once, even
    with no engine retries."""
    service = StandInBraketService()
    service.created_but_lost, service.index_lag_s = CREATES, 1.0
    provider = _remote(service, settle_s=0.05)
    engine = JobEngine(provider, tmp_path, **FAST, max_attempts=1, submit_timeout=1.5)
    out = engine.run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    assert len(service.bill) == 1 and len(service.create_tokens) == CREATES
    assert _events(tmp_path) == ["intent", "unknown", "submitted", "done"]


def test_the_token_reaches_a_braket_client_the_session_was_given_later(tmp_path):
    """A plugin sharing the session (PennyLane's, qiskit-braket's) may replace its braket client
    (AwsSession.add_braket_user_agent makes a new one): the token goes into that client's calls."""
    service = StandInBraketService()
    provider = _remote(service, settle_s=0.2)
    JobEngine(provider, tmp_path / "first", **FAST).run(_circuits(2), 2000, scope="s")
    provider._session.add_braket_user_agent("PennyLane-Braket/0.0")
    service.created_but_lost, service.index_lag_s = 1, 30.0
    JobEngine(provider, tmp_path / "then", **FAST).run(_circuits(3), 2000, scope="s")
    assert len(service.bill) == 2 and len(set(service.create_tokens[1:])) == 1


def test_a_session_of_another_region_looks_for_its_tasks_in_the_devices_region(tmp_path, monkeypatch):
    """Given a session of us-east-1 for a device of eu-north-1, the SDK creates the tasks in the
    device's region: the lookup by tag after a lost answer asks there too, and finds the task
    with no second create call."""
    service = StandInBraketService()
    service.install(monkeypatch)  # (the SDK copies the session into the device's region)
    service.created_but_lost = 1
    provider = BraketProvider(
        "iqm_garnet", aws_session=service.aws_session("us-east-1"), s3_folder="s3://results/qpeft"
    )
    out = JobEngine(provider, tmp_path, **FAST).run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    assert len(service.create_tokens) == 1 and len(service.bill) == 1
    assert {t["_region"] for t in service.tasks.values()} == {"eu-north-1"}
    service.created_but_lost, service.index_lag_s = 1, 30.0  # (and a lagging search: the token decides)
    provider.settle_s = 0.2
    JobEngine(provider, tmp_path / "lag", **FAST).run(_circuits(2), 2000, scope="s")
    assert len(service.bill) == 2 and len(set(service.create_tokens[1:])) == 1


def test_client_tokens_are_one_per_submission_and_provider():
    """Another submission, or the same tag from another provider (another run, a restart), has
    another token: a task is only ever answered to the create calls that made it."""
    service = StandInBraketService()
    first, second = _remote(service), _remote(service)
    arns = [first.submit(_circuits(1), 100, tag="k.1"), first.submit(_circuits(1), 100, tag="k.2")]
    arns.append(second.submit(_circuits(1), 100, tag="k.1"))
    assert len(set(arns)) == 3 and len(service.bill) == 3
    assert len(set(service.create_tokens)) == 3


def test_a_failed_task_stops_the_run_with_its_arn_and_reason(tmp_path):
    service = StandInBraketService()
    service.fail_next = "QPU calibration in progress"
    with pytest.raises(JobFailedError, match="standin-1.*QPU calibration in progress") as info:
        JobEngine(_remote(service), tmp_path, **FAST).run(_circuits(3), 200, scope="s")
    assert info.value.job_id.endswith("standin-1") and len(service.bill) == 1


def test_a_task_past_its_run_time_is_cancelled_then_submitted_again(tmp_path):
    service = StandInBraketService(polls=0)
    service.hold_next = 1  # the first task runs forever
    engine = JobEngine(_remote(service), tmp_path, job_timeout=0.3, cancel_wait=10, **FAST)
    out = engine.run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    first, second = service.bill
    assert service.tasks[first]["status"] == "CANCELLED" and service.tasks[second]["status"] == "COMPLETED"
    assert service.seen_at_create[1] == {first: "CANCELLED"}  # (not while it was still CANCELLING)
    assert _events(tmp_path) == ["intent", "submitted", "timeout", "intent", "submitted", "done"]


def test_what_a_task_used_reaches_qpeft_jobs(tmp_path, capsys):
    service = StandInBraketService()
    JobEngine(_remote(service), tmp_path, **FAST).run(_circuits(4), 500, scope="s")
    (done,) = [r for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "done"]
    assert done["usage"]["shots"] == 2000 and done["usage"]["successful_shots"] == 2000
    assert done["usage"]["failed_executables"] == 0 and done["usage"]["seconds"] >= 0
    assert main(["jobs", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["reported"]["successful_shots"] == 2000
    assert got["estimate"]["braket"]["cost"] == [0.30 + 2000 * 0.00145] * 2  # IQM Garnet's published prices


def test_a_device_without_program_sets_runs_one_circuit_per_task(tmp_path):
    service = StandInBraketService()
    provider = _remote(service, device="sv1")
    assert provider.limits.max_circuits == 1 and provider.backend == "sv1"
    out = JobEngine(provider, tmp_path, **FAST).run(_circuits(4), 1000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(4), atol=0.06)
    assert len(service.bill) == 4 and all(service.tasks[a]["shots"] == 1000 for a in service.bill)
    assert {service.tasks[a]["deviceArn"] for a in service.bill} == {SV1}


def test_program_sets_are_split_within_the_devices_limits_as_the_plan_counts(tmp_path):
    service = StandInBraketService()
    provider = _remote(service)
    shots = 20_000  # 200,000 total shots a task: 10 circuits a program set
    assert provider.limits == provider_limits("braket:iqm_garnet") == Limits(*PROGRAM_SET_LIMITS)
    out = JobEngine(provider, tmp_path, **FAST).run(_circuits(25), shots, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(25), atol=0.02)
    assert sorted(service.tasks[a]["shots"] for a in service.bill) == [100_000, 200_000, 200_000]  # (in parallel)
    assert all(t["deviceArn"] == IQM_GARNET for t in service.tasks.values())


def test_the_sdks_local_simulator_has_the_limits_the_plan_assumes():
    provider = get_provider("braket:local")
    assert provider.limits == Limits(*PROGRAM_SET_LIMITS) == BraketProvider.plan_limits("ionq_forte")


def test_the_noise_model_on_local_dm_matches_qpefts_noisy_simulator():
    """Gate noise and readout error (a Kraus channel on each measurement) through the provider's
    whole path: program set, noise model, LocalSimulator's density matrix, counts."""
    noise = {"depolarizing": 0.05, "amplitude_damping": 0.03, "readout_p01": 0.04, "readout_p10": 0.12}
    provider = get_provider("braket:local_dm", noise=noise)
    angles = [0.4, 1.9, 2.8]
    out = JobEngine(provider, None, **FAST).run([BoundCircuit(RY, (a,)) for a in angles], 40_000)
    import torch

    w = torch.tensor(angles, dtype=torch.float64).reshape(-1, 1)
    ours = get_backend("noisy", noise=noise, dtype="complex128").run(RY, None, w, "probs").numpy()
    np.testing.assert_allclose(np.stack(out), ours, atol=0.012)  # 40,000 shots: 4 standard errors
    assert not np.allclose(ours, _expected_angles(angles), atol=0.03)  # (the noise is there to see)


def _expected_angles(angles):
    t = np.asarray(angles)
    return np.stack([np.cos(t / 2) ** 2, np.sin(t / 2) ** 2], axis=1)


def test_bad_device_names_and_options_say_what_to_fix(monkeypatch):
    service = StandInBraketService()
    with pytest.raises(ValueError, match="name a Braket device: braket:local or braket:local_dm"):
        get_provider("braket")
    with pytest.raises(ValueError, match="unknown Braket device 'ionq_harmony'.*ionq_forte, .*iqm_garnet"):
        _remote(service, device="ionq_harmony")
    with pytest.raises(ValueError, match="has no device arn:aws:braket:eu-north-1::device/qpu/iqm/Nowhere"):
        _remote(service, device="arn:aws:braket:eu-north-1::device/qpu/iqm/Nowhere")
    with pytest.raises(ValueError, match="`noise` needs the density-matrix simulator"):
        get_provider("braket:local", noise={"depolarizing": 0.01})
    with pytest.raises(ValueError, match="is OFFLINE, not ONLINE"):
        _remote(StandInBraketService(status="OFFLINE"))
    with pytest.raises(ValueError, match="s3://BUCKET/PREFIX"):
        BraketProvider("iqm_garnet", aws_session=service.aws_session(), s3_folder="results")
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # (no instance-metadata lookup either)
    with pytest.raises(ValueError, match="no AWS credentials for Amazon Braket: set AWS_ACCESS_KEY_ID"):
        BraketProvider("iqm_garnet")


def test_the_secret_key_never_reaches_a_message_or_the_ledger(tmp_path):
    service = StandInBraketService()
    service.faults["CreateQuantumTask"] = ["ValidationException"]
    service.fault_message = f"request signed with {SECRET} is malformed"  # (a service echoing the key)
    with pytest.raises(ProviderError) as info:
        JobEngine(_remote(service), tmp_path, **FAST).run(_circuits(2), 100, scope="s")
    assert SECRET not in str(info.value) and "***" in str(info.value)
    assert SECRET not in (tmp_path / "jobs" / "ledger.jsonl").read_text()


def test_the_plan_prices_braket_per_task_and_per_shot():
    from qpeft.jobs.plan import format_plan, plan_run

    circuits = [RY] * 3
    plan = plan_run(circuits, "braket:ionq_forte", 1000, steps=10, diff_method="parameter_shift")
    jobs, shots = plan.jobs_per_run, plan.shots_per_run
    assert plan.cost_per_run == pytest.approx((0.30 * jobs + 0.08 * shots,) * 2) and plan.currency == "USD"
    text = format_plan(plan)
    assert re.search("QPU time +not estimated", text) and "USD 0.30 per task plus USD 0.08 per shot" in text
    arn = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"  # (a device by its ARN: the same prices)
    assert plan_run(circuits, f"braket:{arn}", 1000, 10, "parameter_shift").cost_per_run == plan.cost_per_run
    assert plan_run(circuits, "braket:local", 1000, 10, "parameter_shift").cost_per_run is None
    unknown = plan_run(circuits, "braket:arn:aws:braket:us-east-1::device/qpu/x/Y", 1000, 10, "parameter_shift")
    assert unknown.cost_per_run is None and "no figures in qpeft's table for this Braket device" in unknown.rate_source
    assert estimate("braket", 2, 5, 5000, "rigetti_ankaa")[1] == pytest.approx((0.60 + 5000 * 0.0009,) * 2)


def test_the_spending_cap_counts_braket_dollars(tmp_path):
    service = StandInBraketService()
    one = 0.30 + 2 * 500 * 0.00145  # a job of 2 circuits x 500 shots on IQM Garnet
    engine = JobEngine(_remote(service), tmp_path, max_spend={"amount": 2.5 * one}, **FAST)
    engine.provider.limits = Limits(max_circuits=2)  # 3 jobs; the third passes the cap
    with pytest.raises(BudgetExceededError, match="spending cap reached \\(amount\\)"):
        engine.run(_circuits(6), 500, scope="s")
    assert len(service.bill) == 2


def test_the_local_simulator_in_the_engine_matches_the_closed_form():
    out = JobEngine(get_provider("braket:local"), None, **FAST).run(_circuits(5), 20_000)
    np.testing.assert_allclose(np.stack(out), _expected(5), atol=0.015)
    assert math.isclose(sum(out[0]), 1.0)


class Crash(BaseException):
    """The process dies here (nothing after this line runs in it)."""


def test_a_crash_after_the_create_call_is_found_by_its_tag_not_paid_again(tmp_path):
    """The service created the task; the process died before the answer reached it (its intent
    is in the ledger, no ARN). The restart finds the task by its tag and re-attaches."""
    service = StandInBraketService()
    first = _remote(service)
    create = first._device.run

    def create_then_die(*args, **kwargs):
        create(*args, **kwargs)
        raise Crash

    first._device.run = create_then_die
    with pytest.raises(Crash):
        JobEngine(first, tmp_path, submit_timeout=5, **FAST).run(_circuits(3), 2000, scope="s")
    assert len(service.bill) == 1 and _events(tmp_path) == ["intent"]
    out = JobEngine(_remote(service), tmp_path, submit_timeout=5, **FAST).run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    assert len(service.bill) == 1  # found by its tag, re-attached
    assert _events(tmp_path) == ["intent", "submitted", "done"]


def test_a_crash_before_the_create_reached_the_service_submits_once_after_the_lookup(tmp_path):
    """The process died with its intent written and no task created: the restart looks the tag up,
    finds nothing once a submit call could have landed (submit_timeout after the intent), and
    submits the job: one task in all."""
    service = StandInBraketService()
    first = _remote(service)

    def die(*args, **kwargs):
        raise Crash

    first._device.run = die
    with pytest.raises(Crash):
        JobEngine(first, tmp_path, submit_timeout=0.5, **FAST).run(_circuits(3), 2000, scope="s")
    assert service.bill == []
    out = JobEngine(_remote(service), tmp_path, submit_timeout=0.5, **FAST).run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    assert len(service.bill) == 1
    assert _events(tmp_path) == ["intent", "rejected", "intent", "submitted", "done"]


def test_an_open_task_is_re_attached_by_its_arn_after_a_restart(tmp_path):
    service = StandInBraketService(polls=10_000)  # queued past the first run's deadline
    with pytest.raises(TimeoutError, match="still open"):
        JobEngine(_remote(service), tmp_path, deadline=1.5, **FAST).run(_circuits(3), 2000, scope="s")
    (arn,) = service.bill
    service.tasks[arn]["_polls"] = 0
    out = JobEngine(_remote(service), tmp_path, **FAST).run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    assert service.bill == [arn]


def test_a_rerun_as_another_aws_account_stops_and_an_unreadable_account_checks_nothing(tmp_path, caplog):
    """Quantum tasks belong to the AWS account that made them (STS names it): a rerun with another
    account's credentials would not find the open task, take it as lost and pay for it again."""
    service = StandInBraketService(polls=10_000)
    with pytest.raises(TimeoutError, match="still open"):
        JobEngine(_remote(service), tmp_path, deadline=1.5, **FAST).run(_circuits(3), 2000, scope="s")
    (arn,) = service.bill
    assert {r.get("account") for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl")} == {
        account_digest("111122223333")
    }
    service.account = "444455556666"
    with pytest.raises(ValueError, match=f"another account made .*{arn}"):
        JobEngine(_remote(service), tmp_path, **FAST)
    service.faults["GetCallerIdentity"] = ["InternalFailure"] * 3  # STS does not answer: not checked (a warning)
    service.tasks[arn]["_polls"] = 0
    out = JobEngine(_remote(service), tmp_path, **FAST).run(_circuits(3), 2000, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(3), atol=0.04)
    assert service.bill == [arn]
    assert "could not be read from STS" in caplog.text and "will not be stopped" in caplog.text
