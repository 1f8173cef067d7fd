"""``qpeft providers``: the providers, backends and device presets this installation knows, and
where each comes from (qpeft itself, or the plugin package that registered it)."""

from __future__ import annotations

import json


def _registries():
    from qpeft.backends.base import REGISTRY as backends
    from qpeft.devices.presets import REGISTRY as devices
    from qpeft.jobs.providers import REGISTRY as providers

    return {"providers": providers, "backends": backends, "devices": devices}


def cmd_providers(args) -> int:
    """Print every registered name with its origin and target (``--json``: as JSON); with
    ``--check`` import each one. Returns 1 when a checked one fails to load, else 0."""
    registries = _registries()
    listing = {}
    for title, registry in registries.items():
        checked = registry.check_all() if args.check else {}
        listing[title] = [
            {"name": e.name, "from": e.origin, "target": e.target, **({"check": checked[e.name]} if checked else {})}
            for e in registry.entries().values()
        ]
    conflicts = [
        {"kind": c.kind, "name": c.name, "why": c.why, "claims": [f"{e.origin} ({e.target})" for e in c.claims]}
        for registry in registries.values()
        for c in registry.conflicts()
    ]
    if args.json:
        print(json.dumps({**listing, "conflicts": conflicts}, indent=2))
        return 0
    for title, rows in listing.items():
        print(f"{title} ({registries[title].group} entry points)")
        name_w = max(len(r["name"]) for r in rows) + 2
        from_w = max(len(r["from"]) for r in rows) + 2
        for r in rows:
            line = f"  {r['name']:{name_w}s}{r['from']:{from_w}s}{r['target']}"
            print(line + (f"  [{r['check']}]" if "check" in r else ""))
    for c in conflicts:
        print(f"not used: {c['kind']} {c['name']!r} from {', '.join(c['claims'])}: {c['why']}")
    if not args.check:
        print("(plugins are imported only when used; --check imports every one and reports what fails)")
    failed = [r for rows in listing.values() for r in rows if r.get("check", "ok") != "ok"]
    return 1 if failed else 0


def add_parsers(sub) -> None:
    """Add the ``providers`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "providers",
        help="list the quantum providers, backends and device presets, and where each comes from",
        description="List every name --quantum-backend, backend= and noise= accept: qpeft's own and those "
        "installed plugin packages register (entry-point groups qpeft.providers, qpeft.backends, "
        "qpeft.devices), with the distribution each comes from.",
    )
    p.add_argument("--check", action="store_true", help="import every one and say which fail (exit 1 if any does)")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.set_defaults(func=cmd_providers)
