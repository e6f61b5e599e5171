"""``callcenter`` command line: run the server, migrate the database, manage console users, drive the demo PBX."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence

from callcenter.config import Config, ConfigError, load_config
from callcenter.logs import configure_logging
from callcenter.store.roles import LANGUAGES, ROLES


async def _db_upgrade(config: Config) -> None:
    from callcenter.store import Store

    store = Store.from_url(config.store.url, retry_for=config.store.retry_for)
    try:
        await store.upgrade()
    finally:
        await store.close()


#: Where scripts and tests hand over a new user's password: never on the command line, where every
#: local user can read it in ``ps`` and it lands in shell history.
PASSWORD_ENV = "CALLCENTER_NEW_PASSWORD"


def _read_new_password() -> str | None:
    """The new password from ``$CALLCENTER_NEW_PASSWORD``, else typed twice at the terminal."""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        print("callcenter: the passwords differ", file=sys.stderr)
        return None
    return first


async def _user_command(config: Config, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from callcenter.store import Store
    from callcenter.store.accounts import AccountError, Accounts

    store = Store.from_url(config.store.url, retry_for=config.store.retry_for)
    try:
        await store.upgrade()
        accounts = Accounts(
            store,
            session_lifetime=timedelta(hours=config.web.session_hours),
            session_max=timedelta(hours=config.web.session_max_hours),
        )
        if args.action == "list":
            for u in await accounts.list_users():
                row = (u.id, u.username, u.role, u.language, u.interface or "-", u.agency or "-", u.display_name)
                print("\t".join(str(v) for v in row))
            return 0
        if args.action in ("deactivate", "activate"):
            user_id = await accounts.user_id_of(args.username)
            if user_id is None:
                print(f"callcenter: no user {args.username!r}", file=sys.stderr)
                return 1
            changed = await accounts.set_active(user_id, args.action == "activate")
            # Running app nodes close the user's open consoles at once (the store's signal), or at the
            # latest within [web] session_check_seconds.
            print(f"{args.action}d {changed.role} {changed.username!r} (id {changed.id})")
            return 0
        password = _read_new_password()
        if password is None:
            return 1
        try:
            user = await accounts.create_user(
                args.username,
                args.name,
                password,
                args.role,
                language=args.language,
                interface=args.interface,
                agency=args.agency,
            )
        except AccountError as exc:
            print(f"callcenter: cannot add user: {exc}", file=sys.stderr)
            return 1
        print(f"added {user.role} {user.username!r} (id {user.id})")
        return 0
    finally:
        await store.close()


async def _retention_command(config: Config, dry_run: bool) -> int:
    """Apply ``[retention]`` once (cron/systemd timer); prints what was (or would be) done as JSON."""
    import json

    from callcenter.store import Store
    from callcenter.store.leadership import RETENTION_KEY, one_at_a_time
    from callcenter.supervision.retention import run_retention

    store = Store.from_url(config.store.url, retry_for=config.store.retry_for)
    try:
        await store.upgrade()
        # Every node's timer runs it (each node's own prompt files); on one database they take turns.
        async with one_at_a_time(store.engine.url, RETENTION_KEY):
            report = await run_retention(
                store,
                config.retention,
                recordings_root=config.supervision.recordings_root,
                record_dir=config.queue.record_dir,
                upload_dir=config.dispatch.upload_dir,
                prompt_dir=config.dispatch.prompt_dir,
                report_dir=config.report.upload_dir,
                dry_run=dry_run,
            )
    finally:
        await store.close()
    print(json.dumps(report.as_dict(), indent=2))
    return 1 if report.errors else 0


async def _stats_command(config: Config, action: str) -> int:
    """Bring the statistics roll-up up to date (``refresh``) or recompute it from the raw rows (``rebuild``,
    e.g. after restoring a backup taken without it); the app also refreshes it on every statistics read."""
    import time

    from callcenter.store import Store
    from callcenter.store.rollup import Rollup

    store = Store.from_url(config.store.url, retry_for=config.store.retry_for)
    try:
        await store.upgrade()
        rollup = Rollup(store)
        started = time.monotonic()
        hours = await (rollup.rebuild() if action == "rebuild" else rollup.refresh())
    finally:
        await store.close()
    print(f"statistics roll-up: {hours} hours recomputed in {time.monotonic() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callcenter", description=__doc__)
    parser.add_argument("-c", "--config", help="TOML config file (default: $CALLCENTER_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the FastAGI server, AMI tracker and web console")
    watchdog = sub.add_parser(
        "supervise",
        help="run `callcenter run` under a watchdog speaking systemd's notify protocol "
        "(where PID 1 is not systemd; production uses deploy/systemd/callcenter.service)",
    )
    watchdog.add_argument("--watchdog-sec", type=float, default=3.0, help="longest silence between pings")
    watchdog.add_argument("--start-timeout", type=float, default=60.0, help="seconds from start to READY=1")
    watchdog.add_argument("--restart-sec", type=float, default=0.5, help="pause before a restart")
    sub.add_parser(
        "check-config", help="validate the configuration, agency and district files; print problems (exit 1 on error)"
    )
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])
    demo = sub.add_parser("demo", help="start the test PBX with demo call-takers and run the app against it")
    demo.add_argument("--no-takers", action="store_true", help="do not start the SIPp demo call-takers")
    demo.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="app nodes: 1 on the embedded SQLite (default); 2 on a throwaway PostgreSQL, consoles on the web "
        "port and the next (8080, 8081)",
    )
    call = sub.add_parser("call", help="place a test call into the running demo PBX with SIPp")
    call.add_argument("number", nargs="?", default="112")
    call.add_argument("--from", dest="caller", default="081234567890", help="caller id to present")
    call.add_argument("--hold", type=float, default=8.0, help="seconds the caller stays on the line")
    user = sub.add_parser("user", help="console accounts")
    user_sub = user.add_subparsers(dest="action", required=True)
    add = user_sub.add_parser(
        "add", help=f"add a console user (password from ${PASSWORD_ENV} or asked for; never an argument)"
    )
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", required=True, help="display name shown to colleagues")
    add.add_argument("--interface", help="the call-taker's queue member interface, e.g. PJSIP/taker1")
    add.add_argument("--language", default="id", choices=LANGUAGES)
    add.add_argument("--agency", help="for agency officers: the agency they act for")
    user_sub.add_parser("list", help="list console users")
    for verb, why in (
        ("deactivate", "stop a user logging in; ends their sessions and closes their open consoles"),
        ("activate", "let a deactivated user log in again"),
    ):
        user_sub.add_parser(verb, help=why).add_argument("username")
    retention = sub.add_parser("retention", help="data retention (UU PDP): old recordings and personal data")
    retention_sub = retention.add_subparsers(dest="action", required=True)
    retention_run = retention_sub.add_parser(
        "run", help="delete old recordings and anonymise old personal fields, per [retention]"
    )
    retention_run.add_argument("--dry-run", action="store_true", help="only count; change and write nothing")
    stats = sub.add_parser("stats", help="the statistics roll-up behind /api/stats")
    stats.add_argument(
        "action", choices=["refresh", "rebuild"], help="refresh: recompute the hours changed; rebuild: all of them"
    )
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"callcenter: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "run" and not config.agi.secret:
        # Without it any local process could pose as Asterisk (accept dispatches, fake ratings).
        print(
            "callcenter: set CALLCENTER_AGI_SECRET (16+ letters, digits, '-', '_') and the same value in the "
            "dialplan: CC_AGI_URL=agi://host:port/<secret>",
            file=sys.stderr,
        )
        return 2
    if args.command == "demo":
        from callcenter.demo import MAX_NODES

        if not 1 <= args.nodes <= MAX_NODES:
            # Refused before logging is configured: nothing is started, and nothing binds to this stderr.
            print(f"callcenter: --nodes takes 1 to {MAX_NODES}", file=sys.stderr)
            return 2
    configure_logging(config.log.level, config.log.json, config.log.pseudonym_key)

    if args.command == "run":
        import faulthandler

        from callcenter.app import serve

        # A watchdog's SIGABRT (systemd or ours) then prints every thread's stack before the process dies:
        # where a blocked event loop was stuck.
        faulthandler.enable()
        asyncio.run(serve(config))
        return 0
    if args.command == "supervise":
        from callcenter.watchdog import WatchdogSettings, supervise

        settings = WatchdogSettings(
            watchdog_sec=args.watchdog_sec, start_timeout=args.start_timeout, restart_sec=args.restart_sec
        )
        config_args = ["-c", args.config] if args.config else []
        return asyncio.run(supervise([sys.executable, "-m", "callcenter.cli", *config_args, "run"], settings))
    if args.command == "check-config":
        from callcenter.checks import check_config, print_report

        return print_report(check_config(config))
    if args.command == "db":
        asyncio.run(_db_upgrade(config))
        print("database is at the newest schema")
        return 0
    if args.command == "user":
        return asyncio.run(_user_command(config, args))
    if args.command == "retention":
        return asyncio.run(_retention_command(config, args.dry_run))
    if args.command == "stats":
        return asyncio.run(_stats_command(config, args.action))
    from callcenter import demo as demo_mod

    if args.command == "demo":
        return asyncio.run(
            demo_mod.run_demo(config, takers=not args.no_takers, config_path=args.config, nodes=args.nodes)
        )
    return asyncio.run(demo_mod.place_call(config, args.number, args.caller, args.hold))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
