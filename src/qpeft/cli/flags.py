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
        return json_object
    if isinstance(default, int) or field.type in ("int | None", int):
        return int
    if isinstance(default, float):
        return float
    return str


def json_object(text: str) -> dict:
    """An argparse type: a JSON object such as ``'{"r": 4}'``; anything else is an error that
    says what was wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"not valid JSON: {text!r} ({err}); JSON keys and strings take double quotes"
        ) from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object ({{...}}), got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_train_flags(
    parser: argparse.ArgumentParser, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None
) -> None:
    """One flag per TrainConfig field (defaults left unset so --config can fill them), except
    the fields in ``skip``; with ``only``, just those fields."""
    parser.add_argument("--config", type=Path, help="YAML or JSON file of the fields below (flags override it)")
    for field in dataclasses.fields(TrainConfig):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if "default:" not in help_text:  # a help text that explains its default says it once
            help_text += f" (default: {json.dumps(default) if isinstance(default, dict) else default})"
        kind = _flag_type(field)
        if kind is None:
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=field.name, type=kind, default=None, help=help_text)


def given_fields(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the command line sets: those of ``--config FILE``, then the flags."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return {**TrainConfig.read_file(args.config), **given} if args.config is not None else given


def config_from_args(args: argparse.Namespace, **fixed) -> TrainConfig:
    """The TrainConfig of a command line: defaults, then ``--config FILE``, then the flags, then ``fixed``."""
    return TrainConfig(**{**given_fields(args), **fixed})


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
