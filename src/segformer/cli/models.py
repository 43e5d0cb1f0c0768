"""`segformer models`: list the named models."""

from __future__ import annotations

import argparse


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named models (and their hub ids)")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from ..models.zoo import ZOO

    for name in sorted(ZOO):
        entry = ZOO[name]
        print(f"{name:32s} {entry.hub_id or '-':48s} {entry.description}")
    return 0
