"""Helpers shared by qpeft's tests and by anyone testing a backend against qpeft:
seeded random circuits and the numerical tolerances, kept in one place."""

from __future__ import annotations

import random

import torch

from qpeft.quantum.circuit import Circuit, Const, Input, Weight
from qpeft.quantum.gates import GATES

#: allclose tolerances per complex dtype of the simulation.
TOL = {
    torch.complex64: {"atol": 2e-5, "rtol": 1e-4},
    torch.complex128: {"atol": 1e-10, "rtol": 1e-8},
}
#: tolerance for gradients from central finite differences in float64 (step 1e-6).
FD_TOL = {"atol": 1e-6, "rtol": 1e-5}
#: float32 gradients of one model summed in two orders (DDP all-reduce vs one process).
DDP_GRAD_TOL = {"atol": 1e-6, "rtol": 1e-4}
#: gradients of one circuit by two methods (backprop, parameter shift, an SDK's own).
GRAD_TOL = {"atol": 1e-6, "rtol": 1e-5}
#: two exact float64 simulations of one circuit (ours against Qiskit, PennyLane, or itself).
EXACT_TOL = {"atol": 1e-10, "rtol": 0}
#: one gate's matrix in complex128, ours against Qiskit's / PennyLane's.
MATRIX_TOL = {"atol": 1e-12, "rtol": 0}
#: one complex128 simulation computed two ways: batched and one by one, fused and gate by gate.
BATCH_TOL = {"atol": 1e-12, "rtol": 0}
#: PennyLane's default.mixed strays from the exact density matrix by up to 3.8e-8 (worst of
#: 60 seeded random noisy circuits), even without noise at some angles.
DEFAULT_MIXED_TOL = {"atol": 5e-8, "rtol": 0}
#: SDK simulators (Aer, PennyLane devices, pyqpanda3's CPUQVM) against ours.
SDK_TOL = {"atol": 1e-7, "rtol": 0}


def random_circuit(
    n_qubits: int,
    n_ops: int,
    seed: int,
    *,
    n_inputs: int | None = None,
    n_weights: int = 6,
    gates: list[str] | None = None,
) -> Circuit:
    """A seeded random circuit over the whole gate table (or ``gates``): angles read inputs,
    weights (some reused) and constants; starts with RY encoding of the inputs."""
    rng = random.Random(seed)
    names = [g for g in (gates or sorted(GATES)) if GATES[g].n_wires <= n_qubits]
    n_inputs = n_qubits if n_inputs is None else n_inputs
    c = Circuit(n_qubits)
    for i in range(n_inputs):
        c.add("RY", [i % n_qubits], Input(i))
    for _ in range(n_ops):
        gate = GATES[rng.choice(names)]
        wires = rng.sample(range(n_qubits), gate.n_wires)
        params = []
        for _ in range(gate.n_params):
            kind = rng.random()
            if kind < 0.6:
                params.append(Weight(rng.randrange(n_weights)))
            elif kind < 0.8 and n_inputs:
                params.append(Input(rng.randrange(n_inputs)))
            else:
                params.append(Const(rng.uniform(-3.14, 3.14)))
        c.add(gate.name, wires, *params)
    c.n_weights = max(c.n_weights, n_weights)
    return c


# ---- tiny random causal LMs, built offline from a config ------------------------------------

TINY_TARGETS = {"llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "gpt2": ["c_attn"]}
TINY_VOCAB = 128
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    """A character-level tokenizer (printable ASCII + newline, ChatML specials), built offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(special + [chr(c) for c in range(32, 127)] + ["\n"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def tiny_model_dir(path, kind: str = "llama", seed: int = 0):
    """Save a tiny random model and the tiny tokenizer as a local model directory."""
    model = tiny_causal_lm(kind, seed=seed)
    tok = tiny_tokenizer()
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_causal_lm(kind: str, seed: int = 0, dtype: torch.dtype = torch.float32, n_layers: int = 2):
    """A random Llama / Qwen2 / GPT-2 of ``n_layers`` layers (hidden 32, vocab 128) in eval mode."""
    import transformers as tf

    # Llama and Qwen2 share their config fields; GPT-2 names its own.
    decoder = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "vocab_size": TINY_VOCAB,
        "num_hidden_layers": n_layers,
    }
    if kind == "llama":
        cfg, cls = tf.LlamaConfig(**decoder), tf.LlamaForCausalLM
    elif kind == "qwen2":
        cfg, cls = tf.Qwen2Config(**decoder), tf.Qwen2ForCausalLM
    elif kind == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=n_layers, n_head=4, n_positions=512, vocab_size=TINY_VOCAB)
        cls = tf.GPT2LMHeadModel
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {sorted(TINY_TARGETS)}")
    torch.manual_seed(seed)
    return cls(cfg).to(dtype).eval()


#: Qiskit Aer noisy density-matrix results against qpeft's: Aer turns a thermal relaxation
#: with T2 > T1 into Kraus operators numerically (seen: 2e-10 differences on IBM snapshots).
AER_NOISE_TOL = {"atol": 1e-8, "rtol": 1e-7}
