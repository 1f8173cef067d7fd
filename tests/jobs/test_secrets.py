"""No secret reaches the user through a provider's error: an SDK error whose text carries the
API key or token is shown redacted, for every remote provider, through the job engine and on
the command line (its printed error line), and nothing in the run directory holds it.

The SDKs' network services are replaced by stand-ins (standins.py), and nothing else: Origin's
QCloud service and IBM's Qiskit Runtime service, whose job submission fails as a service
answers a refused request, echoing the credential. IBM is checked with the token from
``QPEFT_IBM_TOKEN`` and with the token of a saved account (which qpeft never reads itself). An
SDK error that no provider's handler knows, raised while the provider is made, is redacted too."""

import logging
import sys
import traceback

import numpy as np
import pytest
from standins import StandInQCloudService, StandInRefusingRuntimeService

from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.engine import ProviderError
from qpeft.quantum.circuit import Circuit, Weight
from qpeft.testing import tiny_model_dir

SECRET = "sk-live-7Hq2SECRETx9"
CIRCUIT = Circuit(2).add("RY", [0], Weight(0)).add("RY", [1], Weight(1)).add("CZ", [0, 1])


def _origin(monkeypatch):
    qcloud = pytest.importorskip("pyqpanda3.qcloud")
    service = StandInQCloudService(submit_error=f"QCloud HTTP request failed with status 401: api key {SECRET}")
    monkeypatch.setattr(qcloud, "QCloudService", lambda api_key: service)  # the SDK's service class
    monkeypatch.setattr(qcloud, "QCloudJob", service.job)
    monkeypatch.setenv("QPEFT_ORIGIN_API_KEY", SECRET)
    return "origin"


def _ibm(monkeypatch, saved_account=False):
    runtime = pytest.importorskip("qiskit_ibm_runtime")
    error = f"'401 Client Error: Unauthorized for url https://quantum.cloud.ibm.com/api/v1/jobs (token {SECRET})'"
    service = StandInRefusingRuntimeService(error, saved_token=SECRET if saved_account else "")
    # the SDK's service class: QiskitRuntimeService(token=None) reads the saved account
    monkeypatch.setattr(runtime, "QiskitRuntimeService", lambda token=None, **kw: service)
    if saved_account:
        monkeypatch.delenv("QPEFT_IBM_TOKEN", raising=False)
    else:
        monkeypatch.setenv("QPEFT_IBM_TOKEN", SECRET)
    return "ibm:ibm_nairobi"


PROVIDERS = {
    "origin": _origin,
    "ibm-token": _ibm,
    "ibm-saved-account": lambda monkeypatch: _ibm(monkeypatch, saved_account=True),
}


def _no_secret_in(directory):
    for path in directory.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"{path} holds the secret"


@pytest.mark.parametrize("name", PROVIDERS)
def test_engine_errors_are_redacted(name, monkeypatch, tmp_path, caplog):
    from qpeft.jobs.providers import get_provider

    provider = get_provider(PROVIDERS[name](monkeypatch))
    engine = JobEngine(provider, tmp_path, poll_interval=0.001, progress=False)
    circuits = BoundCircuit.batch(CIRCUIT, np.array([[0.3, 1.2], [2.0, 0.1]]))
    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError, match="401") as info:
        engine.run(circuits, 100, scope="train-0")
    assert SECRET not in str(info.value) and "***" in str(info.value)
    assert SECRET not in caplog.text
    _no_secret_in(tmp_path)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-secrets")))


@pytest.mark.parametrize("name", PROVIDERS)
def test_cli_error_line_is_redacted(name, monkeypatch, tmp_path, tiny_dir, capsys):
    spec = PROVIDERS[name](monkeypatch)
    out = tmp_path / "run"
    args = ["train", "--model", tiny_dir, "--data", "arithmetic:1", "--method", "qtha-weights"]
    args += ["--adapter", '{"r": 2, "bond_dim": 2, "qnn_layers": 1}', "--steps", "1", "--batch-size", "2"]
    args += ["--max-examples", "8", "--max-length", "48", "--eval-examples", "2", "--no-progress"]
    args += ["--quantum-backend", spec, "--shots", "100", "--quantum-options", '{"poll_interval": 0.001}']
    assert main([*args, "--out", str(out)]) == 3  # a job error: reported, not raised
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("qpeft train: error: ")]
    assert "401" in line and "***" in line
    assert SECRET not in err
    _no_secret_in(out)


