"""The provider table: ``PROVIDER[:BACKEND]`` specs to provider instances.

| spec | what runs | credentials |
|---|---|---|
| ``local[:torch|shots|noisy[:DEVICE]|qiskit|pyqpanda3|PLUGIN]`` | qpeft's in-process backends (or a plugin's) | none |
| ``torch``, ``noisy:DEVICE``, ... (a local backend's name) | the same, shorthand for ``local:...`` | none |
| ``origin[:CHIP]`` | Origin QCloud QPU (chip from the service's list) | ``QPEFT_ORIGIN_API_KEY`` |
| ``ibm[:BACKEND]`` | IBM Quantum Sampler; ``fake_*``: local testing mode | ``QPEFT_IBM_TOKEN`` / saved account |
| ``braket[:DEVICE]`` | Amazon Braket (short name or ARN); ``local``, ``local_dm``: LocalSimulator | AWS credentials |
| ``NAME[:BACKEND]`` | a provider a plugin package registers (``qpeft.providers`` entry points) | the plugin's |

The names come from :data:`REGISTRY` (:mod:`qpeft.plugins`): qpeft's own, plus what installed
packages register in the ``qpeft.providers`` entry-point group.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from qpeft.backends.base import REGISTRY as BACKEND_REGISTRY
from qpeft.jobs.base import Limits, Provider, error_chain
from qpeft.jobs.local import LOCAL_BACKENDS, local_backend_names
from qpeft.jobs.rates import Rate, rate_of
from qpeft.plugins import LIST_HINT, Registry, subclass_of
from qpeft.quantum.circuit import Circuit

#: environment variables holding credentials (their values never reach a message)
SECRET_ENV = ("QPEFT_ORIGIN_API_KEY", "QPEFT_IBM_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

#: qpeft's own providers, name -> "module:Class" (also its entry points in the ``qpeft.providers`` group)
BUILTIN_PROVIDERS = {
    "local": "qpeft.jobs.local:LocalProvider",
    "origin": "qpeft.jobs.origin:OriginProvider",
    "ibm": "qpeft.jobs.ibm:IBMProvider",
    "braket": "qpeft.jobs.braket:BraketProvider",
}
#: the built-ins plus the providers other packages register in the ``qpeft.providers`` entry-point group
REGISTRY = Registry("provider", "qpeft.providers", BUILTIN_PROVIDERS, subclass_of(Provider, "a qpeft job provider"))


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"origin:WK_C180"`` -> ("origin", "WK_C180"); ``"ibm"`` -> ("ibm", None);
    ``"noisy:wukong72"`` -> ("local", "noisy:wukong72"). Raises ValueError for a name no provider
    or local backend has (listing the known ones)."""
    name, _, backend = spec.partition(":")
    if name in LOCAL_BACKENDS:  # (a local backend's name is shorthand: ``noisy:wukong72`` = ``local:noisy:wukong72``)
        return "local", spec
    if name in REGISTRY:
        return name, backend or None
    if name in BACKEND_REGISTRY.plugin_names():
        return "local", spec
    if any(c.name == name for c in REGISTRY.conflicts()):
        raise REGISTRY.unknown(name)
    raise ValueError(
        f"unknown quantum provider {name!r} in {spec!r}; use PROVIDER[:BACKEND] with PROVIDER one of "
        f"{', '.join(REGISTRY.names())}, or a local backend ({', '.join(local_backend_names())}){LIST_HINT}"
    )


def provider_limits(spec: str, **options) -> Limits:
    """A provider's per-job limits without connecting to it (for ``qpeft plan``)."""
    name, backend = parse_spec(spec)
    if name == "local":
        return Limits(max_circuits=options.get("max_circuits", 200))
    return REGISTRY.load(name).plan_limits(backend, **options)


