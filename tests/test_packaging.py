"""The distribution: the wheel builds, holds the code and the LICENSE only, and declares what
a plain ``pip install qpeft`` needs as core dependencies (the quantum SDKs, TRL and PEFT stay
extras). ``.ci/wheel.sh`` (run by ``make test``) installs that wheel into a fresh virtualenv."""

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import qpeft

REPO = Path(__file__).resolve().parents[1]
#: today's wheel is ~180 KB of code; a data file or a notebook slipping in would pass this
MAX_WHEEL_BYTES = 400_000


def _sources() -> set[str]:
    """The package's modules as the wheel names them (qpeft/...)."""
    src = REPO / "src"
    return {str(p.relative_to(src)) for p in (src / "qpeft").rglob("*.py") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy of what the build reads (as .ci/wheel.sh does): an earlier in-tree
    # build/ would otherwise leak stale modules into the wheel
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-qq", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("qpeft-*.whl")
    return path


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode())


def test_wheel_is_code_and_license_only(wheel):
    assert wheel.stat().st_size < MAX_WHEEL_BYTES, wheel.stat().st_size
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        dist_info = f"qpeft-{qpeft.__version__}.dist-info/"
        assert f"{dist_info}licenses/LICENSE" in names
        assert "Apache License" in z.read(f"{dist_info}licenses/LICENSE").decode()
    code = {n for n in names if not n.startswith(dist_info)}
    assert code == _sources()  # every module (no package left out for a missing __init__.py), nothing else


def test_core_dependencies_cover_the_pipeline_and_sdks_stay_extras(wheel):
    meta = _metadata(wheel)
    assert meta["Version"] == qpeft.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    requires = meta.get_all("Requires-Dist")
    core = {r.split(";")[0].split(">")[0].split("=")[0].strip().lower() for r in requires if "extra ==" not in r}
    # import qpeft.adapters, load_model (GGUF), Trainer, adapter files, --config YAML, compare's plot
    assert {"torch", "transformers", "accelerate", "safetensors", "gguf", "pyyaml", "matplotlib", "tqdm"} <= core
    assert not core & {"qiskit", "qiskit-aer", "pennylane", "pyqpanda3", "qiskit-ibm-runtime", "trl", "peft"}
    assert {"qiskit", "ibm", "pennylane", "pyqpanda3", "origin", "trl"} <= set(meta.get_all("Provides-Extra"))
