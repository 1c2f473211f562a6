"""What `copier_flatten` and `copier_kill` share: choosing groups and followers by name."""

from __future__ import annotations

import getpass
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from copier.models import CopyGroup, Follower


def targets_add(parser: ArgumentParser, *, followers: bool) -> None:
    parser.add_argument("--group", action="append", default=[], metavar="NAME",
                        help="A copy group by name (repeat for several).")
    if followers:
        parser.add_argument("--follower", action="append", default=[], metavar="ACCOUNT",
                            help="A follower by its account's name (repeat for several).")
    parser.add_argument("--all", action="store_true", help="Every copy group.")
    parser.add_argument("--by", default="", help="Who acts (default: cli:<login user>).")


def targets_parse(options: dict[str, Any]) -> tuple[list[CopyGroup] | None,
                                                    list[Follower] | None]:
    """(groups, followers) as the kill switch takes them; None, None: every group.

    An unknown name is an error that names it, before anything is changed."""
    names, accounts = options["group"], options.get("follower", [])
    if options["all"] and (names or accounts):
        raise CommandError("--all cannot be combined with --group or --follower")
    if not (options["all"] or names or accounts):
        raise CommandError("say what: --group NAME, --follower ACCOUNT or --all")
    if options["all"]:
        return None, None
    groups = list(CopyGroup.objects.filter(name__in=names))
    missing = sorted(set(names) - {g.name for g in groups})
    if missing:
        raise CommandError(f"no such copy group: {', '.join(missing)}")
    followers = list(Follower.objects.filter(account__name__in=accounts)
                     .select_related("account", "group"))
    missing = sorted(set(accounts) - {f.account.name for f in followers})
    if missing:
        raise CommandError(f"not a follower of any group: {', '.join(missing)}")
    return (groups if names else None), (followers if accounts else None)


def actor(options: dict[str, Any]) -> str:
    if options["by"]:
        return str(options["by"])
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name in a container: still say it came from the command
        return "cli"
