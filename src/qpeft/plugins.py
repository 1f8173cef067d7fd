"""The extension points: providers, backends and device presets by name, qpeft's own and
those other packages register through Python entry points.

| entry-point group | a name maps to | used by |
|---|---|---|
| ``qpeft.providers`` | a :class:`qpeft.jobs.base.Provider` subclass | ``--quantum-backend NAME[:BACKEND]`` |
| ``qpeft.backends`` | a :class:`qpeft.backends.base.Backend` subclass | ``backend=NAME``, ``local:NAME`` |
| ``qpeft.devices`` | a :class:`qpeft.devices.device.Device`, or a function returning one | ``noise=NAME`` |

A plugin package declares them in its ``pyproject.toml``, e.g.
``[project.entry-points."qpeft.providers"] myqpu = "myqpu.provider:MyProvider"``; installing it
is all it takes (``qpeft providers`` lists what is installed and where each name comes from).

qpeft's own names are registered twice, on purpose: in code (each registry's built-in table)
and as entry points in qpeft's ``pyproject.toml`` (so tools that read the installed metadata
see them). The registry takes qpeft's names from the code and ignores the entry points of the
``qpeft`` distribution itself: the built-ins work from a source checkout, and from an install
whose metadata is older or newer than its code. A plugin cannot take over a built-in name
(its entry is listed as shadowed); two plugins that claim one name make that name an error
that names both, and every other name keeps working. Plugins are imported only when their
name is used (or ``qpeft providers --check``): a plugin that fails to import raises an
ImportError naming its distribution and the cause, and breaks nothing else.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: the distribution whose entry points are the built-ins (already known from the code)
BUILTIN_DIST = "qpeft"
#: where a built-in comes from, as listings show it
BUILTIN_ORIGIN = "qpeft (built in)"
#: what an unknown-name error adds after the known names
LIST_HINT = " (`qpeft providers` lists every name and where it comes from; a plugin package adds more)"


@dataclass(frozen=True)
class Entry:
    """One registered name: what it points at and where it came from.

    Attributes:
        kind: ``provider``, ``backend`` or ``device``.
        name: the name users type.
        target: ``module:attribute`` it loads.
        origin: ``qpeft (built in)`` for a built-in, else the distribution that registered it
            (``name version``).
        builtin: whether it is one of qpeft's own.
    """

    kind: str
    name: str
    target: str
    origin: str
    builtin: bool


@dataclass(frozen=True)
class Conflict:
    """A name that a plugin registers but cannot have: ``shadowed`` (a built-in has it; the
    built-in is used) or ``ambiguous`` (several plugins claim it; using it is an error)."""

    kind: str
    name: str
    why: str
    claims: tuple[Entry, ...]
    """the plugins' entries for the name"""


