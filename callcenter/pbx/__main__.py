"""``python -m callcenter.pbx build|up|down|status``: the demo PBX.

``up`` builds the chroot if needed, starts Asterisk with two call-takers (``taker1`` and
``taker2``) plus a ``supervisor`` overflow line, and stays in the foreground until Ctrl-C (or
``down`` from another shell). ``callcenter call 112`` places a SIPp test call into it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from callcenter.pbx.chroot import default_cache_dir, ensure_chroot
from callcenter.pbx.demo import demo_spec
from callcenter.pbx.harness import PbxError, TestPbx

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pbx(args: argparse.Namespace, secret: str = "") -> TestPbx:
    spec = demo_spec(args.sip_port, args.ami_port, secret, args.agi_port)
    return TestPbx(spec, default_cache_dir() / "asterisk-sid", REPO_ROOT)


def cmd_up(args: argparse.Namespace) -> int:
    chroot = ensure_chroot(default_cache_dir())
    # Secrets arrive through the environment; without one we make a throwaway and show it.
    secret = os.environ.get("CALLCENTER_AMI_SECRET") or secrets.token_urlsafe(12)
    agi_secret = os.environ.get("CALLCENTER_AGI_SECRET") or secrets.token_urlsafe(24)
    spec = demo_spec(args.sip_port, args.ami_port, secret, args.agi_port, agi_secret)
    pbx = TestPbx(spec, chroot, REPO_ROOT)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    pbx.start()
    print(f"demo PBX up: SIP 127.0.0.1:{args.sip_port}, AMI 127.0.0.1:{args.ami_port} (user callcenter)")
    if "CALLCENTER_AMI_SECRET" not in os.environ:
        print(f"AMI secret (generated; set CALLCENTER_AMI_SECRET to choose one): {secret}")
    if "CALLCENTER_AGI_SECRET" not in os.environ:
        print(f"AGI secret (generated; set CALLCENTER_AGI_SECRET to choose one): {agi_secret}")
    print(f"log: {pbx.log_file}   Ctrl-C to stop")
    try:
        while not stop and pbx.running:
            time.sleep(0.5)
    finally:
        pbx.stop()
    print("demo PBX stopped")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    pbx = _pbx(args)
    pidfile = pbx.host_dir / "run" / "asterisk.pid"
    if not pidfile.is_file():
        print("demo PBX is not running")
        return 0
    # The `up` process notices Asterisk exiting and cleans up (/proc) itself.
    os.execvp("chroot", pbx.asterisk_cmd("-rx", "core stop now"))


def cmd_status(args: argparse.Namespace) -> int:
    pbx = _pbx(args)
    res = os.spawnvp(os.P_WAIT, "chroot", pbx.asterisk_cmd("-rx", "core show channels count"))
    if res != 0:
        print("demo PBX is not running")
        return 1
    os.spawnvp(os.P_WAIT, "chroot", pbx.asterisk_cmd("-rx", f"queue show {pbx.spec.queue}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m callcenter.pbx", description=__doc__.split("\n")[0])
    parser.add_argument("--sip-port", type=int, default=5060)
    parser.add_argument("--ami-port", type=int, default=5038)
    parser.add_argument("--agi-port", type=int, default=4573)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the Asterisk chroot into the cache if it is not there yet")
    sub.add_parser("up", help="start the demo PBX in the foreground")
    sub.add_parser("down", help="stop the demo PBX")
    sub.add_parser("status", help="channels and queue of the demo PBX")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            path = ensure_chroot(default_cache_dir(), progress=lambda line: print(f"[pbx] {line}", flush=True))
            print(f"test PBX chroot ready: {path}")
            return 0
        if args.command == "up":
            return cmd_up(args)
        if args.command == "down":
            return cmd_down(args)
        return cmd_status(args)
    except PbxError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