def plan_rate(spec: str) -> tuple[str, str | None, Rate]:
    """(provider name, the backend name it records, its time and price figures) of ``spec``,
    offline; a provider without figures (a plugin's) gets an unpriced placeholder."""
    name, backend = parse_spec(spec)
    if name != "local":
        backend = REGISTRY.load(name).backend_name(backend)
    rate = rate_of(name, backend)
    if rate is None:
        none = (0.0, 0.0)
        words = f"no figures for the {name} provider in qpeft's table (qpeft.jobs.rates): time and cost not estimated"
        rate = Rate(none, none, none, None, "", words, "-", False)
    return name, backend, rate


class ServiceUnreachableError(ConnectionError):
    """A provider's service did not answer while the provider was being made (transient errors
    retried with backoff until the attempts ran out)."""


def _provider_class(name: str, options: dict) -> type[Provider]:
    if name == "local" and "spool" in options:  # jobs served by another process (qpeft.jobs.spool)
        from qpeft.jobs.spool import SpoolProvider

        return SpoolProvider
    return REGISTRY.load(name)


def get_provider(spec: str | Provider, **options) -> Provider:
    """A provider from ``PROVIDER[:BACKEND]`` (see the table above) and its options."""
    if isinstance(spec, Provider):
        return spec
    name, backend = parse_spec(spec)
    provider_cls = _provider_class(name, options)
    if backend is None:
        return provider_cls(**options)
    return provider_cls(backend, **options)


def connect(spec: str, attempts: int = 4, wait: float = 1.0, max_wait: float = 30.0, **options) -> Provider:
    """:func:`get_provider`, retried like any transient call: an error the provider's SDK calls
    transient (a service that did not answer, a 503) is retried ``attempts`` times in all with
    exponential backoff from ``wait`` seconds; then :class:`ServiceUnreachableError`. Errors that
    name something to fix (a missing key, an unknown backend) are raised at once."""
    name, _ = parse_spec(spec)
    provider_cls = _provider_class(name, options)
    try:
        return Retrying(
            retry=retry_if_exception(provider_cls.is_transient_error),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=wait, max=max_wait),
            reraise=True,
        )(get_provider, spec, **options)
    except Exception as err:
        words = f"{type(err).__name__}: {redact_environment(str(err))}"
        if provider_cls.is_transient_error(err):
            replacement: Exception = ServiceUnreachableError(
                f"{spec}: the service did not answer after {attempts} attempt(s) ({words}); check the network and "
                "the provider's status page, then rerun (nothing was submitted)"
            )
        elif _holds_a_secret(err):  # (a second line of defence: the provider's own handlers redact what they know)
            replacement = ValueError(
                f"{spec}: the provider could not be made ({words}); check its credentials and backend name"
            )
        else:
            raise
    # raised out here, not in the except block: the replaced error (which may echo a credential)
    # is not kept as its __context__
    raise replacement


def redact_environment(text: str) -> str:
    """``text`` with the value of every :data:`SECRET_ENV` variable that is set replaced by ``***``."""
    for variable in SECRET_ENV:
        if os.environ.get(variable):
            text = text.replace(os.environ[variable], "***")
    return text


def _holds_a_secret(err: BaseException) -> bool:
    """Whether the text, arguments or notes of ``err``, of an error it chains to or of an error
    it groups (what a traceback would print) hold the value of a :data:`SECRET_ENV` variable."""
    for each in error_chain(err):
        texts = [str(each), *map(repr, each.args), *map(str, getattr(each, "__notes__", ()))]
        if any(redact_environment(text) != text for text in texts):
            return True
    return False


def plan_gate_count(spec: str, **options) -> tuple[Callable[[Circuit], int], str]:
    """(two-qubit gates per circuit as the provider's job split counts them, offline; what they
    were counted on), for ``qpeft plan``."""
    name, backend = parse_spec(spec)
    if name == "local":
        return Provider.plan_gate_count(backend)
    return _provider_class(name, options).plan_gate_count(backend, **options)
