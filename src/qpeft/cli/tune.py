"""``qpeft tune`` and the ``--tune*`` flags of ``qpeft compare``: one flag per
:class:`qpeft.tune.TuneSpec` field, with the field's help text."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from qpeft.cli.flags import adapter_fields_help, add_train_flags, config_from_args
from qpeft.tune import TuneSpec


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers (5e-4,2e-3,8e-3), got {text!r}") from err


def _field(text: str) -> tuple[str, list]:
    """``NAME=V1,V2,...``: each value as JSON (numbers, true/false) or else as a string."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=V1,V2 (e.g. adapter.bond_dim=4,8), got {text!r}")

    def parse(value: str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value

    return name.strip(), [parse(v.strip()) for v in values.split(",") if v.strip()]


def add_tune_flags(parser: argparse.ArgumentParser) -> None:
    """The ``--tune-*`` flags (defaults left unset: the TuneSpec's apply)."""
    help_of = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TuneSpec)}
    defaults = TuneSpec()
    group = parser.add_argument_group("tuning (qpeft.tune)")
    group.add_argument("--tune-search", choices=["grid", "optuna"], help=f"{help_of['search']} (default: grid)")
    lrs = ",".join(map(str, defaults.lrs))
    group.add_argument("--tune-lrs", type=_floats, help=f"{help_of['lrs']}, comma-separated (default: {lrs})")
    group.add_argument(
        "--tune-field",
        type=_field,
        action="append",
        metavar="NAME=V1,V2",
        help=f"{help_of['fields']}; repeat the flag for more fields",
    )
    for name in ("trials", "steps", "val_examples", "seed", "extend", "reports"):
        group.add_argument(
            "--tune-" + name.replace("_", "-"), type=int, help=f"{help_of[name]} (default: {getattr(defaults, name)})"
        )
    group.add_argument("--tune-lr-step", type=float, help=help_of["lr_step"])
    group.add_argument(
        "--tune-prune", action=argparse.BooleanOptionalAction, default=None, help=f"{help_of['prune']} (default: on)"
    )


def spec_from_args(args: argparse.Namespace) -> TuneSpec:
    """The TuneSpec of the given ``--tune-*`` flags."""
    given = {
        f.name: getattr(args, "tune_" + f.name)
        for f in dataclasses.fields(TuneSpec)
        if f.name != "fields" and getattr(args, "tune_" + f.name, None) is not None
    }
    return TuneSpec(**given, fields=dict(args.tune_field or []))


def cmd_tune(args) -> int:
    """``qpeft tune``: search, print the trials and the chosen values; exit code 3 if interrupted."""
    from qpeft.tune import trials_table, tune

    base = config_from_args(args)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else [base.seed]
    result = tune(base, spec_from_args(args), Path(base.out), seeds)
    if "interrupted" in result:
        print(f"interrupted in {result['interrupted']}; the same command again resumes (finished trials are kept)")
        return 3
    print("\n".join(trials_table(result)))
    flags = {k: v for k, v in result["chosen"].items() if not k.startswith("adapter.")}
    chosen = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items())
    adapter = {k[8:]: v for k, v in result["chosen"].items() if k.startswith("adapter.")}
    if adapter:
        chosen += f" --adapter '{json.dumps({**base.adapter, **adapter})}'"
    print(f"chosen for {base.method}: {chosen} (validation loss {result['best_value']:.4f})")
    print(f"search: {Path(base.out) / 'tune.json'}")
    return 0


def add_parsers(sub) -> None:
    """Register ``qpeft tune``."""
    p = sub.add_parser(
        "tune",
        help="search one method's learning rate (and other fields) with short runs",
        description="Search the learning rate of --method (and any --tune-field) with short runs scored on a "
        "validation split carved from the training examples (never the held-out ones of --seeds). The search "
        "is an Optuna study in --out: the same command after an interrupt runs only the unfinished trials. "
        "`qpeft compare --tune` does this per method before its main runs.",
        epilog=adapter_fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--seeds",
        help="comma-separated seeds of the main runs to come: the held-out examples of each are left out of "
        "tuning (default: --seed)",
    )
    add_train_flags(p)
    add_tune_flags(p)
    p.set_defaults(func=cmd_tune)
