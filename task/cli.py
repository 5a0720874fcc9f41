"""The ``taskbus`` command: one subcommand per app, flags generated from its settings.

Apps are imported only when their subcommand runs, so ``taskbus --help`` works with no
extras installed. A user mistake prints one line and exits 2; a failure at run time exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, cast

from task import __version__
from task.app import App
from task.errors import ConfigError, MissingExtraError, TaskError
from task.logs import configure_logging
from task.settings import AppSettings, gen_config, load_settings, show_config

__all__ = ["main", "COMMANDS"]

logger = logging.getLogger(__name__)

#: subcommand -> (app class import string, the extra its dependencies come from, summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "worker": ("task.apps.worker:WorkerApp", "", "run a worker class on a bus"),
    "send": ("task.apps.send:SendApp", "", "create one task and send it"),
    "ledger": ("task.apps.ledger_admin:LedgerAdmin", "", "set up and inspect the outstanding-task ledger"),
    "bench": ("task.bench:BenchApp", "", "measure tasks/s through a real Launcher"),
    "quickstart": ("task.apps.quickstart:QuickstartApp", "", "run a taskmaster and a worker on the file bus"),
    "cron": ("task.apps.cron:CronApp", "apps", "create tasks on cron schedules"),
    "retry": ("task.apps.retry:RetryApp", "", "resend failed tasks with backoff"),
    "files": ("task.apps.files:FilesApp", "apps", "create a task per new file"),
    "batch": ("task.apps.batch:BatchApp", "", "create one task per time step (backfill)"),
    "recover": ("task.apps.recover:RecoverApp", "", "resend tasks the ledger says were lost"),
    "http": ("task.apps.http:HttpApp", "apps", "create tasks from HTTP requests"),
    "recap": ("task.apps.recap:RecapApp", "", "summarise done tasks per type"),
    "logger": ("task.apps.logger:LoggerApp", "", "archive a topic to hourly files"),
}


class _Usage(Exception):
    """A usage error caught before settings exist."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise _Usage(f"{self.prog}: {message} (see {self.prog} -h)")


def _load_app(name: str) -> type[App]:
    target, extra, _ = COMMANDS[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and not err.name.startswith("task"):
            hint = f"pip install 'taskbus[{extra}]'" if extra else "pip install taskbus"
            raise MissingExtraError(f"taskbus {name} needs {err.name}: {hint}") from err
        raise
    return cast(type[App], getattr(module, attr))


def _flag_type(annotation: Any) -> tuple[str, Any]:
    """How a settings field is typed on the command line: ("bool"|"list"|"value", item type)."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "bool", bool
    if origin in (list, tuple, set) or annotation in (list, tuple, set):
        return "list", str
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _flag_type(args[0])
    return "value", str


def build_parser(name: str, settings_cls: type[AppSettings], summary: str) -> argparse.ArgumentParser:
    """The parser of one subcommand: its settings' fields as flags, plus the common ones."""
    parser = _Parser(prog=f"taskbus {name}", description=summary)
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--gen-config", action="store_true", help="print a commented TOML of every setting")
    parser.add_argument("--show-config", action="store_true", help="print the effective settings (secrets masked)")
    parser.add_argument("--version", action="version", version=f"taskbus {__version__}")
    for field_name, info in settings_cls.model_fields.items():
        kind, _ = _flag_type(info.annotation)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        help_text = info.description or field_name
        if extra.get("positional"):
            nargs = "*" if kind == "list" else "?"
            parser.add_argument(field_name, nargs=nargs, default=None, help=help_text)
            continue
        flag = str(extra.get("flag") or "--" + field_name.replace("_", "-"))
        short = extra.get("short")
        names = [flag, short] if isinstance(short, str) else [flag]
        if kind == "bool":
            parser.add_argument(*names, dest=field_name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind == "list":
            parser.add_argument(*names, dest=field_name, action="append", default=None, metavar="VALUE", help=help_text + " (repeatable)")
        else:
            parser.add_argument(*names, dest=field_name, default=None, metavar=field_name.upper(), help=help_text)
    return parser


def _top_usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {n:<{width}}  {s}" for n, (_, _, s) in COMMANDS.items())
    return (
        f"usage: taskbus COMMAND [options]   (taskbus COMMAND -h for its options)\n\n"
        f"taskbus {__version__}: JSON tasks between taskmasters, a bus and workers.\n\n"
        f"commands:\n{rows}\n"
    )


async def _run_app(app: App) -> int:
    loop = asyncio.get_running_loop()
    stops = 0

    def on_signal() -> None:
        nonlocal stops
        stops += 1
        if stops > 1:
            logger.warning("second signal: exiting now")
            raise SystemExit(1)
        logger.info("signal received: stopping")
        loop.create_task(app.stop())

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        status = await app.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return int(status or 0)


def run_command(argv: Sequence[str]) -> int:
    """Run ``taskbus`` with ``argv`` (without the program name); returns the exit status."""
    if not argv:
        print(_top_usage(), end="", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_top_usage(), end="")
        return 0
    if argv[0] == "--version":
        print(f"taskbus {__version__}")
        return 0
    name, rest = argv[0], list(argv[1:])
    if name not in COMMANDS:
        raise _Usage(f"taskbus: unknown command {name!r}; commands: {', '.join(COMMANDS)}")
    app_cls = _load_app(name)
    parser = build_parser(name, app_cls.Settings, COMMANDS[name][2])
    args = vars(parser.parse_args(rest))
    config_file = args.pop("config")
    if args.pop("gen_config"):
        print(gen_config(app_cls.Settings))
        return 0
    want_show = args.pop("show_config")
    settings = load_settings(app_cls.Settings, config_file, **args)
    if want_show:
        print(show_config(settings))
        return 0
    configure_logging(settings.log_level, settings.log_format)
    app = app_cls.from_settings(settings)
    return asyncio.run(_run_app(app))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskbus`` command."""
    try:
        status = run_command(sys.argv[1:] if argv is None else argv)
    except (ConfigError, _Usage) as err:
        print(f"taskbus: {err}" if not str(err).startswith("taskbus") else str(err), file=sys.stderr)
        status = 2
    except TaskError as err:  # a bus or ledger failed at run time: one line, not a traceback
        logger.debug("failure", exc_info=True)
        print(f"taskbus: {err}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    if argv is None:
        sys.exit(status)
    return status


__all__ += ["build_parser", "run_command"]

if __name__ == "__main__":
    main()
