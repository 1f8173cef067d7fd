"""The optional SDKs are optional for the test suite too: with none of them importable, every test
module still collects (its SDK tests skip), as on a machine that installed qpeft without extras.

`make test` installs every extra, so nothing else here would notice a test helper that imports an
SDK at module level (tests/jobs/standins.py once imported pyqpanda3 so, and 16 job-engine test
modules failed to collect on a machine without it). The whole suite runs that way by hand with
``python tests/optional_sdks.py -q tests`` (about 35 minutes on the project's 2-core machine)."""

import importlib
import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path

import pytest
from optional_sdks import missing_optional

TESTS = Path(__file__).resolve().parent


def test_every_test_module_collects_without_the_optional_sdks():
    proc = subprocess.run(
        [sys.executable, str(TESTS / "optional_sdks.py"), "--collect-only", "-q", "-p", "no:cacheprovider", str(TESTS)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=TESTS.parent,
    )
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"collection failed without the optional SDKs:\n{tail}"
    assert "error" not in proc.stdout.splitlines()[-1], tail
    # the blocking took effect: the SDKs' own test modules were skipped, not collected
    assert "import of qiskit halted" in proc.stdout, tail


def _qpeft_style(module: str) -> ImportError:
    """The error qpeft raises for an SDK it cannot import (``raise ImportError(...) from err``)."""
    try:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(f"this needs `{module}`; install it with `pip install qpeft[x]`") from err
    except ImportError as err:
        return err
    raise AssertionError(f"{module} imported")


def test_missing_optional_names_an_absent_sdk_and_nothing_else(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # absent, as test_every_test_module_collects... blocks it
    for name in ("braket", "braket.circuits"):  # (braket.circuits too: another test may have imported it)
        monkeypatch.setitem(sys.modules, name, None)
    assert missing_optional(_qpeft_style("optuna")) == "optuna"  # through `raise ... from`
    assert missing_optional(_qpeft_style("braket.circuits")) == "braket.circuits"  # a submodule of an absent SDK
    assert missing_optional(_qpeft_style("qpeft_no_such_core_dependency")) is None  # not an optional SDK
    assert missing_optional(ImportError("no name, no cause")) is None


def test_missing_optional_fails_an_installed_sdk_that_lacks_a_name(monkeypatch):
    """An optional SDK that is installed but lacks what qpeft imports (another version) is a failure
    for test_docs, not a skip: its ImportError names the SDK too (``from optuna import X``)."""
    fake = types.ModuleType("optuna")
    fake.__spec__ = importlib.machinery.ModuleSpec("optuna", None)
    monkeypatch.setitem(sys.modules, "optuna", fake)
    with pytest.raises(ImportError) as raised:
        exec("from optuna import a_name_this_version_lacks")
    assert raised.value.name == "optuna" and missing_optional(raised.value) is None
    assert missing_optional(_qpeft_style("optuna.a_submodule_this_version_lacks")) is None
