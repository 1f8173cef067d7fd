"""The optional SDKs are optional for the test suite too: with none of them importable, every test
module still collects (its SDK tests skip), as on a machine that installed qpeft without extras.

`make test` installs every extra, so nothing else here would notice a test helper that imports an
SDK at module level (tests/jobs/standins.py once imported pyqpanda3 so, and 16 job-engine test
modules failed to collect on a machine without it)."""

import subprocess
import sys
from pathlib import Path

from optional_sdks import OPTIONAL

TESTS = Path(__file__).resolve().parent

# A module set to None in sys.modules raises ImportError on import (also for its submodules),
# which is what pytest.importorskip and qpeft's own `require` see on a machine without it.
BLOCKED_COLLECT = f"""
import sys
for name in {OPTIONAL!r}:
    sys.modules[name] = None
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", {str(TESTS)!r}]))
"""


def test_every_test_module_collects_without_the_optional_sdks():
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED_COLLECT], capture_output=True, text=True, timeout=600, cwd=TESTS.parent
    )
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"collection failed without the optional SDKs:\n{tail}"
    assert "error" not in proc.stdout.splitlines()[-1], tail
    # the blocking took effect: the SDKs' own test modules were skipped, not collected
    assert "import of qiskit halted" in proc.stdout, tail
