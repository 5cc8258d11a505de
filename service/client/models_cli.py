"""`headwise models ...`: the registry from the command line (list, show, aliases, rollback, notes, delete)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.client.cli_base import Command, client, when
from service.client.render import baseline_summary, baseline_table, table

if TYPE_CHECKING:
    from service.api.schemas import AliasEventRead



def _dump(data: Any) -> str:
    data = [d.model_dump(mode="json") for d in data] if isinstance(data, list) else data.model_dump(mode="json")
    return json.dumps(data, indent=2)


def _move(event: AliasEventRead) -> str:
    before = "-" if event.from_version is None else f"v{event.from_version}"
    after = "-" if event.to_version is None else f"v{event.to_version}"
    return f"{event.alias}: {before} -> {after} ({event.action})"


def cmd_ls(args: argparse.Namespace) -> int:
    with client(args) as c:
        items = c.list_models()
    if args.json:
        print(_dump(items))
        return 0
    print(table([(m.name, m.latest_version, when(m.created_at)) for m in items], ["model", "latest", "created"]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with client(args) as c:
        model = c.get_model(args.name)
    if args.json:
        print(_dump(model))
        return 0
    aliases = ", ".join(f"{a.alias}=v{a.version}" for a in model.aliases) or "-"
    print(f"model {model.name}  latest v{model.latest_version}  aliases: {aliases}")
    rows = [(v.version, ", ".join(v.aliases), f"{v.parent.name} v{v.parent.version}" if v.parent else "",
             ", ".join(v.tags), (v.description or "")[:50], baseline_summary(v.metrics.model_dump(mode="json")),
             when(v.created_at)) for v in model.versions]
    print(table(rows, ["version", "aliases", "from (warm start)", "tags", "description", "vs baseline", "created"]))
    if model.versions:  # the latest version's heads beside their trivial baselines
        latest = max(model.versions, key=lambda v: v.version)
        text = baseline_table(latest.metrics.model_dump(mode="json"))
        if text:
            print(f"\nv{latest.version} vs trivial baselines:\n{text}")
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.alias_command == "set":
            print(_move(c.set_alias(args.name, args.alias, args.version)))
        elif args.alias_command == "rm":
            c.delete_alias(args.name, args.alias)
            print(f"deleted alias {args.alias}")
        elif args.alias_command == "rollback":
            print(_move(c.rollback_alias(args.name, args.alias)))
        else:
            for event in c.alias_history(args.name, args.alias):
                who = event.key_name or event.key_id or "server"
                print(f"{event.seq:>4}  {when(event.created_at)}  {_move(event)}  by {who}")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.version_command == "rm":
            c.delete_version(args.name, args.version)
            print(f"deleted {args.name} v{args.version}")
            return 0
        changes: dict[str, Any] = {}
        if args.description is not None:
            changes["description"] = args.description
        if args.tags is not None:
            changes["tags"] = [t for t in args.tags.split(",") if t]
        v = c.update_version(args.name, args.version, **changes)
    print(f"{args.name} v{v.version}  tags: {', '.join(v.tags) or '-'}  description: {v.description or '-'}")
    return 0


def add_models_commands(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser,
                        guard: Callable[[Command], Command]) -> None:
    models = subparsers.add_parser("models", help="registered models: list, show, aliases, notes, delete")
    msub = models.add_subparsers(dest="models_command", metavar="{ls,show,alias,version}", required=True)
    msub.add_parser("ls", parents=[common], help="list models").set_defaults(func=guard(cmd_ls))
    p = msub.add_parser("show", parents=[common], help="a model's aliases and versions")
    p.add_argument("name")
    p.set_defaults(func=guard(cmd_show))

    alias = msub.add_parser("alias", help="set (promote), rm, rollback an alias; its history")
    asub = alias.add_subparsers(dest="alias_command", metavar="{set,rm,rollback,history}", required=True)
    for name, text in (("set", "point ALIAS at VERSION"), ("rm", "delete an alias"),
                       ("rollback", "move ALIAS back to its previous version"), ("history", "every move")):
        p = asub.add_parser(name, parents=[common], help=text)
        p.add_argument("name", help="model name")
        p.add_argument("alias")
        if name == "set":
            p.add_argument("version", type=int)
        p.set_defaults(func=guard(cmd_alias))

    version = msub.add_parser("version", help="edit (description, tags) or rm a version")
    vsub = version.add_subparsers(dest="version_command", metavar="{edit,rm}", required=True)
    p = vsub.add_parser("edit", parents=[common], help="set description and/or tags")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--description")
    p.add_argument("--tags", help="comma-separated; replaces the version's tags ('' clears them)")
    p.set_defaults(func=guard(cmd_version))
    p = vsub.add_parser("rm", parents=[common], help="delete a version and its files")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.set_defaults(func=guard(cmd_version))
