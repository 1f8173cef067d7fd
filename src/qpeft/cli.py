"""The ``qpeft`` command line: train, eval, generate, compare, export, plan, jobs.

Every training flag is a field of :class:`qpeft.train.TrainConfig` with the same help text;
``--config FILE`` (YAML or JSON) sets fields first, flags on the command line win.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from qpeft.cli_jobs import add_jobs_parser
from qpeft.train import METHOD_PRESETS, TrainConfig


def _flag_type(field: dataclasses.Field):
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if isinstance(default, bool):
        return None
    if isinstance(default, dict):
        return json.loads
    if isinstance(default, int) or field.type in ("int | None", int):
        return int
    if isinstance(default, float):
        return float
    return str


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_train_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (defaults left unset so --config can fill them)."""
    parser.add_argument("--config", type=Path, help="YAML or JSON file of the fields below (flags override it)")
    for field in dataclasses.fields(TrainConfig):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kind = _flag_type(field)
        if kind is None:
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{help_text} (default: {default})",
            )
        else:
            parser.add_argument(
                flag,
                dest=field.name,
                type=kind,
                default=None,
                help=f"{help_text} (default: {json.dumps(default) if isinstance(default, dict) else default})",
            )


def config_from_args(args: argparse.Namespace, **fixed) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    given.update(fixed)
    if args.config is not None:
        return TrainConfig.from_file(args.config, **given)
    return TrainConfig(**given)


def cmd_train(args) -> int:
    from qpeft.train import train

    config = config_from_args(args)
    summary = train(config)
    keep = {k: summary.get(k) for k in ("global_step", "finished", "final_train_loss", "seconds_per_step", "eval")}
    print(json.dumps(keep, indent=2))
    print(f"run directory: {config.out}")
    return 0 if summary.get("finished") else 3


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


def _load_adapted(adapter: Path, model: str | None):
    from qpeft.adapters import load_adapter
    from qpeft.models import DEFAULT_MODEL, load_model

    _check_adapter(adapter)
    base, tokenizer = load_model(model or _trained_model(adapter) or DEFAULT_MODEL)
    return load_adapter(base, adapter), tokenizer


#: the TrainConfig fields that decide a run's split; `qpeft eval` reads them from the run
SPLIT_FIELDS = ("data", "seed", "val_fraction", "max_examples")


def _warn(command: str, text: str) -> None:
    print(f"qpeft {command}: warning: {text}", file=sys.stderr)


def _eval_examples(args: argparse.Namespace) -> tuple[list, int]:
    """(examples `qpeft eval` evaluates, max_length): the run's held-out split unless flags
    override the recorded settings; warns when the examples include training examples."""
    from qpeft.data import load_examples, overlap, run_split

    run = _run_config(args.adapter)
    defaults = dataclasses.asdict(TrainConfig())
    recorded = {k: (run or {}).get(k, defaults[k]) for k in (*SPLIT_FIELDS, "eval_examples", "max_length")}
    if run is None:
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


def cmd_eval(args) -> int:
    from qpeft.evaluate import evaluate

    _check_adapter(args.adapter)
    examples, max_length = _eval_examples(args)
    model, tokenizer = _load_adapted(args.adapter, args.model)
    emulated, device = None, args.emulate
    if device is None and args.quantum_backend is not None:  # local noisy:DEVICE: the side-by-side report too
        from qpeft.jobs.providers import parse_spec

        provider, backend = parse_spec(args.quantum_backend)
        kind, _, name = (backend or "").partition(":")
        device = name if provider == "local" and kind == "noisy" and name else None
    if device is not None:  # before any job-engine runner: the model's own backends
        from qpeft.devices.evaluate import evaluate_on_device

        emulated = evaluate_on_device(model, tokenizer, examples, max_length, device, shots=args.shots)
    if args.quantum_backend is not None:  # forward-only circuits through the job engine
        from qpeft.jobs.step import build_runner

        runner = build_runner(
            model, args.quantum_backend, args.shots, "parameter_shift", args.adapter.parent, args.quantum_options
        )
        runner.scope = f"eval-{args.adapter.name}"
    result = evaluate(model, tokenizer, examples, max_length, samples_path=args.samples)
    if emulated is not None:
        result["emulated"] = emulated
    print(json.dumps({"examples": len(examples), **result}, indent=2))
    return 0


def cmd_generate(args) -> int:
    import torch

    from qpeft.data import Example, encode_prompt
    from qpeft.models import load_model

    if args.adapter is not None:
        model, tokenizer = _load_adapted(args.adapter, args.model)
    else:
        model, tokenizer = load_model(args.model or "smollm2-135m")
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


def cmd_compare(args) -> int:
    from qpeft.report import compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    base = config_from_args(args)
    report = compare(base, methods, seeds, Path(base.out))
    if "interrupted" in report:
        print(f"interrupted in {report['interrupted']} (checkpoint saved); run the same command again to resume")
        return 3
    print(report["table"])
    print(f"report: {report['report']}")
    print(f"loss plot: {report['plot']}")
    return 0


def cmd_export(args) -> int:
    model, _ = _load_adapted(args.adapter, args.model)
    out = model.export_peft_lora(args.out)
    print(f"PEFT LoRA written to {out} (load it with peft.PeftModel.from_pretrained)")
    return 0


def cmd_plan(args) -> int:
    from qpeft.train import plan

    result = plan(config_from_args(args))
    print(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2) if args.json else result["text"])
    return 0


