"""What a run costs, checked three ways: `qpeft jobs` shows what the provider itself reported
(IBM's job usage metrics, Origin's timing_info) next to the plan's estimate for the same jobs;
the IBM job split counts two-qubit gates on the transpiled (ISA) circuit the service validates,
not on the logical one; `qpeft plan` counts the same jobs the engine submits (the plan's eval
count is in test_training.py, where a real run's ledger is compared with it)."""

import json
import math
import re

import numpy as np
import pytest
from standins import StandInQCloudService, StandInRuntimeService

from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine, Limits
from qpeft.jobs.base import jobs_for, two_qubit_gates
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.rates import estimate
from qpeft.quantum.circuit import Circuit, Weight

BELL_FREE = Circuit(2).add("RY", [0], Weight(0)).add("RY", [1], Weight(1)).add("CZ", [0, 1])
CIRCUITS = [BoundCircuit(BELL_FREE, (0.1 * k, 0.2 * k)) for k in range(6)]
FAST = dict(poll_interval=0.001, max_poll_interval=0.002, max_parallel=1, progress=False)


def _origin():
    pytest.importorskip("pyqpanda3")
    from qpeft.jobs.origin import OriginProvider

    service = StandInQCloudService(timing={"qpuRunTime": "1500", "totalTime": "2100", "startTime": "10:00:00"})
    provider = OriginProvider(api_key="sk-test-KEY", service=service, job_factory=service.job)
    return provider, {"qpuRunTime": 1500.0, "totalTime": 2100.0}


def _ibm():
    pytest.importorskip("qiskit_aer")
    from qpeft.jobs.ibm import IBMProvider

    service = StandInRuntimeService(usage_s=2.5)
    provider = IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler)
    return provider, {"quantum_seconds": 2.5, "seconds": 2.5}


@pytest.mark.parametrize("make", [_origin, _ibm], ids=["origin", "ibm"])
def test_qpeft_jobs_shows_the_providers_bill_next_to_the_plans_estimate(tmp_path, capsys, make):
    provider, per_job = make()
    provider.limits = Limits(max_circuits=2)  # 3 jobs
    JobEngine(provider, tmp_path, **FAST).run(CIRCUITS, 200, scope="s")
    assert main(["jobs", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["reported_jobs"] == got["jobs_done"] == 3
    assert got["reported"] == {name: 3 * value for name, value in per_job.items()}  # summed, the SDK's own names
    seconds, cost = estimate(provider.name, 3, 6, 6 * 200)
    assert got["estimate"][provider.name] == {
        "qpu_seconds": list(seconds),
        "cost": list(cost),
        "currency": "CNY" if provider.name == "origin" else "USD",
    }
    assert main(["jobs", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "reported" in text and "(by 3 of the 3 jobs submitted" in text
    assert re.search(rf"^estimate +{provider.name}:", text, re.M)  # (the table's column width may change)


def _qnn_circuit(tmp_path):
    """The QNN circuit of a qtha-weights module (6 qubits, 2 hardware-efficient layers)."""
    from qpeft.adapters import get_model
    from qpeft.models import load_model
    from qpeft.testing import tiny_model_dir

    base, _ = load_model(str(tiny_model_dir(tmp_path / "tiny")))
    model = get_model(base, "qtha-weights")
    return next(m.qnn.executed_circuit for m in model.modules() if getattr(m, "weights_mode", False))


def test_the_ibm_split_counts_two_qubit_gates_on_the_isa_circuit(tmp_path):
    pytest.importorskip("qiskit_aer")
    from qpeft.jobs.ibm import IBMProvider
    from qpeft.jobs.plan import plan_run

    circuit = _qnn_circuit(tmp_path)
    torino = IBMProvider("fake_torino")
    isa = torino._isa_template(circuit)[0]
    on_chip = sum(inst.operation.num_qubits == 2 for inst in isa.data)  # CZ after routing
    assert torino.two_qubit_gates(circuit) == on_chip > two_qubit_gates(circuit)  # (21 CZ vs 6 here)

    # the engine splits by the ISA count (run on the small fake_nairobi: 18 CX vs 6 here): a limit of
    # 3 circuits' worth of ISA gates gives jobs of 3, where the logical count would allow all 6 in one
    provider = IBMProvider("fake_nairobi")
    provider.limits = Limits(max_two_qubit_gates=3 * provider.two_qubit_gates(circuit))
    assert provider.limits.chunk_size(20, two_qubit_gates(circuit)) >= 6
    rng = np.random.default_rng(0)
    circuits = BoundCircuit.batch(circuit, rng.uniform(0, 2 * math.pi, (6, circuit.n_weights)))
    JobEngine(provider, tmp_path / "run", **FAST).run(circuits, 20, scope="s")
    sizes = [
        r["circuits"] for r in read_ledger(tmp_path / "run" / "jobs" / "ledger.jsonl") if r["event"] == "submitted"
    ]
    assert sizes == [3, 3]

    # `qpeft plan` counts on the same ISA circuit, offline
    plan = plan_run([circuit] * 4, "ibm:fake_torino", 1000, 10, "parameter_shift", eval_passes=0)
    assert plan.two_qubit_gates_per_circuit == on_chip and "fake_torino" in plan.gates_counted_on
    limits = IBMProvider.limits
    assert plan.jobs_per_step == jobs_for(plan.circuits_per_step, limits, 1000, on_chip)
