"""The extension points (qpeft.plugins): real plugin packages, pip-installed (offline, from local
directories) into a target directory that a fresh ``qpeft`` process has on its path, are listed
with their distributions by ``qpeft providers``, picked by name on ``--quantum-backend``,
``backend=`` and ``noise=``, and trained through end to end (qtha-weights on the plugin's
provider: the ledger equals ``qpeft plan``). A plugin that cannot be imported, or that claims a
built-in's name, is reported with its distribution and breaks nothing else; qpeft's own names
work whatever its installed metadata says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qpeft.backends.base import BUILTIN_BACKENDS
from qpeft.devices.presets import REGISTRY as DEVICE_REGISTRY
from qpeft.jobs.providers import BUILTIN_PROVIDERS
from qpeft.plugins import Registry, subclass_of

REPO = Path(__file__).resolve().parents[1]

TOYQ = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "qpeft-toyq"
        version = "0.1"

        [project.entry-points."qpeft.providers"]
        toyq = "qpeft_toyq:ToyProvider"

        [project.entry-points."qpeft.backends"]
        toysim = "qpeft_toyq:ToyBackend"

        [project.entry-points."qpeft.devices"]
        toy5 = "qpeft_toyq:toy5"
    """,
    "qpeft_toyq/__init__.py": '''
        """A third-party provider, backend and device preset for qpeft."""
        import uuid

        import numpy as np
        import torch

        from qpeft.backends.base import ProbabilityBackend, get_backend
        from qpeft.devices import Device
        from qpeft.jobs.base import JobLostError, Limits, Provider, State, Status
        from qpeft.jobs.local import exact_probabilities, sample


        class ToyProvider(Provider):
            """Jobs of at most 7 circuits, sampled from qpeft's exact simulator."""

            name = "toyq"
            limits = Limits(max_circuits=7)
            can_find = True
            durable = False
            remote = False

            def __init__(self, backend="sim", seed=0):
                self.backend, self.seed = backend, seed
                self._exact = get_backend("torch")
                self._jobs, self._tags = {}, {}

            def submit(self, circuits, shots, tag):
                probs = exact_probabilities(self._exact, circuits)
                if shots is not None:
                    probs = [sample(p, shots, f"{self.seed}{tag}{i}".encode()) for i, p in enumerate(probs)]
                job_id = uuid.uuid4().hex
                self._jobs[job_id], self._tags[tag] = probs, job_id
                return job_id

            def status(self, job_id):
                if job_id not in self._jobs:
                    raise JobLostError(job_id)
                return Status(State.DONE)

            def result(self, job_id, circuits, shots):
                return self._jobs[job_id]

            def cancel(self, job_id):
                return False

            def find(self, tag):
                return self._tags.get(tag)


        class ToyBackend(ProbabilityBackend):
            """qpeft's exact simulator, as a plugin backend."""

            name = "toysim"

            def probabilities(self, circuit, inputs, weights):
                return get_backend("torch", dtype=torch.complex128).run(circuit, inputs, weights, "probs").numpy()


        def toy5():
            """A 5-qubit line with uniform figures."""
            n = 5
            return Device(
                name="toy5",
                n_qubits=n,
                edges=tuple((q, q + 1) for q in range(n - 1)),
                native_gates=("rz", "sx", "x", "cz"),
                single_qubit_fidelity=(0.999,) * n,
                readout_p01=(0.02,) * n,
                readout_p10=(0.03,) * n,
                t1=(100e-6,) * n,
                t2=(80e-6,) * n,
                pair_fidelity=(0.99,) * (n - 1),
                durations={"rz": 0.0, "sx": 35e-9, "x": 35e-9, "cz": 70e-9, "measure": 1e-6},
            )
    ''',
}
BROKEN = {  # a provider whose module is missing, and a claim on a built-in's name
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "qpeft-broken"
        version = "0.2"

        [project.entry-points."qpeft.providers"]
        brokenq = "qpeft_broken_missing.provider:BrokenProvider"
        origin = "qpeft_broken:Origin"
    """,
    "qpeft_broken/__init__.py": '"""Nothing here."""\n',
}
#: stale metadata of qpeft itself: its entry points are ignored (the code holds qpeft's names)
STALE_QPEFT = {
    "METADATA": "Metadata-Version: 2.1\nName: qpeft\nVersion: 0.0.1\n",
    "entry_points.txt": "[qpeft.providers]\nghost = qpeft.jobs.nowhere:Ghost\nlocal = qpeft.old:Local\n",
}

SCRIPT = """
import json, sys
from qpeft.cli import main
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.summary import totals
from qpeft.testing import tiny_model_dir

out = sys.argv[1]
model = str(tiny_model_dir(out + "/tiny"))
flags = ["--model", model, "--method", "qtha-weights", "--adapter", '{"r": 4, "bond_dim": 2, "qnn_layers": 1}',
         "--quantum-backend", "toyq", "--shots", "300", "--diff-method", "parameter_shift", "--steps", "2",
         "--batch-size", "2", "--max-length", "48"]
assert main(["plan", "--json", *flags]) == 0
assert main(["train", *flags, "--data", "arithmetic:1", "--max-examples", "8", "--eval-examples", "2",
             "--out", out + "/run", "--no-progress"]) == 0
print("LEDGER " + json.dumps(totals(read_ledger(out + "/run/jobs/ledger.jsonl"))))

import torch
from qpeft.adapters import QTHAConfig
from qpeft.backends import get_backend
from qpeft.devices import get_device
from qpeft.testing import random_circuit

circuit = random_circuit(3, 12, 0)
inputs = torch.linspace(-2, 1, 2 * circuit.n_inputs, dtype=torch.float64).reshape(2, -1)
weights = torch.linspace(-1, 2, circuit.n_weights, dtype=torch.float64)
ours = get_backend("torch", dtype=torch.complex128).run(circuit, inputs, weights, "probs")
theirs = get_backend("toysim").run(circuit, inputs, weights, "probs")
assert torch.allclose(ours, theirs), (ours, theirs)
assert get_device("toy5").n_qubits == 5 and get_device("toy5").edges[-1] == (3, 4)
assert QTHAConfig(r=4, backend="noisy", noise="toy5").noise == "toy5"
from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.providers import get_provider

bound = [BoundCircuit(circuit, tuple(weights.tolist()), tuple(row)) for row in inputs.tolist()]
noisy = JobEngine(get_provider("noisy:toy5"), None, progress=False).run(bound, None)  # transpiled onto toy5
exact = JobEngine(get_provider("local:toysim"), None, progress=False).run(bound, None)
assert torch.allclose(torch.tensor(exact), ours) and not torch.allclose(torch.tensor(noisy), ours, atol=1e-3)
assert QTHAConfig(r=4, backend="toysim").backend == "toysim"
print("PLUGINS OK")
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture(scope="module")
def plugins(tmp_path_factory) -> Path:
    """A directory holding the two plugin packages, pip-installed into it (no network, no build
    isolation: the current environment's setuptools builds them), and stale metadata of qpeft."""
    pytest.importorskip("setuptools", reason="building the plugin packages offline needs setuptools installed")
    root = tmp_path_factory.mktemp("plugins")
    target = root / "site"
    sources = [_write(root / "toyq", TOYQ), _write(root / "broken", BROKEN)]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--target", str(target), *map(str, sources)],
        check=True,
        capture_output=True,
    )
    _write(target / "qpeft-0.0.1.dist-info", STALE_QPEFT)
    return target


