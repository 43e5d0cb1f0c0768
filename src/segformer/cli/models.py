"""`segformer models`: list the named models."""

from __future__ import annotations

import argparse


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named models (and their hub ids)")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from ..models.zoo import ZOO

    rows = [(name, ZOO[name].hub_id or "-", ZOO[name].description) for name in sorted(ZOO)]
    widths = [max(len(row[i]) for row in rows + [("name", "hub id", "")]) for i in (0, 1)]
    for name, hub, description in [("name", "hub id", "description")] + rows:
        print(f"{name:{widths[0]}s}  {hub:{widths[1]}s}  {description}".rstrip())
    return 0
