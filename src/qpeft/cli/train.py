"""``qpeft train``, ``qpeft compare`` and ``qpeft plan``: the subcommands that take a training
configuration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qpeft.cli.flags import adapter_fields_help, add_train_flags, config_from_args
from qpeft.cli.tune import add_tune_flags, spec_from_args
from qpeft.train import METHOD_PRESETS


def cmd_train(args) -> int:
    from qpeft.train import train

    config = config_from_args(args)
    summary = train(config)
    keep = {k: summary.get(k) for k in ("global_step", "finished", "final_train_loss", "seconds_per_step", "eval")}
    print(json.dumps(keep, indent=2))
    print(f"run directory: {config.out}")
    return 0 if summary.get("finished") else 3


def cmd_compare(args) -> int:
    from qpeft.report import compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    base = config_from_args(args)
    spec = spec_from_args(args) if args.tune else None
    report = compare(base, methods, seeds, Path(base.out), tune_spec=spec)
    if "interrupted" in report:
        print(f"interrupted in {report['interrupted']} (checkpoint saved); run the same command again to resume")
        return 3
    print(report["table"])
    print(f"report: {report['report']}")
    print(f"loss plot: {report['plot']}")
    return 0


def cmd_plan(args) -> int:
    from qpeft.train import plan

    result = plan(config_from_args(args))
    print(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2) if args.json else result["text"])
    return 0


def add_parsers(sub) -> None:
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
        "loss-curve PNGs under --out. Every method runs at --lr (shared), or with --tune at its own rate: "
        "searched first by short runs on a validation split of the training examples (see `qpeft tune`).",
        epilog=adapter_fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--methods", default="lora,qtha", help=f"comma-separated methods ({', '.join(METHOD_PRESETS)})")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument(
        "--tune",
        action="store_true",
        help="search each method's learning rate (and --tune-field values) first, in --out/tune/METHOD, and run "
        "its seeds at the chosen values (the --tune-* flags below); without it --lr is shared by every method",
    )
    add_train_flags(p, skip=("method", "seed"))
    add_tune_flags(p)
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
