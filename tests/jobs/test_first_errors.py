"""The errors a QPU user meets first: credentials and the service are checked before the model
loads, each failure one line with what to check (exit 2: something to fix; exit 3: the service
did not answer, its construction retried like any transient call); and a ledger with a corrupt
middle line, refused by every run, is repaired with every readable record kept, the job the bad
line may have been named, and the next run re-attaching by asking the provider.

The services are out of reach: the SDKs' service classes are replaced by the stand-ins
(standins.py) or by a function that fails as an unreachable service does; the missing IBM
account is the SDK's own answer (no account saved, no token set)."""

import gc
import json

import numpy as np
import pytest
from spoolservice import SpoolService
from standins import StandInQCloudService, StandInRuntimeService

from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.spool import SpoolProvider
from qpeft.quantum.circuit import Circuit, Weight

NO_MODEL = "/nonexistent/model-dir"  # the model must not be loaded before the provider is checked


def _train(tmp_path, spec, options=None):
    args = ["train", "--model", NO_MODEL, "--method", "qtha-weights", "--out", str(tmp_path / "run")]
    args += ["--quantum-backend", spec, "--shots", "100", "--no-progress"]
    return main(args + (["--quantum-options", json.dumps(options)] if options else []))


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_missing_ibm_account_is_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys):
    pytest.importorskip("qiskit_ibm_runtime")
    from qiskit_ibm_runtime.accounts import management

    monkeypatch.setattr(management, "_DEFAULT_ACCOUNT_CONFIG_JSON_FILE", str(tmp_path / "no-account.json"))
    for name in ("QPEFT_IBM_TOKEN", "QISKIT_IBM_TOKEN", "QISKIT_IBM_URL", "QISKIT_IBM_INSTANCE"):
        monkeypatch.delenv(name, raising=False)
    assert _train(tmp_path, "ibm") == 2
    line = _one_line(capsys.readouterr().err)
    assert "no IBM Quantum account" in line and "QPEFT_IBM_TOKEN" in line and "save_account" in line


def test_a_renamed_ibm_backend_is_one_line_naming_the_ones_there_are(tmp_path, monkeypatch, capsys):
    runtime = pytest.importorskip("qiskit_ibm_runtime")
    monkeypatch.setattr(runtime, "QiskitRuntimeService", lambda token=None: StandInRuntimeService())
    assert _train(tmp_path, "ibm:ibm_oldname") == 2
    line = _one_line(capsys.readouterr().err)
    assert "no backend 'ibm_oldname'" in line and "renamed or retired" in line and "ibm_nairobi" in line


class Unreachable:
    """QCloudService as the SDK behaves when the network or the service is down: it raises the
    SDK's transport error ``fails`` times, then gives the stand-in service."""

    def __init__(self, fails, message="curl_easy_perform() failed: Couldn't resolve host name"):
        self.fails, self.message, self.calls = fails, message, 0

    def __call__(self, api_key):
        self.calls += 1
        if self.calls <= self.fails:
            raise RuntimeError(self.message)
        return StandInQCloudService()


@pytest.fixture
def qcloud(monkeypatch):
    module = pytest.importorskip("pyqpanda3.qcloud")
    monkeypatch.setenv("QPEFT_ORIGIN_API_KEY", "sk-test-SECRET")
    return module


def test_an_unreachable_service_is_retried_then_one_line_exit_3(tmp_path, monkeypatch, capsys, qcloud):
    service = Unreachable(fails=100)
    monkeypatch.setattr(qcloud, "QCloudService", service)
    fast = {"poll_interval": 0.001, "max_poll_interval": 0.002, "max_attempts": 3}
    assert _train(tmp_path, "origin", fast) == 3
    line = _one_line(capsys.readouterr().err)
    assert (
        "did not answer after 3 attempt(s)" in line and "curl_easy_perform" in line and "nothing was submitted" in line
    )
    assert service.calls == 3 and "SECRET" not in line


def test_provider_construction_is_retried_like_any_transient_call(qcloud, monkeypatch):
    from qpeft.jobs.providers import ServiceUnreachableError, connect

    service = Unreachable(fails=2)
    monkeypatch.setattr(qcloud, "QCloudService", service)
    provider = connect("origin", attempts=4, wait=0.001, max_wait=0.002)
    assert provider.backend == "WK_C180" and service.calls == 3
    service = Unreachable(fails=100)
    monkeypatch.setattr(qcloud, "QCloudService", service)
    with pytest.raises(ServiceUnreachableError):
        connect("origin", attempts=2, wait=0.001, max_wait=0.002)
    assert service.calls == 2


def test_a_refused_key_is_one_line_exit_2_without_the_key(tmp_path, monkeypatch, capsys, qcloud):
    refused = Unreachable(fails=100, message="QCloud HTTP request failed with status 401: bad key sk-test-SECRET")
    monkeypatch.setattr(qcloud, "QCloudService", refused)
    assert _train(tmp_path, "origin") == 2
    line = _one_line(capsys.readouterr().err)
    assert "refused the request" in line and "QPEFT_ORIGIN_API_KEY" in line and "SECRET" not in line
    assert refused.calls == 1  # (a refusal is not retried)


RY = Circuit(1).add("RY", [0], Weight(0))
CIRCUITS = [BoundCircuit(RY, (t,)) for t in (0.2, 0.9, 1.7, 2.5)]  # 2 jobs of 2
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, max_parallel=1, progress=False)


def test_a_corrupt_middle_ledger_line_is_repaired_and_the_run_re_attaches(tmp_path, capsys):
    run, spool = tmp_path / "run", tmp_path / "spool"
    service = SpoolService(spool, start=False)  # the jobs wait in the queue: open in the ledger
    provider = SpoolProvider(spool=spool, max_circuits=2)
    with pytest.raises(TimeoutError):
        JobEngine(provider, run, deadline=1.0, **{**FAST, "max_parallel": 2}).run(CIRCUITS, None, scope="s")
    path = run / "jobs" / "ledger.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if '"submitted"' in line)  # the first job's submitted record
    job_id = json.loads(lines[n])["job_id"]
    lines[n] = lines[n][:40] + "\x00\x00 disk error \x00" + lines[n][60:]  # its middle bytes damaged
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match=f"ledger.jsonl:{n + 1} is not a JSON ledger record.*--repair"):
        JobEngine(provider, run, **FAST)

    gc.collect()  # (the first engine, as its process would, lets go of the run directory)
    assert main(["jobs", str(run), "--repair"]) == 0
    out = capsys.readouterr().out
    assert f"line {n + 1}" in out and f"job_id {job_id}" in out and "looks up" in out and "nothing is paid twice" in out
    assert len(list((run / "jobs").glob("ledger.jsonl.corrupt-*"))) == 1  # the original is kept
    records = read_ledger(path)
    assert len(records) == len(lines) and records[-1]["event"] == "repaired"  # every other record kept

    service.start()
    try:
        got = JobEngine(SpoolProvider(spool=spool, max_circuits=2), run, **FAST).run(CIRCUITS, None, scope="s")
        served = service.drain()
    finally:
        service.stop()
    thetas = np.array([0.2, 0.9, 1.7, 2.5])
    np.testing.assert_allclose(
        np.stack(got), np.stack([np.cos(thetas / 2) ** 2, np.sin(thetas / 2) ** 2], 1), atol=1e-6
    )
    assert len(served) == 2  # the job of the bad line was found by its tag, not paid again
    gc.collect()  # (the engine of the rerun lets go of the run directory, as its process would on exit)
    assert main(["jobs", str(run), "--repair"]) == 0 and "nothing to repair" in capsys.readouterr().out
