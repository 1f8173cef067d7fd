"""Generation speed of each adapter against the base model on SmolLM2-135M-Instruct (the
bundled model): time per generated token with the KV cache in use, greedy, fp32.

All models live in one process (the base model, and one adapted copy per method whose adapter
weights are seeded random values, as after training). Each of ``--cycles`` cycles generates
with every model in turn (the order rotating), so each ratio to the base model compares runs
seconds apart. A run's time per token is ``(t(N) - t(1)) / (N - 1)``: ``N`` = ``--tokens`` new
tokens against one, so the prompt's prefill drops out. Per model: median over the cycles
(min-max) of wall and CPU time, and of the ratio to the base model taken within each cycle.

Mergeable adapters (lora, mpo, qtha-weights, qtha-none) reuse their delta's factors in no-grad
forwards (adapters/base.py), so a token costs two thin GEMMs per adapted module. ``qtha-default``
(activation mode, not mergeable) reuses its fixed parts: both MPO factors and its
amplitude-encoded circuit folded into one small matrix, so a token costs three thin GEMMs per
module. The target for every cached adapter is <= 1.1x the base model. ``--uncached`` adds, for
each method, the same model with the cache switched off (every forward recomputes the delta and
runs the circuit gate by gate: how generation ran before the cache).

    python benchmarks/generation.py                                   # -> results/generation.{json,md}
    python benchmarks/generation.py --cycles 2 --tokens 16 --name generation-quick
    python benchmarks/generation.py --uncached --methods qtha-weights
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also under runpy / importlib
from _bench import finish, run_meta, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ["lora", "mpo", "qtha-weights", "qtha-none", "qtha-default"]
BASE = "base"
#: time per token as a multiple of the base model's (mergeable adapters)
TARGET = 1.1
PROMPT = "Ava has 12 apples. She buys 5 more and gives 3 to Ben. How many apples does she have now?"


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _fmt(s: dict, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def build(name: str, seed: int = 0):
    """(model, cached): the base model, ``METHOD`` or ``METHOD:uncached``; adapter weights
    seeded random (a trained adapter's are not zero); cached: whether every adapted module
    reuses its delta cache in no-grad forwards."""
    import torch

    from qpeft.adapters import get_model
    from qpeft.models import load_model

    base, _ = load_model("smollm2-135m")
    if name == BASE:
        return base.eval(), None
    method, _, variant = name.partition(":")
    model = get_model(base, method)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_state().values():
            p.copy_(0.02 * torch.randn(p.shape, generator=generator))
    if variant == "uncached":
        for layer in model.adapter_layers.values():
            layer.uses_delta_cache = lambda: False  # every forward computes the delta anew
    model.eval()
    with torch.no_grad():
        return model, all(layer.uses_delta_cache() for layer in model.adapter_layers.values())


def measure(args) -> tuple[dict, dict]:
    import torch

    from qpeft.models import load_model

    torch.set_num_threads(args.threads)
    _, tokenizer = load_model("smollm2-135m")
    chat = [{"role": "user", "content": PROMPT}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"].repeat(args.batch, 1)
    names = [BASE, *args.methods]
    if args.uncached:
        names += [f"{m}:uncached" for m in args.methods]
    models = {name: build(name) for name in names}

    def generate(model, tokens: int) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
            )
        return time.perf_counter() - start, time.process_time() - cpu

    def per_token(model) -> tuple[float, float]:
        long_wall, long_cpu = generate(model, args.tokens)
        one_wall, one_cpu = generate(model, 1)
        steps = args.tokens - 1
        return (long_wall - one_wall) / steps, (long_cpu - one_cpu) / steps

    for model, _ in models.values():  # warm-up: first calls allocate, and fill the delta caches
        generate(model, 2)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for cycle in range(args.cycles):
        order = names[cycle % len(names) :] + names[: cycle % len(names)]
        for name in order:
            w, c = per_token(models[name][0])
            wall[name].append(w)
            cpu[name].append(c)
        print(f"cycle {cycle + 1}: " + "  ".join(f"{n} {1e3 * wall[n][-1]:.1f} ms" for n in names), flush=True)
    rows = {
        n: {
            "cached": models[n][1],
            "ms_per_token": spread([1e3 * t for t in wall[n]]),
            "ratio": spread([a / b for a, b in zip(wall[n], wall[BASE])]),
            "cpu_ms_per_token": spread([1e3 * t for t in cpu[n]]),
            "cpu_ratio": spread([a / b for a, b in zip(cpu[n], cpu[BASE])]),
            "ms_per_token_all": [1e3 * t for t in wall[n]],
            "cpu_ms_per_token_all": [1e3 * t for t in cpu[n]],
        }
        for n in names
    }
    goal = {n: r["cpu_ratio"]["median"] <= TARGET for n, r in rows.items() if r["cached"]}
    return rows, goal


def verdict(name: str, row: dict) -> str:
    if name == BASE:
        return "reference"
    if name.endswith(":uncached"):
        return "no cache (before)"
    if not row["cached"]:
        return "not cached: measured"
    return f"<= {TARGET}x: {'met' if row['cpu_ratio']['median'] <= TARGET else 'NOT met'}"


def write_markdown(path: Path, meta: dict, rows: dict) -> None:
    lines = [
        "# Generation speed on SmolLM2-135M-Instruct",
        "",
        f"Greedy generation, batch {meta['batch']}, KV cache on, fp32, cpu: time per new token over "
        f"{meta['tokens']} new tokens (the prompt's prefill subtracted: t({meta['tokens']}) - t(1)). All models "
        f"in one process; each of {meta['cycles']} cycles runs every model in turn (order rotating), so each "
        "ratio to the base model compares runs seconds apart. Cells: median over the cycles (min-max). Adapters "
        "on q_proj and v_proj of every layer (the presets' targets), weights seeded random.",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['threads']} torch threads; torch {meta['torch']}; {meta['date']}.  ",
        f"Shared machine: load average {meta['loadavg_start'][0]:.1f} at the start and "
        f"{meta['loadavg_end'][0]:.1f} at the end (on {os.cpu_count()} CPUs).",
        "",
        "Wall: elapsed time; CPU: the process's CPU time (it leaves out time spent waiting for a core while "
        f"other jobs run: the steadier of the two on a shared machine, and what the verdict reads). Target: "
        f"adapters with a delta cache <= {TARGET}x the base model per token (qtha-default: "
        "its MPO factors and folded circuit cached).",
        "",
        "| model | ms / token (wall) | x base (wall) | ms / token (CPU) | x base (CPU) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {_fmt(r['ms_per_token'], '{:.1f}')} | {_fmt(r['ratio'])} | "
            f"{_fmt(r['cpu_ms_per_token'], '{:.1f}')} | {_fmt(r['cpu_ratio'])} | {verdict(name, r)} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS, help="adapter presets (the base model always runs)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per timed generation (at least 2)")
    parser.add_argument("--batch", type=int, default=1, help="sequences generated together")
    parser.add_argument("--cycles", type=int, default=5, help="timed generations per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--uncached", action="store_true", help="also each method with the cache off")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="generation", help="results file stem")
    args = parser.parse_args(argv)
    if args.tokens < 2 or args.cycles < 1 or args.batch < 1:
        parser.error("--tokens must be at least 2, --cycles and --batch at least 1")
    meta = run_meta("generation.py", argv) | {k: getattr(args, k) for k in ("tokens", "batch", "cycles")}
    meta["threads"] = args.threads
    rows, goal = measure(args)
    finish(meta)
    write_results(args.out, args.name, {"meta": meta, "targets": goal, "results": rows}, write_markdown, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