class _EchoingSDKError(Exception):
    """An SDK's own exception type (none a provider's handler knows) whose text echoes the key."""


def _origin_sdk_refusing_at_construction(monkeypatch, error: BaseException):
    qcloud = pytest.importorskip("pyqpanda3.qcloud")

    def service(api_key):  # the SDK's service class, refusing as it is made
        raise error

    monkeypatch.setattr(qcloud, "QCloudService", service)
    monkeypatch.setenv("QPEFT_ORIGIN_API_KEY", SECRET)


def _chain(err: BaseException):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


class _QuietSDKError(Exception):
    """An SDK's exception whose message hides its arguments (its repr shows them: logs, debuggers)."""

    def __str__(self):
        return "the request was refused"


def _chained(error: BaseException, cause: BaseException | None = None, context: BaseException | None = None):
    """``error`` as ``raise error from cause`` leaves it, or (``context``) raising it while handling that."""
    error.__cause__, error.__context__ = cause, context
    return error


def _noted(error: BaseException, note: str) -> BaseException:
    error.__notes__ = [note]  # (what BaseException.add_note keeps, Python 3.11+: a traceback prints it)
    return error


@pytest.mark.parametrize(
    "make_error",
    [
        lambda: _EchoingSDKError(f"malformed api key {SECRET!r}"),
        lambda: _chained(  # the key only in the error it chains to
            TypeError("the service answered nothing it can parse"), cause=_EchoingSDKError(f"401 for key {SECRET}")
        ),
        lambda: _chained(  # ... or that was being handled when it was raised
            TypeError("the service answered nothing it can parse"), context=_EchoingSDKError(f"401 for key {SECRET}")
        ),
        lambda: _noted(_EchoingSDKError("401 Unauthorized"), f"request: GET /chips?key={SECRET}"),
        lambda: _QuietSDKError("refused", {"api_key": SECRET}),
        pytest.param(
            lambda: ExceptionGroup(  # noqa: F821 (3.11+)
                "the service refused",
                [_chained(TypeError("the service answered nothing it can parse"), cause=_EchoingSDKError(SECRET))],
            ),
            marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11+"),
        ),
    ],
    ids=["in-its-text", "in-its-cause", "in-its-context", "in-its-note", "in-its-arguments", "in-a-group"],
)
def test_an_error_no_provider_handler_knows_is_redacted_at_construction(
    monkeypatch, tmp_path, tiny_dir, capsys, make_error
):
    from qpeft.jobs.providers import connect

    error = make_error()
    _origin_sdk_refusing_at_construction(monkeypatch, error)
    with pytest.raises(ValueError, match="could not be made") as info:
        connect("origin:WK_C180", attempts=1)
    assert SECRET not in "".join(traceback.format_exception(info.value))  # what a traceback would print
    assert all(SECRET not in str(e) and all(SECRET not in repr(a) for a in e.args) for e in _chain(info.value))
    args = ["train", "--model", tiny_dir, "--data", "arithmetic:1", "--method", "qtha-weights", "--steps", "1"]
    args += ["--quantum-backend", "origin:WK_C180", "--shots", "100", "--out", str(tmp_path / "run")]
    assert main(args) == 2  # one line saying what to check, no traceback
    err = capsys.readouterr().err
    assert SECRET not in err and "qpeft train: error: origin:WK_C180: the provider could not be made" in err
    assert type(error).__name__ in err


def test_an_error_without_a_secret_at_construction_is_raised_as_it_is(monkeypatch):
    from qpeft.jobs.providers import connect

    error = _EchoingSDKError("the chip list is malformed")
    _origin_sdk_refusing_at_construction(monkeypatch, error)
    with pytest.raises(_EchoingSDKError) as info:
        connect("origin:WK_C180", attempts=1)
    assert info.value is error
