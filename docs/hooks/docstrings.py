"""Every public name of qpeft has a docstring: the check behind the API reference.

Public, as the reference renders it: every module of ``src/qpeft`` whose dotted path has no
``_``-prefixed part (``__init__`` aside; ``__main__`` modules are entry points, not API), each
such module's functions and classes that are defined in it (not imported) and whose name does
not start with ``_`` (or that its ``__all__`` names), and each public class's methods and
properties whose name does not start with ``_``. A method that overrides a documented method of
a base class (a qpeft class, or a library one such as ``torch.nn.Module.forward``) inherits
that documentation and needs none of its own.

Run by MkDocs as a hook (``mkdocs.yml``: ``hooks``): with ``extra.missing_docstrings: fail``
every public name without a docstring is a build warning, which ``mkdocs build --strict`` turns
into a failed build; with ``list`` the build logs their count and writes the list to
``build/missing-docstrings.txt``. It also fails the build when a public module is missing from
the API reference pages (``docs/api/*.md``), so a new module cannot go unrendered. Run it as a
script (``python docs/hooks/docstrings.py``) to print the list; it exits 1 when one is missing.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from pathlib import Path

import griffe

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
API_PAGES = ROOT / "docs" / "api"
LIST_FILE = ROOT / "build" / "missing-docstrings.txt"

log = logging.getLogger("mkdocs.plugins.qpeft.docstrings")


def public_modules(package: griffe.Module) -> list[griffe.Module]:
    """The package and its submodules, recursively, that are public (see the module docstring)."""
    found = [package]
    for member in sorted(package.modules.values(), key=lambda m: m.name):
        if member.is_alias or member.name.startswith("_"):  # (an alias: a module imported by name)
            continue
        found += public_modules(member)
    return found


def _is_public(obj: griffe.Object, module: griffe.Module) -> bool:
    # (imported names are aliases, skipped by the caller: documented and checked where they are defined)
    names = module.exports  # __all__, when the module declares one
    if names is not None and obj.name in {str(n) for n in names}:
        return True
    return not obj.name.startswith("_")


def _inherited_doc(cls: griffe.Class, name: str) -> bool:
    """Whether a base class of ``cls`` documents a member ``name``."""
    for base in cls.mro():
        member = base.members.get(name)
        if member is not None and not member.is_alias and member.docstring:
            return True
    for expr in cls.bases:  # bases outside qpeft (torch, transformers, ...): ask Python
        path = expr.canonical_path if hasattr(expr, "canonical_path") else str(expr)
        if path.startswith("qpeft."):
            continue
        module_name, _, attr = path.rpartition(".")
        try:
            base = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError):
            continue
        if getattr(getattr(base, name, None), "__doc__", None):
            return True
    return False


def missing_docstrings(package_name: str = "qpeft", search_path: Path = SRC) -> tuple[list[str], int]:
    """The public names of ``package_name`` (loaded from ``search_path``) without a docstring.

    Returns:
        (the dotted paths of the undocumented names, sorted; the number of public names checked).
    """
    package = griffe.load(package_name, search_paths=[str(search_path)], resolve_aliases=False)
    missing, checked = [], 0
    for module in public_modules(package):
        checked += 1
        if not module.docstring:
            missing.append(module.path)
        for obj in module.members.values():
            if obj.is_alias or not (obj.is_function or obj.is_class) or not _is_public(obj, module):
                continue
            checked += 1
            if not obj.docstring:
                missing.append(obj.path)
            if not obj.is_class:
                continue
            for member in obj.members.values():
                is_property = member.is_attribute and "property" in member.labels
                if member.is_alias or member.name.startswith("_") or not (member.is_function or is_property):
                    continue
                checked += 1
                if not member.docstring and not _inherited_doc(obj, member.name):
                    missing.append(member.path)
    return sorted(missing), checked


def unrendered_modules(package_name: str = "qpeft", search_path: Path = SRC, pages: Path = API_PAGES) -> list[str]:
    """Public modules that no API reference page renders (``::: qpeft.x`` in ``docs/api/*.md``)."""
    package = griffe.load(package_name, search_paths=[str(search_path)], resolve_aliases=False)
    rendered = set()
    for page in pages.glob("*.md"):
        rendered |= set(re.findall(r"^::: *([\w.]+)", page.read_text(), flags=re.MULTILINE))
    return [m.path for m in public_modules(package) if m.path not in rendered]


def on_config(config, **kwargs):
    """MkDocs hook: check the docstrings and the API pages before the build (module docstring)."""
    mode = config.extra.get("missing_docstrings", "fail")
    if mode not in ("fail", "list"):
        raise ValueError(f"mkdocs.yml extra.missing_docstrings must be 'fail' or 'list', got {mode!r}")
    for path in unrendered_modules():
        log.warning("public module %s is on no API reference page: add `::: %s` to a page in docs/api/", path, path)
    missing, checked = missing_docstrings()
    LIST_FILE.parent.mkdir(parents=True, exist_ok=True)
    LIST_FILE.write_text("".join(f"{name}\n" for name in missing))
    if mode == "fail":
        for name in missing:
            log.warning("public name without a docstring: %s", name)
    else:
        log.info(
            "%d of %d public names have no docstring (listed in %s; extra.missing_docstrings: fail makes each "
            "one fail the build)",
            len(missing),
            checked,
            LIST_FILE.relative_to(ROOT),
        )
    return config


if __name__ == "__main__":
    names, total = missing_docstrings()
    print("\n".join(names))
    print(f"{len(names)} of {total} public names have no docstring", file=sys.stderr)
    sys.exit(1 if names else 0)
