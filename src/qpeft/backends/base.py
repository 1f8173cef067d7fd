"""What every backend offers, and the registry that builds one by name.

A backend runs a batch of circuits and returns, per circuit, either the Pauli-Z
expectation of every wire (``observable="z"``, shape ``(batch, n_qubits)``) or the basis
probabilities (``observable="probs"``, shape ``(batch, 2**n_qubits)``, wire 0 the most
significant bit). Inputs are ``(batch, n_inputs)`` or None; weights ``(n_weights,)`` or
``(batch, n_weights)``.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from qpeft.plugins import Registry, subclass_of
from qpeft.quantum.statevector import expval_z_from_probs

if TYPE_CHECKING:
    from qpeft.quantum.circuit import Circuit

OBSERVABLES = ("z", "probs")


class Backend(ABC):
    """What runs circuits: the interface every backend implements (the module docstring gives the
    shapes and readouts).

    A subclass implements :meth:`run`; ``supports_backprop`` says whether ``run`` is
    differentiable by autograd (``diff_method="backprop"``). Backends are made by name with
    :func:`get_backend`, which records ``spec`` (name, options) so that quantum layers built
    alike share one instance. Plugins register subclasses under the ``qpeft.backends`` entry
    points."""

    name: str = "backend"
    #: True when ``run`` is differentiable by autograd (diff_method="backprop" allowed).
    supports_backprop: bool = False
    #: (name, options) when built by :func:`get_backend`: two backends of equal spec are
    #: interchangeable (quantum layers built alike share one, see ``qpeft.qnn.batch_layers``).
    spec: tuple[str, dict] | None = None

    @abstractmethod
    def run(
        self,
        circuit: Circuit,
        inputs: torch.Tensor | None,
        weights: torch.Tensor | None,
        observable: str = "z",
    ) -> torch.Tensor:
        """Run the circuits and return the requested readout (see module docstring)."""

    @staticmethod
    def check_observable(observable: str) -> None:
        """Check a readout name.

        Args:
            observable: ``"z"`` (Pauli-Z expectation per wire) or ``"probs"`` (basis probabilities).

        Raises:
            ValueError: any other name, listing the two.
        """
        if observable not in OBSERVABLES:
            raise ValueError(f"unknown observable {observable!r}; choose one of {OBSERVABLES}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ProbabilityBackend(Backend):
    """A backend that computes (batch, 2^n) basis probabilities (numpy, qpeft's big-endian
    order); the readouts of :meth:`run` derive from them."""

    @abstractmethod
    def probabilities(self, circuit: Circuit, inputs: torch.Tensor | None, weights: torch.Tensor | None):
        """(batch, 2^n) probabilities, wire 0 the most significant bit."""

    def run(self, circuit: Circuit, inputs, weights, observable: str = "z") -> torch.Tensor:
        Backend.check_observable(observable)
        ref = inputs if inputs is not None else weights
        probs = torch.as_tensor(self.probabilities(circuit, inputs, weights), dtype=ref.dtype)
        if observable == "probs":
            return probs.to(ref.device)
        return expval_z_from_probs(probs, circuit.n_qubits).to(ref.device)


#: qpeft's own backends, name -> "module:Class" (also its entry points in the ``qpeft.backends``
#: group); external SDK backends are imported only when asked for.
BUILTIN_BACKENDS = {
    "torch": "qpeft.backends.torch_sim:TorchBackend",
    "shots": "qpeft.backends.torch_sim:ShotsBackend",
    "noisy": "qpeft.backends.torch_sim:NoisyBackend",
    "qiskit": "qpeft.backends.qiskit:QiskitBackend",
    "pennylane": "qpeft.backends.pennylane:PennyLaneBackend",
    "pyqpanda3": "qpeft.backends.pyqpanda3:PyQPanda3Backend",
}
#: the built-in backends' names (:func:`backend_names` adds the plugins')
BACKENDS = tuple(BUILTIN_BACKENDS)
#: the built-ins plus the backends other packages register in the ``qpeft.backends`` entry-point group
REGISTRY = Registry("backend", "qpeft.backends", BUILTIN_BACKENDS, subclass_of(Backend, "a qpeft backend"))


def backend_names() -> list[str]:
    """Every backend name: the built-ins, then those plugin packages register."""
    return REGISTRY.names()


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name`` (imports its module, not its SDK). Raises ValueError for an
    unknown name (listing the known ones), ImportError for a plugin that fails to load (naming
    its distribution)."""
    return REGISTRY.load(name)


def check_options(name: str, options: dict) -> None:
    """Raise ValueError naming the accepted options when backend ``name``'s constructor does
    not take every key of ``options`` (a constructor with ``**kwargs`` takes any)."""
    params = list(inspect.signature(backend_class(name).__init__).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"backend {name!r} takes no option(s) {unknown}; its options are {accepted or 'none'}")


def get_backend(name: str | Backend, **options) -> Backend:
    """A backend instance from its name (``torch``, ``shots``, ``noisy``, ``qiskit``,
    ``pennylane``, ``pyqpanda3``, or a plugin's) and its options (recorded as its ``spec``), or the given
    instance unchanged. Raises ValueError for an unknown name or option."""
    if isinstance(name, Backend):
        return name
    check_options(name, options)
    backend = backend_class(name)(**options)
    backend.spec = (name, dict(options))
    return backend


def require(module: str, extra: str):
    """Import an optional SDK or raise ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this backend needs `{module}`; install it with `pip install qpeft[{extra}]`") from err
