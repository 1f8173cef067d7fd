"""Adapter configs: dataclasses validated on creation.

Each field is documented once, in its ``metadata["help"]``; :func:`field_help` serves the
same text to docstrings and to the CLI.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: ``target_modules`` value selecting every linear layer except the output layer (PEFT's name)
ALL_LINEAR = "all-linear"


def doc(default: Any, help: str, **kwargs) -> Any:  # noqa: A002 - "help" reads best here
    """A dataclass field whose documentation lives in its metadata."""
    if isinstance(default, list | dict | tuple):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def field_help(config_cls: type) -> dict[str, str]:
    """{field name: help text} of a config class (what the CLI shows)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


def _factors(name: str, value: Any) -> None:
    if value is None:
        return
    if (
        not isinstance(value, list | tuple)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value)
    ):
        raise ValueError(f"`{name}` must be a list of positive integers or None, got {value!r}")


@dataclass
class AdapterConfig:
    """Fields shared by every adapter method."""

    method: ClassVar[str] = "base"

    r: int = doc(8, "bottleneck rank r: the adapter maps d_in -> r -> d_out")
    alpha: float = doc(16.0, "scaling numerator: the delta is multiplied by alpha / r")
    dropout: float = doc(0.0, "dropout probability on the adapter's input (training only)")
    target_modules: list[str] | str = doc(
        ["q_proj", "v_proj"],
        "Linear modules to adapt: a list of names (a module matches if its full name equals "
        f"or ends with '.name'), '{ALL_LINEAR}' (every linear layer but the output layer, as in PEFT), "
        "or one regular expression matched against full names",
    )

    def __post_init__(self) -> None:
        _positive_int("r", self.r)
        if not isinstance(self.alpha, int | float) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ValueError(f"`alpha` must be a positive number, got {self.alpha!r}")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.target_modules, str):
            try:
                re.compile(self.target_modules)
            except re.error as err:
                raise ValueError(f"`target_modules` is not a valid regex: {self.target_modules!r} ({err})") from err
        elif isinstance(self.target_modules, list | tuple) and self.target_modules:
            self.target_modules = [str(t) for t in self.target_modules]
        else:
            raise ValueError(
                f"`target_modules` must be a non-empty list of module names or a regex string, "
                f"got {self.target_modules!r}"
            )

    @property
    def mergeable(self) -> bool:
        """Whether the delta is linear in x, so it can merge into W0 and export as LoRA."""
        return True

    @property
    def scaling(self) -> float:
        """The factor the delta is multiplied by: ``alpha / r``."""
        return self.alpha / self.r

    def matches(self, name: str) -> bool:
        """Whether the module with full name ``name`` is a target (``all-linear``: every linear
        module qualifies; :func:`qpeft.adapters.base.find_targets` leaves out the output layer)."""
        if self.target_modules == ALL_LINEAR:
            return True
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, name) is not None
        return any(name == t or name.endswith("." + t) for t in self.target_modules)

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict: every field, plus ``"method"`` (what
        :func:`qpeft.adapters.registry.config_from_dict` rebuilds it from)."""
        return {"method": self.method, **dataclasses.asdict(self)}


@dataclass
class TensorTrainFields(AdapterConfig):
    """Fields of methods whose factors are matrix product operators (MPO / tensor trains)."""

    bond_dim: int = doc(4, "MPO bond dimension D between neighbouring cores")
    n_cores: int = doc(2, "number of MPO cores; d_in, d_out and r are factored into this many factors")
    in_factors: list[int] | None = doc(None, "explicit factorisation of d_in (product must equal d_in)")
    out_factors: list[int] | None = doc(None, "explicit factorisation of d_out (product must equal d_out)")
    rank_factors: list[int] | None = doc(None, "explicit factorisation of r (product must equal r)")
    checkpoint: bool = doc(
        True,
        "recompute the adapter branch during backward instead of keeping its activations "
        "(less memory for a little time; off for circuits that run on a remote backend)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int("bond_dim", self.bond_dim)
        _positive_int("n_cores", self.n_cores)
        for name in ("in_factors", "out_factors", "rank_factors"):
            _factors(name, getattr(self, name))
        if self.rank_factors is not None and math.prod(self.rank_factors) != self.r:
            raise ValueError(
                f"`rank_factors` {self.rank_factors} multiply to {math.prod(self.rank_factors)}, not r = {self.r}"
            )
        lengths = {len(f) for f in (self.in_factors, self.out_factors, self.rank_factors) if f is not None}
        if lengths and lengths != {self.n_cores}:
            raise ValueError(f"explicit factorisations must each have n_cores = {self.n_cores} factors")