def _qpeft(plugins: Path, *args: str, script: str | None = None, timeout: float = 600):
    """A fresh process with the plugins installed (and this checkout's qpeft first on its path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(plugins)]), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "qpeft.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_qpeft_providers_lists_the_plugins_with_their_distributions(plugins):
    done = _qpeft(plugins, "providers", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    origin = {kind: {r["name"]: r["from"] for r in rows} for kind, rows in listing.items() if kind != "conflicts"}
    assert origin["providers"]["toyq"] == "qpeft-toyq 0.1" and origin["providers"]["brokenq"] == "qpeft-broken 0.2"
    assert origin["backends"]["toysim"] == "qpeft-toyq 0.1" and origin["devices"]["toy5"] == "qpeft-toyq 0.1"
    # qpeft's own names come from its code: all of them, whatever its (stale) metadata lists
    assert {n for n, o in origin["providers"].items() if o == "qpeft (built in)"} == set(BUILTIN_PROVIDERS)
    assert "ghost" not in origin["providers"]
    (conflict,) = listing["conflicts"]
    assert conflict["name"] == "origin" and conflict["claims"] == ["qpeft-broken 0.2 (qpeft_broken:Origin)"]


def test_a_plugin_that_fails_to_import_names_its_distribution_and_breaks_nothing_else(plugins):
    done = _qpeft(plugins, "providers", "--check")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert "qpeft-broken 0.2" in lines["brokenq"] and "No module named 'qpeft_broken_missing'" in lines["brokenq"]
    assert all(lines[name].endswith("[ok]") for name in ("toyq", "toysim", "toy5", "local", "origin"))
    assert "not used: provider 'origin' from qpeft-broken 0.2" in done.stdout

    used = _qpeft(plugins, "plan", "--method", "qtha-weights", "--quantum-backend", "brokenq", "--shots", "100")
    assert used.returncode == 2
    assert "provider 'brokenq' from the distribution qpeft-broken 0.2" in used.stderr
    assert "ModuleNotFoundError" in used.stderr and "Traceback" not in used.stderr

    unknown = _qpeft(plugins, "plan", "--method", "qtha-weights", "--quantum-backend", "toyz", "--shots", "100")
    assert unknown.returncode == 2 and "unknown quantum provider 'toyz'" in unknown.stderr
    assert "toyq" in unknown.stderr and "brokenq" in unknown.stderr and "toysim" in unknown.stderr


@pytest.mark.slow  # (a fresh process trains a tiny model)
def test_a_plugin_provider_trains_qtha_weights_through_the_engine_and_the_ledger_equals_the_plan(plugins, tmp_path):
    done = _qpeft(plugins, str(tmp_path), script=SCRIPT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PLUGINS OK" in done.stdout
    plan = json.loads(done.stdout[: done.stdout.index("\n}") + 2])
    ledger = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("LEDGER "))[7:])
    assert plan["provider"] == "toyq" and ledger["providers"] == ["toyq:sim"]
    assert (ledger["circuits"], ledger["jobs"], ledger["shots"]) == (
        plan["circuits_per_run"],
        plan["jobs_per_run"],
        plan["shots_per_run"],
    )
    assert plan["jobs_per_step"] > 1  # the plugin's own limit (7 circuits a job) split each step


def test_pyprojects_entry_points_are_the_builtins_in_the_code():
    tomllib = pytest.importorskip("tomllib")
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert groups["qpeft.providers"] == BUILTIN_PROVIDERS
    assert groups["qpeft.backends"] == BUILTIN_BACKENDS
    assert groups["qpeft.devices"] == {e.name: e.target for e in DEVICE_REGISTRY.entries().values() if e.builtin}


def test_the_registry_without_readable_metadata_still_has_the_builtins(monkeypatch):
    import importlib.metadata

    def broken(**_):
        raise OSError("a damaged .dist-info")

    monkeypatch.setattr(importlib.metadata, "entry_points", broken)
    registry = Registry("provider", "qpeft.providers", BUILTIN_PROVIDERS, subclass_of(object, "anything"))
    assert registry.names() == list(BUILTIN_PROVIDERS) and registry.load("local").__name__ == "LocalProvider"
    with pytest.raises(ValueError, match="unknown provider 'toyq'; choose one of local, origin, ibm, braket"):
        registry.load("toyq")
