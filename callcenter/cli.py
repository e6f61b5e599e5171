"""``callcenter`` command line: run the server, migrate the database, drive the demo PBX."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from callcenter.config import Config, ConfigError, load_config
from callcenter.logs import configure_logging


async def _db_upgrade(config: Config) -> None:
    from callcenter.store import Store

    store = Store.from_url(config.store.url, retry_for=config.store.retry_for)
    try:
        await store.upgrade()
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callcenter", description=__doc__)
    parser.add_argument("-c", "--config", help="TOML config file (default: $CALLCENTER_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the FastAGI server, AMI tracker and web console")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])
    demo = sub.add_parser("demo", help="start the test PBX with demo call-takers and run the app against it")
    demo.add_argument("--no-takers", action="store_true", help="do not start the SIPp demo call-takers")
    call = sub.add_parser("call", help="place a test call into the running demo PBX with SIPp")
    call.add_argument("number", nargs="?", default="112")
    call.add_argument("--from", dest="caller", default="081234567890", help="caller id to present")
    call.add_argument("--hold", type=float, default=8.0, help="seconds the caller stays on the line")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"callcenter: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.json)

    if args.command == "run":
        from callcenter.app import serve

        asyncio.run(serve(config))
        return 0
    if args.command == "db":
        asyncio.run(_db_upgrade(config))
        print("database is at the newest schema")
        return 0
    from callcenter import demo as demo_mod

    if args.command == "demo":
        return asyncio.run(demo_mod.run_demo(config, takers=not args.no_takers))
    return asyncio.run(demo_mod.place_call(config, args.number, args.caller, args.hold))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
