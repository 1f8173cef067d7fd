"""What the emulated chips do to a trained adapter, and how fast the noisy simulator is.

1. Train ``qtha-weights`` on the bundled SmolLM2-135M-Instruct with exact circuits (arithmetic
   task, ``--steps`` steps), then report its held-out loss with exact circuits, on ``wukong72``,
   on ``wukong72`` with readout mitigation, and on an IBM fake device (with and without
   mitigation), with the mean two-qubit gate count, depth, swaps and estimated success
   probability of its circuits on each device.
2. Time qpeft's noisy density-matrix simulation of the model's transpiled circuits (all
   modules' circuits, one batch) against Qiskit Aer's ``density_matrix`` method on the same
   bound ISA circuits with the same noise model, and check that they agree.

    python benchmarks/devices.py                  # writes benchmarks/results/devices.{json,md}
    python benchmarks/devices.py --steps 5 --eval-examples 8   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qpeft.sysinfo import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also under runpy / importlib
from _bench import command, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def train_adapter(steps: int, eval_examples: int, max_length: int, seed: int):
    from qpeft.train import TrainConfig, make_trainer, prepare

    out = tempfile.mkdtemp(prefix="qpeft-devices-")
    config = TrainConfig(
        method="qtha-weights",
        steps=steps,
        eval_examples=eval_examples,
        max_length=max_length,
        out=out,
        save_steps=10**6,
        progress=False,
        seed=seed,
    )
    model, tokenizer, dataset, held_out = prepare(config)
    started = time.time()
    make_trainer(config, model, tokenizer, dataset).train()
    return model, tokenizer, held_out, time.time() - started


def losses_on_devices(model, tokenizer, held_out, max_length: int, ibm: str) -> dict:
    from qpeft.emulate import evaluate_on_device

    rows = {}
    for device in ("wukong72", ibm):
        started = time.time()
        rows[device] = evaluate_on_device(model, tokenizer, held_out, max_length, device)
        rows[device]["seconds"] = time.time() - started
    return rows


def simulator_timing(model, device_name: str, repeats: int) -> dict:
    """qpeft vs Aer on the same noisy transpiled circuits (probabilities before readout)."""
    from qiskit_aer import AerSimulator

    from qpeft.devices import get_device
    from qpeft.devices.executor import DeviceExecutor
    from qpeft.devices.noise import aer_noise_model
    from qpeft.emulate import quantum_layers
    from qpeft.quantum.density import density_probabilities, marginal_probabilities, simulate_density

    layers = list(quantum_layers(model))
    circuit = layers[0].executed_circuit
    weights = torch.stack([layer.weights.detach() for layer in layers]).double()  # (modules, n_weights)
    device = get_device(device_name)
    executor = DeviceExecutor(device, dtype=torch.complex128)
    dc, noise = executor.transpiled(circuit)

    def ours():
        rho = simulate_density(dc.circuit, None, dc.slot_weights(None, weights), noise, dtype=torch.complex128)
        return marginal_probabilities(density_probabilities(rho), dc.measured_wires).numpy()

    model_aer = aer_noise_model(device, dc.report.physical_qubits)
    sim = AerSimulator(method="density_matrix", noise_model=model_aer)
    circuits = []
    for row in weights:
        bound = dc.bound_qiskit(None, row)
        measured_on = {
            bound.find_bit(i.clbits[0]).index: bound.find_bit(i.qubits[0]).index
            for i in bound.data
            if i.operation.name == "measure"
        }
        qc = bound.remove_final_measurements(inplace=False)
        qc.save_probabilities(qubits=[measured_on[v] for v in reversed(range(len(measured_on)))])
        circuits.append(qc)

    def aer():
        result = sim.run(circuits).result()
        return np.stack([np.asarray(result.data(i)["probabilities"]) for i in range(len(circuits))])

    timings = {}
    outputs = {}
    for name, fn in (("qpeft", ours), ("aer", aer)):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            outputs[name] = fn()
            times.append(time.perf_counter() - started)
        timings[name] = statistics.median(times)
    return {
        "device": device_name,
        "circuits": len(circuits),
        "circuit_qubits": dc.circuit.n_qubits,
        "circuit_ops": len(dc.circuit.ops),
        "qpeft_seconds": timings["qpeft"],
        "aer_seconds": timings["aer"],
        "speedup": timings["aer"] / timings["qpeft"],
        "max_abs_difference": float(np.abs(outputs["qpeft"] - outputs["aer"]).max()),
    }


def markdown(result: dict) -> str:
    lines = [
        "# Emulated chips: what their noise costs a trained adapter",
        "",
        f"`qtha-weights` trained {result['steps']} steps on SmolLM2-135M-Instruct (arithmetic task, exact "
        f"circuits, {result['train_seconds']:.0f} s), held-out loss over {result['eval_examples']} examples with "
        "its circuits transpiled for each device (Qiskit preset pass manager, optimization level 2) and "
        "simulated with the device's calibrated noise (depolarizing to the calibrated gate fidelity, T1/T2 "
        "relaxation over the gate durations, readout error), exact expectations (no shots).",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['cpu']}, {result['threads']} torch threads; torch {torch.__version__}; {result['date']}",
        "",
        "| device | exact | noisy | noisy + readout mitigation | mean 2q gates | mean depth | mean swaps "
        "| est. success prob. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["devices"].items():
        c = row["circuits"]
        lines.append(
            f"| {name} | {row['exact']['eval_loss']:.4f} | {row['noisy']['eval_loss']:.4f} | "
            f"{row['noisy_mitigated']['eval_loss']:.4f} | {c['two_qubit_gates']:.1f} | {c['depth']:.1f} | "
            f"{c['swaps_added']:.1f} | {c['success_probability']:.3f} |"
        )
    t = result["simulator"]
    lines += [
        "",
        f"## Noisy simulator: qpeft vs Qiskit Aer ({t['device']})",
        "",
        f"The model's {t['circuits']} circuits (one per adapted module, same structure, their trained "
        f"angles) transpiled for {t['device']}: {t['circuit_qubits']} qubits, {t['circuit_ops']} gates; "
        "density-matrix probabilities with the same noise model, complex128, median of "
        f"{result['repeats']} runs.",
        "",
        "| simulator | seconds |",
        "|---|---|",
        f"| qpeft (torch density matrix, one batch) | {t['qpeft_seconds']:.4f} |",
        f"| Qiskit Aer (method=density_matrix, one run call) | {t['aer_seconds']:.4f} |",
        "",
        f"Aer time / qpeft time: {t['speedup']:.2f} (above 1: qpeft is faster). Largest difference "
        f"between the two: {t['max_abs_difference']:.1e}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-examples", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--ibm", default="ibm_torino")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    model, tokenizer, held_out, train_seconds = train_adapter(
        args.steps, args.eval_examples, args.max_length, args.seed
    )
    model.eval()
    devices = losses_on_devices(model, tokenizer, held_out, args.max_length, args.ibm)
    result = {
        "command": command("devices.py", argv),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "steps": args.steps,
        "eval_examples": len(held_out),
        "train_seconds": train_seconds,
        "repeats": args.repeats,
        "devices": devices,
        "simulator": simulator_timing(model, "wukong72", args.repeats),
    }
    write_results(args.out, "devices", result, lambda path: path.write_text(markdown(result)))


if __name__ == "__main__":
    main()
