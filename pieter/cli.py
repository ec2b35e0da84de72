"""The `pieter` command: each subcommand a function returning an exit code; the work is done elsewhere."""

import argparse
import logging
import socket
import sys

from pieter import __version__
from pieter.config import ConfigError, load


def inherited_socket() -> socket.socket | None:
    """The listening socket systemd passed us (socket activation), if any."""
    from systemd import daemon

    fds = daemon.listen_fds()
    if len(fds) > 1:
        logging.warning("systemd passed %d sockets: serving the first only (give pieter-ci.socket one "
                        "ListenStream=)", len(fds))  # fmt: skip
    return socket.socket(fileno=fds[0]) if fds else None


def serve(args: argparse.Namespace) -> int:
    """Serve the API: on the socket systemd passes (exiting when idle), else on PIETER_API_HOST:PORT."""
    from systemd import daemon

    from pieter import tokens
    from pieter.app import create_app, create_error_app

    sock = inherited_socket()
    try:
        config = load()
        app = create_app(config, idle_exit=sock is not None, local_only=tokens.is_local(sock, config.api_host))
    except ConfigError as e:
        if sock is None:
            raise
        logging.error("configuration error: %s", e)
        app = create_error_app(f"configuration error: {e}; fix it, then: systemctl restart pieter-ci.service")

    @app.after_server_start
    async def ready(app: object) -> None:
        daemon.notify("READY=1")

    @app.before_server_stop
    async def stopping(app: object) -> None:
        daemon.notify("STOPPING=1")

    # single_process: worker mode would shut an inherited socket down and break socket activation
    if sock is not None:
        app.run(sock=sock, single_process=True, access_log=False)
    else:
        app.run(host=config.api_host, port=config.api_port, single_process=True, access_log=False)
    return 0


def collect(args: argparse.Namespace) -> int:
    """The job unit's `ExecStopPost=+`: complete the job's log from the journal and record its end."""
    import asyncio
    import os

    from pieter.runners.collector import collect as collect_job

    asyncio.run(collect_job(load(), args.job_id, dict(os.environ)))
    return 0


def token(args: argparse.Namespace) -> int:
    """`pieter token add NAME | list | revoke NAME`, against the Redis in the configuration."""
    import asyncio

    from pieter import tokens
    from pieter.errors import PieterError
    from pieter.models import check_name
    from pieter.store import Store, connect

    async def act() -> int:
        store = Store(connect(load().redis))
        try:
            if args.action == "list":
                print("\n".join(await store.token_names()))
            elif args.action == "add":
                secret = tokens.new_secret()
                await store.add_token(check_name("token", args.name), tokens.digest(secret))
                print(secret)
                print(f"(token {args.name!r} made: this is the only time it is shown)", file=sys.stderr)
            else:
                await store.revoke_token(args.name)
            return 0
        except PieterError as e:
            print(f"pieter token: {e.message}", file=sys.stderr)
            return 1
        finally:
            await store.redis.close()

    if args.action != "list" and not args.name:
        print(f"pieter token {args.action}: give the token's NAME", file=sys.stderr)
        return 2
    return asyncio.run(act())


def client_command(args: argparse.Namespace) -> int:
    """repos, run, jobs, log, cancel: a client of the server at PIETER_URL."""
    import signal

    from pieter import client

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `pieter log 5 | head` ends quietly
    try:
        api = client.Client(load())
        if args.command == "repos":
            return client.repos(api)
        if args.command == "run":
            env = dict(item.split("=", 1) for item in args.env)
            return client.run(api, args.repo, args.scenario, env, args.follow)
        if args.command == "jobs":
            return client.jobs(api, args.repo, args.state, args.limit)
        if args.command == "log":
            return client.log(api, args.job_id, args.follow)
        return client.cancel(api, args.job_id)
    except client.ClientError as e:
        print(f"pieter {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C stops the client only: a followed job runs on
        print(file=sys.stderr)
        return 130


def key_value(text: str) -> str:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return text


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number, 1 or more")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pieter", description="Pieter CI, a lightweight private CI server.")
    parser.add_argument("--version", action="version", version=f"pieter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the HTTP API and run jobs").set_defaults(func=serve)
    collector = commands.add_parser("collect", help="(run by a job's systemd unit) record how the job ended")
    collector.add_argument("job_id", type=int)
    collector.set_defaults(func=collect)
    tokens = commands.add_parser("token", help="API tokens: add NAME (shows the secret once), list, revoke NAME")
    tokens.add_argument("action", choices=["add", "list", "revoke"])
    tokens.add_argument("name", nargs="?")
    tokens.set_defaults(func=token)
    commands.add_parser("repos", help="list the server's repos").set_defaults(func=client_command)
    run = commands.add_parser("run", help="queue a job; --follow streams its log and exits with its exit code")
    run.add_argument("repo")
    run.add_argument("scenario")
    run.add_argument("-e", "--env", action="append", default=[], type=key_value, metavar="KEY=VALUE")
    run.add_argument("-f", "--follow", action="store_true")
    run.set_defaults(func=client_command)
    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--repo")
    jobs.add_argument("--state")
    jobs.add_argument("--limit", type=positive, default=20)
    jobs.set_defaults(func=client_command)
    logs = commands.add_parser("log", help="print a job's log; -f follows it until the job ends")
    logs.add_argument("job_id", type=int)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=client_command)
    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id", type=int)
    cancel.set_defaults(func=client_command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"pieter: configuration error: {e}", file=sys.stderr)
        return 2
