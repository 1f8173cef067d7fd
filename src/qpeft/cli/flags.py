"""Flags shared by the subcommands: one flag per :class:`qpeft.train.TrainConfig` field (the
field's help text is the flag's), ``--config FILE`` first and flags on top, and the adapter
fields ``--adapter '{...}'`` can set."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from qpeft.train import TrainConfig


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


def positive_int(text: str) -> int:
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
