"""A billion parameters: one training step of LoRA and QTHA on a ~1.1B-parameter Llama.

The model is the TinyLlama-1.1B shape (hidden 2048, 22 layers, 32 heads, 4 KV heads,
intermediate 5632, vocab 32000), randomly initialised offline, base weights in bf16 (the
adapters follow the base dtype; QTHA's circuit runs in float32 / complex64 inside). One
step = forward + backward + AdamW on ``--batch`` x ``--seq`` tokens, with and without
gradient checkpointing of the base (non-reentrant, as ``qpeft train --gradient-checkpointing``
sets it up). Every configuration runs in its own process, so its peak RSS is its own.

The largest model and sequence length that fit in ``--budget-gib`` are projected from the
measured runs (peak RSS = fixed + bytes per parameter x parameters + bytes per token x
tokens, fitted on the runs); the projection is labelled as such.

    python benchmarks/billion.py                  # writes benchmarks/results/billion.{json,md}
    python benchmarks/billion.py --methods lora --seq 256 1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also under runpy / importlib
from _bench import add_load_flag, load_note, load_start, run_meta, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parent.parent / "src"
METHODS = ["lora", "qtha-default", "qtha-weights"]
TINYLLAMA = {
    "hidden_size": 2048,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "intermediate_size": 5632,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
GIB = 2**30


def llama_params(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int) -> int:
    """Parameters of an untied Llama (embeddings, attention, MLP, norms, LM head)."""
    head_dim = hidden // heads
    attn = hidden * hidden * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * intermediate
    return 2 * vocab * hidden + layers * (attn + mlp + 2 * hidden) + hidden


def build(device: str, layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**(TINYLLAMA | {"num_hidden_layers": layers}), tie_word_embeddings=False, use_cache=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(device)
    finally:
        torch.set_default_dtype(previous)
    return model


def child(method: str, checkpointing: bool, seq: int, args) -> dict:
    import torch

    from qpeft.adapters import get_model

    started = time.perf_counter()
    base = build(args.device, args.layers)
    n_params = sum(p.numel() for p in base.parameters())
    model = get_model(base, method)
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    model.train()
    built = time.perf_counter() - started
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, TINYLLAMA["vocab_size"], (args.batch, seq), generator=torch.Generator().manual_seed(0))
    ids = ids.to(args.device)
    cuda = args.device == "cuda"
    times = []
    for _ in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{method}: non-finite loss {loss.item()}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "method": method,
        "gradient_checkpointing": checkpointing,
        "batch": args.batch,
        "seq": seq,
        "base_params": n_params,
        "trainable_params": sum(p.numel() for p in params),
        "build_seconds": built,
        "step_seconds": times[args.warmup :],
        "first_step_seconds": times[0],
        "peak_rss_bytes": peak,
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "loss": loss.item(),
    }


def run(method: str, checkpointing: bool, seq: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{method},{int(checkpointing)},{seq}", "--device", args.device]
    for flag in ("batch", "steps", "warmup", "layers"):
        cmd += [f"--{flag}", str(getattr(args, flag))]
    out = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(SRC)), capture_output=True, text=True)
    if out.returncode != 0:
        return {"method": method, "gradient_checkpointing": checkpointing, "seq": seq, "error": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def project(rows: list[dict], budget: float) -> dict:
    """Largest model (at the measured sequence length) and largest sequence (1.1B) that fit in
    ``budget`` bytes, from the measured peak RSS of the LoRA runs."""
    ok = [r for r in rows if "error" not in r and r["method"] == "lora"]
    out = {}
    for checkpointing in (False, True):
        runs = sorted((r for r in ok if r["gradient_checkpointing"] == checkpointing), key=lambda r: r["seq"])
        if not runs:
            continue
        params = runs[0]["base_params"]
        if len(runs) >= 2:
            a, b = runs[0], runs[-1]
            per_token = (b["peak_rss_bytes"] - a["peak_rss_bytes"]) / ((b["seq"] - a["seq"]) * a["batch"])
        else:
            per_token = None
        r = runs[0]
        # conservative: the whole peak grows in proportion to the parameters (weights do;
        # activations grow with width x depth, i.e. slower)
        largest = params * budget / r["peak_rss_bytes"]
        entry = {
            "measured_seq": r["seq"],
            "measured_peak_gib": r["peak_rss_bytes"] / GIB,
            "largest_params_at_measured_seq": largest,
        }
        if per_token and per_token > 0:
            entry["bytes_per_token_1p1b"] = per_token
            entry["largest_seq_1p1b"] = int(r["seq"] + (budget - r["peak_rss_bytes"]) / (per_token * r["batch"]))
        out["with" if checkpointing else "without"] = entry
    return out


def write_markdown(path: Path, meta: dict, rows: list[dict], projection: dict) -> None:
    lines = [
        "# A billion parameters: one training step of a ~1.1B Llama on this machine",
        "",
        f"TinyLlama-1.1B shape ({meta['base_params'] / 1e9:.2f}B parameters), random init, bf16 base weights, "
        f"batch {meta['batch']}, {meta['device']}; one step = forward + backward + AdamW on the adapters; "
        f"{meta['warmup']} warm-up + {meta['steps']} timed step(s) per configuration, each in a fresh process "
        "(peak RSS = the process's maximum resident set, model construction included).",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['threads']} torch threads, {meta['ram_gib']:.0f} GiB RAM, torch "
        f"{meta['torch']}, {meta['date']}. {load_note(meta)} Step times are upper bounds; memory is not affected "
        "by the load.",
        "",
        "| method | gradient checkpointing | seq | step (s) | peak RSS (GiB) | fits 24 GiB | trainable params |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            err = r["error"].strip().splitlines()[-1] if r["error"].strip() else "failed"
            lines.append(f"| {r['method']} | {r['gradient_checkpointing']} | {r['seq']} | failed: {err} | | | |")
            continue
        step = min(r["step_seconds"]) if r["step_seconds"] else r["first_step_seconds"]
        peak = r["peak_rss_bytes"] / GIB
        lines.append(
            f"| {r['method']} | {'yes' if r['gradient_checkpointing'] else 'no'} | {r['seq']} | {step:.1f} | "
            f"{peak:.2f} | {'yes' if peak <= meta['budget_gib'] else 'NO'} | {r['trainable_params']:,} |"
        )
    lines += ["", f"## Largest that fits in {meta['budget_gib']} GiB (projected from the LoRA runs, not run)", ""]
    for key, p in projection.items():
        text = (
            f"- {key} gradient checkpointing: measured {p['measured_peak_gib']:.2f} GiB at seq {p['measured_seq']}; "
            f"a Llama of about **{p['largest_params_at_measured_seq'] / 1e9:.1f}B** parameters (bf16) fits at that "
            "sequence length (the whole peak scaled in proportion to the parameters: conservative)"
        )
        if "largest_seq_1p1b" in p:
            text += (
                f"; the 1.1B model fits up to about **{p['largest_seq_1p1b']:,} tokens** per sequence "
                f"({p['bytes_per_token_1p1b'] / 2**20:.1f} MiB per token, fitted between the measured lengths)"
            )
        lines.append(text)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, nargs="+", default=[256], help="sequence lengths (the first for all)")
    parser.add_argument(
        "--search-seq",
        type=int,
        nargs="*",
        default=[1024],
        help="extra lengths run for LoRA only (with checkpointing), for the sequence projection",
    )
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--layers", type=int, default=22, help="decoder layers (22: TinyLlama; fewer for a smoke test)")
    parser.add_argument("--budget-gib", type=float, default=24.0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="billion")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_load_flag(parser)
    args = parser.parse_args(argv)
    if args.child:
        method, checkpointing, seq = args.child.split(",")
        print(json.dumps(child(method, bool(int(checkpointing)), int(seq), args)))
        return 0
    loadavg_start = load_start(args.allow_load)
    plan = [(m, gc, args.seq[0]) for gc in (False, True) for m in args.methods]
    plan += [(m, gc, s) for s in args.seq[1:] for gc in (False, True) for m in args.methods]
    plan += [("lora", True, s) for s in args.search_seq] + [("lora", False, s) for s in args.search_seq]
    rows = []
    for method, checkpointing, seq in plan:
        r = run(method, checkpointing, seq, args)
        rows.append(r)
        if "error" in r:
            print(f"{method:14s} gc={checkpointing!s:5s} seq={seq}: FAILED {r['error'][-300:]}", flush=True)
        else:
            print(
                f"{method:14s} gc={checkpointing!s:5s} seq={seq}: steps {[round(t, 1) for t in r['step_seconds']]} s "
                f"(first {r['first_step_seconds']:.1f} s), peak RSS {r['peak_rss_bytes'] / GIB:.2f} GiB",
                flush=True,
            )
    meta = run_meta("billion.py", argv, args.device, ram=True, loadavg_start=loadavg_start, finished=True)
    meta |= {"base_params": llama_params(2048, args.layers, 32, 4, 5632, 32000), "config": TINYLLAMA}
    meta |= {k: getattr(args, k) for k in ("batch", "steps", "warmup", "budget_gib", "device", "layers")}
    projection = project(rows, args.budget_gib * GIB)
    payload = {"meta": meta, "projection": projection, "results": rows}
    write_results(args.out, args.name, payload, write_markdown, meta, rows, projection)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
