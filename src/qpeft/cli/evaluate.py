"""``qpeft eval``, ``qpeft generate`` and ``qpeft export``: the subcommands that load a saved
adapter (eval and generate also run the base model alone, without ``--adapter``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path

from qpeft.cli.flags import json_object, positive_int
from qpeft.train import TrainConfig


def _run_config(adapter: Path) -> dict | None:
    """The training settings recorded next to an adapter (run_dir/adapter or a checkpoint)."""
    for path in (adapter / "train_config.json", adapter.parent / "train_config.json"):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _trained_model(adapter: Path) -> str | None:
    """The model spec recorded next to an adapter (run_dir/adapter or a checkpoint)."""
    return (_run_config(adapter) or {}).get("model")


def _check_adapter(adapter: Path) -> None:
    from qpeft.adapters.io import CONFIG_NAME

    if not (adapter / CONFIG_NAME).is_file():
        problem = f"no {CONFIG_NAME} in it" if adapter.is_dir() else "no such directory"
        raise FileNotFoundError(
            f"--adapter {adapter}: {problem}; point to a run's adapter directory (RUN/adapter) "
            "or one of its RUN/checkpoint-N directories"
        )


def _model_spec(adapter: Path | None, model: str | None) -> str:
    """--model, else the model the adapter was trained on, else the built-in default."""
    from qpeft.models import DEFAULT_MODEL

    return model or (_trained_model(adapter) if adapter is not None else None) or DEFAULT_MODEL


def _load_adapted(adapter: Path | None, model: str | None):
    """(model, tokenizer): the base model with the adapter loaded, or alone without one."""
    from qpeft.adapters import load_adapter
    from qpeft.models import load_model

    if adapter is not None:
        _check_adapter(adapter)
    base, tokenizer = load_model(_model_spec(adapter, model))
    return (load_adapter(base, adapter) if adapter is not None else base), tokenizer


#: the TrainConfig fields that decide a run's split; `qpeft eval` reads them from the run
SPLIT_FIELDS = ("data", "seed", "val_fraction", "max_examples")


def _warn(command: str, text: str) -> None:
    print(f"qpeft {command}: warning: {text}", file=sys.stderr)


def _eval_examples(args: argparse.Namespace) -> tuple[list, int]:
    """(examples `qpeft eval` evaluates, max_length): the run's held-out split unless flags
    override the recorded settings; warns when the examples include training examples."""
    from qpeft.data import load_examples, overlap, run_split

    run = _run_config(args.adapter) if args.adapter is not None else None
    defaults = dataclasses.asdict(TrainConfig())
    recorded = {k: (run or {}).get(k, defaults[k]) for k in (*SPLIT_FIELDS, "eval_examples", "max_length")}
    if run is None and args.adapter is not None:
        _warn(
            "eval",
            f"no train_config.json in or next to {args.adapter}, so the training split is unknown and the "
            "examples may include training data; pass the run's --data, --seed, --val-fraction, --max-examples",
        )
    given = {k: getattr(args, k) for k in SPLIT_FIELDS if getattr(args, k) is not None}
    settings = {k: given.get(k, recorded[k]) for k in SPLIT_FIELDS}
    trained = None
    if run is not None:
        try:
            trained, held_out = run_split(**{k: recorded[k] for k in SPLIT_FIELDS})
        except (FileNotFoundError, ValueError) as err:
            if "data" not in given:
                raise
            _warn("eval", f"cannot rebuild the run's training split to check for overlap: {err}")
    if args.split == "all":
        examples = load_examples(settings["data"])[: args.max_examples]
        limit = args.examples
    else:
        if trained is None or settings != {k: recorded[k] for k in SPLIT_FIELDS}:
            held_out = run_split(**settings)[1]
        examples, limit = held_out, args.examples or recorded["eval_examples"]
    examples = examples[:limit]
    shared = overlap(examples, trained) if trained is not None else 0
    if shared:
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())
        _warn(
            "eval",
            f"{shared} of the {len(examples)} evaluated examples were training examples of this run "
            f"(--split {args.split} {flags}); evaluate without these flags for the run's held-out split",
        )
    return examples, args.max_length or recorded["max_length"]


def _describe(args, model_spec: str, examples: list, generate: bool) -> str:
    """One line that says what `qpeft eval` evaluates."""
    what = f"adapter {args.adapter} on {model_spec}" if args.adapter else f"base model {model_spec} (no adapter)"
    split = "held-out " if args.split == "held-out" else ""
    measured = "loss only"
    if generate:
        measured = "loss, accuracy of greedy answers" if any(e.answer is not None for e in examples) else "loss"
        measured += " and generated samples"
    return f"qpeft eval: {what}: {len(examples)} {split}examples: {measured}"


def cmd_eval(args) -> int:
    """``qpeft eval``: evaluate an adapter (or the base model alone) and print the result as JSON.

    Picks the examples (the run's held-out split unless flags override its recorded settings,
    or every example with ``--split all``; warns when they include training examples), loads the
    model, optionally adds the emulated-chip report (``--emulate``, or a ``noisy:DEVICE``
    backend) and runs the circuits through the job engine (``--quantum-backend``).

    Args:
        args: the parsed flags of ``qpeft eval``.

    Returns:
        0 (exit code).

    Raises:
        ValueError: ``--quantum-backend`` / ``--emulate`` without ``--adapter``, ``--samples``
            with ``--loss-only``, or a launch by torchrun (one process evaluates).
        FileNotFoundError: ``--adapter`` is not an adapter directory.
    """
    from qpeft.evaluate import evaluate
    from qpeft.jobs.distributed import world

    if world()[1] > 1:  # (every rank would evaluate, write and pay for the same)
        raise ValueError(
            "qpeft eval runs in one process: run it without torchrun (a training run under torchrun evaluates "
            "on rank 0 by itself)"
        )
    if args.adapter is None and (args.quantum_backend or args.emulate):
        raise ValueError("--quantum-backend and --emulate run an adapter's circuits; pass --adapter RUN/adapter")
    if args.loss_only and args.samples is not None:
        raise ValueError("--samples writes generated answers, which --loss-only skips; drop one of them")
    if args.adapter is not None:
        _check_adapter(args.adapter)
    examples, max_length = _eval_examples(args)
    spec = _model_spec(args.adapter, args.model)
    print(_describe(args, spec, examples, not args.loss_only), file=sys.stderr)
    model, tokenizer = _load_adapted(args.adapter, spec)
    emulated, device = None, args.emulate
    if device is None and args.quantum_backend is not None:  # local noisy:DEVICE: the side-by-side report too
        from qpeft.jobs.providers import parse_spec

        provider, backend = parse_spec(args.quantum_backend)
        kind, _, name = (backend or "").partition(":")
        device = name if provider == "local" and kind == "noisy" and name else None
    if device is not None:  # before any job-engine runner: the model's own backends
        from qpeft.emulate import evaluate_on_device

        emulated = evaluate_on_device(model, tokenizer, examples, max_length, device, shots=args.shots)
    if args.quantum_backend is not None:  # forward-only circuits through the job engine
        from qpeft.jobs.step import build_runner

        args.interrupted = (
            f"no results were written; the same command again starts over and re-attaches to the jobs "
            f"already submitted (ledger: {args.adapter.parent / 'jobs'}), without paying for them again"
        )
        runner = build_runner(
            model, args.quantum_backend, args.shots, "parameter_shift", args.adapter.parent, args.quantum_options
        )
        runner.scope = f"eval-{args.adapter.name}"
    with runner if args.quantum_backend is not None else contextlib.nullcontext():  # (the engine's files let go)
        result = evaluate(
            model,
            tokenizer,
            examples,
            max_length,
            samples_path=args.samples,
            generate=not args.loss_only,
            progress=None,
        )
    if emulated is not None:
        result["emulated"] = emulated
    adapter = str(args.adapter) if args.adapter is not None else None
    print(json.dumps({"model": spec, "adapter": adapter, "examples": len(examples), **result}, indent=2))
    return 0


def cmd_generate(args) -> int:
    """``qpeft generate``: greedy generation of up to ``--max-new-tokens`` tokens for
    ``--prompt`` (one user message, the chat template applied), with the adapter or the base
    model alone; prints the answer.

    Args:
        args: the parsed flags of ``qpeft generate``.

    Returns:
        0 (exit code).

    Raises:
        FileNotFoundError: ``--adapter`` is not an adapter directory.
    """
    import torch

    from qpeft.data import Example, encode_prompt

    model, tokenizer = _load_adapted(args.adapter, args.model)
    example = Example([{"role": "user", "content": args.prompt}, {"role": "assistant", "content": ""}])
    ids = torch.tensor([encode_prompt(tokenizer, example)])
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=args.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    print(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return 0


def cmd_export(args) -> int:
    """``qpeft export``: write the mergeable adapter in ``--adapter`` as a standard PEFT LoRA in
    ``--out`` (exact rank-r factors of each merged delta).

    Args:
        args: the parsed flags of ``qpeft export``.

    Returns:
        0 (exit code).

    Raises:
        ValueError: the adapter is not mergeable (activation-mode QTHA).
        FileNotFoundError: ``--adapter`` is not an adapter directory.
    """
    model, _ = _load_adapted(args.adapter, args.model)
    out = model.export_peft_lora(args.out)
    print(f"PEFT LoRA written to {out} (load it with peft.PeftModel.from_pretrained)")
    return 0


def add_parsers(sub) -> None:
    """Register ``qpeft eval``, ``qpeft generate`` and ``qpeft export`` on ``sub`` (the
    subparsers of :func:`qpeft.cli.build_parser`), with their flags."""
    for name, func, text in (
        ("eval", cmd_eval, "evaluate a saved adapter, or the base model alone, on held-out data"),
        ("generate", cmd_generate, "generate from a prompt with a saved adapter, or the base model alone"),
        ("export", cmd_export, "export a mergeable adapter as a standard PEFT LoRA"),
    ):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument(
            "--adapter",
            type=Path,
            required=name == "export",
            help="adapter directory (run_dir/adapter or a checkpoint-N directory)"
            + ("" if name == "export" else "; default: none, the base model alone (eval: the zero-shot baseline)"),
        )
        p.add_argument(
            "--model",
            default=None,
            help="base model spec (default: the one the adapter was trained on; without --adapter, smollm2-135m)",
        )
        p.set_defaults(func=func)
        if name == "eval":
            p.add_argument(
                "--split",
                choices=("held-out", "all"),
                default="held-out",
                help="held-out: the training run's held-out split (from the run's train_config.json; the flags "
                "below override its settings; without --adapter, the split a run with these flags would hold "
                "out); all: every example of --data (a dedicated test file) (default: held-out)",
            )
            p.add_argument("--data", default=None, help="data to evaluate (default: the run's data; else arithmetic)")
            p.add_argument("--seed", type=int, default=None, help="split seed (default: the run's seed; else 0)")
            p.add_argument(
                "--val-fraction",
                type=float,
                default=None,
                help="held-out share (default: the run's val_fraction; else 0.1)",
            )
            p.add_argument(
                "--max-examples",
                type=positive_int,
                default=None,
                help="use the first N examples of --data (default: the run's max_examples; none for --split all)",
            )
            p.add_argument(
                "--examples",
                type=positive_int,
                default=None,
                help="evaluate at most N examples (default: the run's eval_examples, else 64; every one for "
                "--split all)",
            )
            p.add_argument(
                "--max-length",
                type=positive_int,
                default=None,
                help="tokens per sequence (default: the run's max_length; else 256)",
            )
            p.add_argument(
                "--loss-only",
                action="store_true",
                help="score the held-out loss only: no generated answers, no accuracy (one forward pass per batch)",
            )
            p.add_argument("--samples", type=Path, default=None, help="write generation samples to this JSONL file")
            fields = TrainConfig.__dataclass_fields__
            for flag in ("quantum_backend", "shots", "quantum_options"):
                kind = json_object if flag == "quantum_options" else int if flag == "shots" else str
                flag_help = fields[flag].metadata["help"]
                p.add_argument("--" + flag.replace("_", "-"), type=kind, default=None, help=flag_help)
            p.add_argument(
                "--emulate",
                metavar="DEVICE",
                default=None,
                help="also report the held-out loss with the QTHA circuits on an emulated chip (e.g. wukong72, "
                "ibm_torino): exact, with its noise, and with noise + readout mitigation, side by side",
            )
            p.set_defaults(interrupted="no results were written; the same command again starts the evaluation over")
        elif name == "generate":
            p.add_argument("--prompt", required=True, help="the user message")
            p.add_argument(
                "--max-new-tokens", type=positive_int, default=128, help="tokens to generate, greedy (default: 128)"
            )
        else:
            p.add_argument("--out", type=Path, required=True, help="directory for the PEFT LoRA")
