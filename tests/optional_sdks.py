"""The optional SDKs (pyproject.toml's extras) as the tests see them: their top-level modules, and
whether an ImportError came from one of them being absent (qpeft raises its own ImportError, naming
the extra to install, from the SDK's)."""

import importlib.util

#: the top-level modules of every optional extra
OPTIONAL = [
    "pyqpanda3",
    "qiskit",
    "qiskit_aer",
    "qiskit_ibm_runtime",
    "qiskit_qasm3_import",
    "pennylane",
    "braket",
    "optuna",
    "peft",
    "trl",
    "datasets",
    "tensorboard",
    "mlflow",
    "wandb",
]


def _installed(module: str) -> bool:
    """Whether the top-level ``module`` can be imported (False also where ``sys.modules`` blocks it
    with None, as tests/test_optional_extras.py does)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a __spec__: it is there
        return True


def missing_optional(err: BaseException) -> str | None:
    """The optional SDK whose absence raised ``err`` (followed through ``raise ... from``), or None
    when ``err`` is about anything else: a core dependency missing, or an optional SDK that is
    installed but lacks a name or submodule qpeft imports (an incompatible version) is a failure,
    not a skip."""
    while err is not None:
        name = getattr(err, "name", None)
        if isinstance(err, ImportError) and name:
            top = name.split(".")[0]
            if top in OPTIONAL and not _installed(top):
                return name
        err = err.__cause__
    return None


def main(args: list[str]) -> int:
    """Run pytest with every optional SDK blocked (set to None in ``sys.modules``: importing it, or a
    submodule, raises ImportError, as on a machine that installed qpeft without extras)."""
    import sys

    for name in OPTIONAL:
        sys.modules[name] = None
    import pytest

    return pytest.main(args or ["-q", "tests"])


if __name__ == "__main__":  # python tests/optional_sdks.py [pytest arguments]
    import sys

    sys.exit(main(sys.argv[1:]))
