"""``qpeft train``, ``qpeft compare`` and ``qpeft plan``: the subcommands that take a training
configuration."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from qpeft.cli.flags import adapter_fields_help, add_train_flags, config_from_args, given_fields
from qpeft.cli.tune import add_tune_flags, spec_from_args
from qpeft.rundir import recorded_settings
from qpeft.train import METHOD_PRESETS, TrainConfig

#: the TrainConfig fields that change what `qpeft plan` counts (its only flags)
PLAN_FIELDS = (
    "model",
    "method",
    "adapter",
    "target_modules",
    "steps",
    "batch_size",
    "grad_accum",
    "max_length",
    "quantum_backend",
    "shots",
    "diff_method",
    "quantum_options",
    "eval_steps",
    "max_spend",
)


def train_config(args) -> TrainConfig:
    """The run's settings: defaults, ``--config FILE``, then the flags; with ``--resume``, the
    settings recorded in the run directory take the place of the defaults."""
    given = given_fields(args)
    if not given.get("resume"):
        return TrainConfig(**given)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    recorded = recorded_settings(given.get("out", TrainConfig.out)) or {}
    return TrainConfig(**{k: v for k, v in recorded.items() if k in known} | given)


def cmd_train(args) -> int:
    """``qpeft train``: start, continue or reuse the run in ``--out`` (see
    :mod:`qpeft.rundir`), train it and print its summary as JSON.

    Args:
        args: the parsed flags of ``qpeft train``.

    Returns:
        The exit code: 0 finished (or already finished: its results are printed), 3 stopped by
        Ctrl-C / SIGTERM with a checkpoint (the same command again continues).

    Raises:
        ValueError: a bad setting, or ``--out`` holds a run of other settings (use ``--resume`` or
            ``--overwrite``).
    """
    from qpeft.train import start, train

    config = train_config(args)
    begin = start(config, args.overwrite)
    if begin.finished is not None:
        print(
            f"qpeft train: {config.out} holds this run, finished; its results are below (--overwrite trains it again)",
            file=sys.stderr,
        )
    elif begin.checkpoint is not None:
        print(f"qpeft train: continuing {config.out} from {begin.checkpoint.name}", file=sys.stderr)
    summary = train(config, overwrite=args.overwrite)
    if not summary.get("finished"):
        print(
            f"qpeft train: stopped at step {summary['global_step']} of {config.steps} with a checkpoint in "
            f"{summary['checkpoint']}; run the same command again to continue",
            file=sys.stderr,
        )
        return 3
    keep = {k: summary.get(k) for k in ("global_step", "finished", "final_train_loss", "seconds_per_step", "eval")}
    print(json.dumps(keep, indent=2))
    print(f"run directory: {config.out}")
    return 0


def cmd_compare(args) -> int:
    """``qpeft compare``: train every method of ``--methods`` for every seed of ``--seeds`` (first
    tuning each method's learning rate with ``--tune``), then print the table and the paths of
    ``report.md`` and the loss plot.

    Args:
        args: the parsed flags of ``qpeft compare``.

    Returns:
        The exit code: 0 done, 3 stopped by Ctrl-C / SIGTERM with a checkpoint (the same command
        again reuses the finished cells and continues).

    Raises:
        ValueError: no method or no seed, or a bad setting (from ``TrainConfig``).
    """
    from qpeft.report import compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    base = config_from_args(args)
    spec = spec_from_args(args) if args.tune else None
    report = compare(base, methods, seeds, Path(base.out), tune_spec=spec)
    if "interrupted" in report:
        print(
            f"qpeft compare: stopped in {report['interrupted']} with a checkpoint; run the same command again to "
            "continue (finished cells are reused)",
            file=sys.stderr,
        )
        return 3
    print(report["table"])
    print(f"report: {report['report']}")
    print(f"loss plot: {report['plot']}")
    return 0


def cmd_plan(args) -> int:
    """``qpeft plan``: print what a run would submit on ``--quantum-backend`` (circuits, jobs,
    shots per step and per run, QPU time and cost with their sources, whether it fits
    ``--max-spend``), as text or with ``--json`` as JSON. Nothing is submitted.

    Args:
        args: the parsed flags of ``qpeft plan``.

    Returns:
        0 (exit code).

    Raises:
        ValueError: no ``--quantum-backend``, or a bad setting. (A method whose circuits take
            inputs, activation mode, is not an error: the plan says it is for simulators only.)
    """
    from qpeft.train import plan

    result = plan(config_from_args(args))
    print(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=2) if args.json else result["text"])
    return 0


def add_parsers(sub) -> None:
    """Register ``qpeft train``, ``qpeft compare`` and ``qpeft plan`` on ``sub`` (the subparsers
    of :func:`qpeft.cli.build_parser`): one flag per ``TrainConfig`` field, plus ``--overwrite``
    (train), ``--methods`` / ``--seeds`` / ``--tune`` and the ``--tune-*`` flags (compare) and
    ``--json`` (plan)."""
    p = sub.add_parser(
        "train",
        help="fine-tune one adapter",
        description="Fine-tune one adapter on one data set.",
        epilog=adapter_fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_flags(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run in --out (its checkpoints, metrics, results and adapter; never its jobs/ ledger) "
        "and train from step 0",
    )
    p.set_defaults(
        func=cmd_train,
        interrupted="the same command again continues from the newest checkpoint in --out (from step 0 if none)",
    )

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
    p.set_defaults(
        func=cmd_compare,
        interrupted="the same command again reuses the finished cells and continues the others from their checkpoints",
    )

    p = sub.add_parser(
        "plan",
        help="circuits, jobs, shots, QPU time and cost of a run on a quantum backend",
        description="Count what a training run would submit to --quantum-backend (per step and per run) and "
        "estimate its QPU time and cost from the providers' published figures.",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_train_flags(p, only=PLAN_FIELDS)
    p.set_defaults(func=cmd_plan)