def _origin(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "(unknown distribution)"


def _dist_name(entry_point) -> str | None:
    dist = getattr(entry_point, "dist", None)
    return dist.name if dist is not None else None


class Registry:
    """The names of one kind (see module docstring): the built-ins of ``builtins``
    (name -> ``module:attribute``) and what entry-point group ``group`` adds.

    check: called on each loaded object; returns it (possibly converted, e.g. a device function
    called) or raises TypeError saying what a plugin of this kind must be.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: dict[str, str],
        check: Callable[[object], object],
        choices: str = "choose one of",
    ):
        self.kind, self.group, self._builtins, self._check = kind, group, dict(builtins), check
        self._choices = choices
        self._lock = threading.Lock()
        self._scanned: tuple[dict[str, Entry], list[Conflict]] | None = None
        self._loaded: dict[str, object] = {}

    def refresh(self) -> None:
        """Read the entry points again (after a package was installed in this process)."""
        with self._lock:
            self._scanned = None
            self._loaded.clear()

    def _scan(self) -> tuple[dict[str, Entry], list[Conflict]]:
        with self._lock:
            if self._scanned is None:
                self._scanned = self._read()
            return self._scanned

    def _read(self) -> tuple[dict[str, Entry], list[Conflict]]:
        entries = {name: Entry(self.kind, name, to, BUILTIN_ORIGIN, True) for name, to in self._builtins.items()}
        claims: dict[str, dict[tuple[str, str], Entry]] = {}
        try:
            found = importlib.metadata.entry_points(group=self.group)
        except Exception as err:  # a broken .dist-info somewhere on sys.path: the built-ins still work
            logger.warning("could not read the %s entry points (%s); only qpeft's own are known", self.group, err)
            found = ()
        for ep in found:
            if _dist_name(ep) == BUILTIN_DIST:
                continue  # qpeft's own, known from the code (its metadata may be stale)
            entry = Entry(self.kind, ep.name, ep.value, _origin(ep), False)
            claims.setdefault(ep.name, {})[(entry.origin, entry.target)] = entry  # (one dist seen twice: once)
        conflicts = []
        for name, by_origin in sorted(claims.items()):
            plugin_entries = tuple(by_origin.values())
            if name in entries:
                why = f"a built-in {self.kind} has this name; qpeft's own is used"
                conflicts.append(Conflict(self.kind, name, why, plugin_entries))
            elif len(plugin_entries) > 1:
                why = "several distributions register this name; uninstall all but one"
                conflicts.append(Conflict(self.kind, name, why, plugin_entries))
            else:
                entries[name] = plugin_entries[0]
        return entries, conflicts

    def entries(self) -> dict[str, Entry]:
        """Every usable name, built-ins first, with its target and origin."""
        return dict(self._scan()[0])

    def conflicts(self) -> list[Conflict]:
        """Names plugins register but cannot have (see :class:`Conflict`)."""
        return list(self._scan()[1])

    def names(self) -> list[str]:
        """Every usable name, built-ins first."""
        return list(self._scan()[0])

    def plugin_names(self) -> list[str]:
        """The names other distributions add."""
        return [name for name, entry in self._scan()[0].items() if not entry.builtin]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._scan()[0]

    def unknown(self, name: str, what: str = "") -> ValueError:
        """The error for a name nobody registered: it lists the known ones (and says why, for a
        name that only conflicting plugins claim)."""
        entries, conflicts = self._scan()
        for conflict in conflicts:
            if conflict.name == name and name not in entries:
                origins = ", ".join(f"{e.origin} ({e.target})" for e in conflict.claims)
                return ValueError(f"{self.kind} {name!r} is registered by {origins}: {conflict.why}")
        return ValueError(f"unknown {self.kind} {name!r}{what}; {self._choices} {', '.join(self.names())}{LIST_HINT}")

    def load(self, name: str):
        """The object registered as ``name`` (imported on first use, then kept).

        Raises:
            ValueError: no such name (the message lists the known ones).
            ImportError: the plugin could not be imported, or is not what this kind needs;
                the message names its distribution and the cause.
        """
        entries = self._scan()[0]
        entry = entries.get(name)
        if entry is None:
            raise self.unknown(name)
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
        module_name, _, attribute = entry.target.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attribute.split(".") if attribute else ():
                obj = getattr(obj, part)
            obj = self._check(obj)
        except Exception as err:
            if entry.builtin:
                raise
            raise ImportError(
                f"the {self.kind} {name!r} from the distribution {entry.origin} ({entry.target}) could not be "
                f"loaded: {type(err).__name__}: {err}. Fix or reinstall that package, or uninstall it; the other "
                f"{self.kind}s are not affected"
            ) from err
        with self._lock:
            self._loaded[name] = obj
        return obj

    def check_all(self) -> dict[str, str]:
        """Load every name: name -> ``ok`` or the error's words (for ``qpeft providers --check``)."""
        out = {}
        for name in self.names():
            try:
                self.load(name)
                out[name] = "ok"
            except Exception as err:  # (each one on its own: a broken plugin must not hide the others)
                out[name] = f"{type(err).__name__}: {err}"
        return out


def subclass_of(base: type, what: str) -> Callable[[object], object]:
    """A registry check: the object must be a subclass of ``base``."""

    def check(obj: object) -> object:
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise TypeError(f"it is {obj!r}, not a subclass of {base.__module__}.{base.__name__} ({what})")
        return obj

    return check