def adapter_fields_help() -> str:
    """The adapter config fields that --adapter '{...}' can set, with their documentation and
    the presets --method accepts (the same text as the config classes' field docs)."""
    import textwrap

    from qpeft.adapters import PRESETS, LoraConfig, MPOConfig, QTHAConfig, field_help

    lines = ["--method presets:"]
    lines += [f"  {name:14s} {text}" for name, (_, _, text) in PRESETS.items()]
    seen: set[str] = set()
    for cls in (LoraConfig, MPOConfig, QTHAConfig):
        fields = {k: v for k, v in field_help(cls).items() if k not in seen}
        seen |= set(fields)
        lines += [
            "",
            f"--adapter fields ({cls.method} and up):" if cls is not QTHAConfig else "--adapter fields (qtha):",
        ]
        for name, text in fields.items():
            wrapped = textwrap.wrap(text, 88)
            lines.append(f"  {name:14s} {wrapped[0] if wrapped else ''}")
            lines += [" " * 17 + more for more in wrapped[1:]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpeft", description="Hybrid quantum-classical PEFT for causal LMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="fine-tune one adapter",
        description="Fine-tune one adapter on one data set.",
        epilog=adapter_fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "compare",
        help="train several methods x seeds on the same data and write a report",
        description="Train every method for every seed on the same data; write report.md and "
        "loss-curve PNGs under --out.",
        epilog=adapter_fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--methods", default="lora,qtha", help=f"comma-separated methods ({', '.join(METHOD_PRESETS)})")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    add_train_flags(p, skip=("method", "seed"))
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "plan",
        help="circuits, jobs, shots, QPU time and cost of a run on a quantum backend",
        description="Count what a training run would submit to --quantum-backend (per step and per run) and "
        "estimate its QPU time and cost from the providers' published figures.",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_train_flags(p)
    p.set_defaults(func=cmd_plan)

    add_jobs_parser(sub)

    for name, func, text in (
        ("eval", cmd_eval, "evaluate a saved adapter on held-out data"),
        ("generate", cmd_generate, "generate from a prompt with a saved adapter"),
        ("export", cmd_export, "export a mergeable adapter as a standard PEFT LoRA"),
    ):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument(
            "--adapter",
            type=Path,
            required=name != "generate",
            help="adapter directory (run_dir/adapter or a checkpoint-N directory)",
        )
        p.add_argument("--model", default=None, help="base model spec (default: the one the adapter was trained on)")
        p.set_defaults(func=func)
        if name == "eval":
            p.add_argument(
                "--split",
                choices=("held-out", "all"),
                default="held-out",
                help="held-out: the training run's held-out split (from the run's train_config.json; the flags "
                "below override its settings); all: every example of --data (a dedicated test file)",
            )
            p.add_argument("--data", default=None, help="data to evaluate (default: the run's data)")
            p.add_argument("--seed", type=int, default=None, help="split seed (default: the run's seed)")
            p.add_argument(
                "--val-fraction", type=float, default=None, help="held-out share (default: the run's val_fraction)"
            )
            p.add_argument(
                "--max-examples",
                type=_positive_int,
                default=None,
                help="use the first N examples of --data (default: the run's max_examples; none for --split all)",
            )
            p.add_argument(
                "--examples",
                type=_positive_int,
                default=None,
                help="evaluate at most N examples (default: the run's eval_examples; every one for --split all)",
            )
            p.add_argument(
                "--max-length",
                type=_positive_int,
                default=None,
                help="tokens per sequence (default: the run's max_length)",
            )
            p.add_argument("--samples", type=Path, default=None, help="write generation samples to this JSONL file")
            fields = TrainConfig.__dataclass_fields__
            for flag in ("quantum_backend", "shots", "quantum_options"):
                kind = json.loads if flag == "quantum_options" else int if flag == "shots" else str
                flag_help = fields[flag].metadata["help"]
                p.add_argument("--" + flag.replace("_", "-"), type=kind, default=None, help=flag_help)
            p.add_argument(
                "--emulate",
                metavar="DEVICE",
                default=None,
                help="also report the held-out loss with the QTHA circuits on an emulated chip (e.g. wukong72, "
                "ibm_torino): exact, with its noise, and with noise + readout mitigation, side by side",
            )
        elif name == "generate":
            p.add_argument("--prompt", required=True, help="the user message")
            p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate")
        else:
            p.add_argument("--out", type=Path, required=True, help="directory for the PEFT LoRA")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"qpeft {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if not _is_job_error(err):
            raise
        print(
            f"qpeft {args.command}: error: {err}\nThe results of the jobs that finished are kept in the run "
            "directory's jobs/ folder, and its ledger lists every job (`qpeft jobs RUN_DIR`): rerun the same "
            "command to continue from there; nothing that finished is run again.",
            file=sys.stderr,
        )
        return 3


def _is_job_error(err: Exception) -> bool:
    """A QPU job that failed for good, gave no answer, or ran past its deadline (only possible
    once the job engine is loaded)."""
    base, engine = sys.modules.get("qpeft.jobs.base"), sys.modules.get("qpeft.jobs.engine")
    if base is None or engine is None:
        return False
    return isinstance(err, (base.JobFailedError, base.SubmissionUnknownError, engine.ProviderError, TimeoutError))


if __name__ == "__main__":
    raise SystemExit(main())
