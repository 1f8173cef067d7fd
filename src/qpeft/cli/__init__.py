"""The ``qpeft`` command line: train, tune, eval, generate, compare, export, plan, jobs.

Every training flag is a field of :class:`qpeft.train.TrainConfig` with the same help text;
``--config FILE`` (YAML or JSON) sets fields first, flags on the command line win. Each
subcommand lives in the module of its concern: :mod:`qpeft.cli.train` (train, compare, plan),
:mod:`qpeft.cli.tune` (tune), :mod:`qpeft.cli.evaluate` (eval, generate, export),
:mod:`qpeft.cli.jobs` (jobs).
"""

from __future__ import annotations

import argparse
import logging
import sys

from qpeft.cli import evaluate, jobs, train, tune
from qpeft.cli.flags import add_train_flags, config_from_args

__all__ = ["add_train_flags", "build_parser", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpeft", description="Hybrid quantum-classical PEFT for causal LMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_parsers(sub)
    tune.add_parsers(sub)
    jobs.add_parsers(sub)
    evaluate.add_parsers(sub)
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
