"""The ``qpeft`` command line: train, tune, eval, generate, compare, export, plan, jobs, providers.

Every training flag is a field of :class:`qpeft.train.TrainConfig` with the same help text;
``--config FILE`` (YAML or JSON) sets fields first, flags on the command line win. Each
subcommand lives in the module of its concern: :mod:`qpeft.cli.train` (train, compare, plan),
:mod:`qpeft.cli.tune` (tune), :mod:`qpeft.cli.evaluate` (eval, generate, export),
:mod:`qpeft.cli.jobs` (jobs), :mod:`qpeft.cli.plugins` (providers).
"""

from __future__ import annotations

import argparse
import logging
import sys

from qpeft import __version__
from qpeft.cli import evaluate, jobs, plugins, train, tune
from qpeft.cli.flags import add_train_flags, config_from_args

__all__ = ["add_train_flags", "build_parser", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``qpeft`` argument parser with every subcommand (train, compare, plan, tune, jobs,
    eval, generate, export, providers); each subcommand's ``func`` default is the function that
    runs it.

    Returns:
        The ``argparse.ArgumentParser``; ``parse_args`` exits with code 2 on a bad flag.
    """
    parser = argparse.ArgumentParser(prog="qpeft", description="Hybrid quantum-classical PEFT for causal LMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=f"qpeft {__version__}")
    # what a Ctrl-C outside training leaves behind (subcommands say more)
    parser.set_defaults(interrupted="nothing was written; the same command again starts over")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_parsers(sub)
    tune.add_parsers(sub)
    jobs.add_parsers(sub)
    evaluate.add_parsers(sub)
    plugins.add_parsers(sub)
    return parser


#: exit code of a command stopped by Ctrl-C outside training (128 + SIGINT, as a shell reports it)
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code: 0 done, 2 bad input, 3 stopped with something
    to continue (a training checkpoint, QPU jobs) where the same command again continues,
    130 interrupted by Ctrl-C (nothing to continue: the same command again starts over)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"qpeft {args.command}: interrupted; {args.interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"qpeft {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        kind = _job_error(err)
        if kind is None:
            raise
        print(f"qpeft {args.command}: error: {err}", file=sys.stderr)
        if kind == "job":
            print(
                "The results of the jobs that finished are kept in the run directory's jobs/ folder, and its ledger "
                "lists every job (`qpeft jobs RUN_DIR`): rerun the same command to continue from there; nothing that "
                "finished is run again.",
                file=sys.stderr,
            )
        return 3


def _job_error(err: Exception) -> str | None:
    """ "job" for a QPU job that failed for good, gave no answer, ran past a deadline or would
    pass the spending cap; "service" for a provider's service that did not answer while it was
    being set up (before anything was submitted); None for anything else. (The classes exist
    only once the job engine is loaded.)"""
    modules = [sys.modules.get(f"qpeft.jobs.{name}") for name in ("base", "calls", "budget", "providers")]
    if any(m is None for m in modules):
        return None
    base, calls, budget, providers = modules
    if isinstance(err, providers.ServiceUnreachableError):
        return "service"
    job_errors = (base.JobFailedError, base.SubmissionUnknownError, calls.ProviderError, budget.BudgetExceededError)
    return "job" if isinstance(err, (*job_errors, TimeoutError)) else None
