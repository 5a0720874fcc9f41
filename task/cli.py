"""The ``taskbus`` command: one subcommand per app, flags generated from its settings.

Apps are imported only when their subcommand runs, so ``taskbus --help`` works with no
extras installed. A user mistake prints one line and exits 2; a failure at run time exits 1.

SIGTERM and SIGINT are caught from the first line of ``main()``: a supervisor may stop a
worker while it is still importing and connecting, and that must be a clean exit, not
status 143. So this module imports nothing heavy at the top (no pydantic: settings, apps and
buses are imported inside the functions that need them); ``import task`` plus this module is
all that runs before the handlers are in place.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
import threading
import types
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from task import __version__
from task.errors import ConfigError, MissingExtraError, TaskError
from task.logs import configure_logging

if TYPE_CHECKING:
    from task.app import App
    from task.settings import AppSettings

__all__ = ["COMMANDS", "main"]

logger = logging.getLogger(__name__)

#: The signals that ask an app to stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: seconds within which the first stop signal, repeated, is the same stop delivered twice: a
#: supervisor that forwards it (``timeout``, ``uv run``) to a process that also got it from
#: its process group (a terminal's Ctrl-C, ``kill -- -PGID``)
SAME_STOP_WITHIN = 0.5

#: subcommand -> (app class import string, the extra its dependencies come from, summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "worker": ("task.apps.worker:WorkerApp", "", "run a worker class on a bus"),
    "send": ("task.apps.send:SendApp", "", "create one task and send it"),
    "cancel": ("task.apps.cancel:CancelApp", "", "cancel a delayed task not yet released"),
    "ledger": ("task.apps.ledger_admin:LedgerAdmin", "", "set up and inspect the outstanding-task ledger"),
    "topics": ("task.apps.topics:TopicsApp", "", "backlog per topic and channel: waiting, in flight, delayed"),
    "peek": ("task.apps.peek:PeekApp", "", "show the next tasks of a topic without consuming them"),
    "dlq": ("task.apps.dlq:DlqApp", "", "list, show and replay dead letters"),
    "bench": ("task.bench.app:BenchApp", "", "measure tasks/s through a real Launcher"),
    "quickstart": ("task.apps.quickstart:QuickstartApp", "", "run a taskmaster and a worker on the file bus"),
    "cron": ("task.apps.cron:CronApp", "apps", "create tasks on cron schedules"),
    "retry": ("task.apps.retry:RetryApp", "", "resend failed tasks with backoff"),
    "files": ("task.apps.files:FilesApp", "apps", "create a task per new file"),
    "batch": ("task.apps.batch:BatchApp", "", "create one task per time step (backfill)"),
    "recover": ("task.apps.recover:RecoverApp", "", "resend tasks the ledger says were lost"),
    "http": ("task.apps.http:HttpApp", "apps", "create tasks from HTTP requests"),
    "recap": ("task.apps.recap:RecapApp", "", "summarise done tasks per type"),
    "logger": ("task.apps.logger:LoggerApp", "", "archive a topic to hourly files"),
    "flow": ("task.apps.flow:FlowApp", "apps", "run workflows: phases, dependsOn, retries"),
}


class _Usage(Exception):
    """A usage error caught before settings exist."""


class EarlyStop:
    """SIGTERM/SIGINT remembered while the command starts, before an event loop runs.

    Installed with ``signal.signal`` as the first thing ``main()`` does; the loop's own
    handlers replace it while the app runs (``_run_app``), which then sees a stop requested
    earlier and exits 0 before the app starts. A second signal during start-up exits at once.
    """

    def __init__(self) -> None:
        #: the first stop signal received, None while none came
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Catch the stop signals (only the main thread may; elsewhere this does nothing)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            previous = signal.signal(sig, self._on_signal)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        """Put back the handlers found by the first ``install()`` (for callers in-process)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        if self.signum is not None:
            raise SystemExit(1)  # asked twice while starting: stop starting
        self.signum = signum


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
    return cast("type[App]", getattr(module, attr))


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


def _default_text(info: Any) -> str:
    """`` (default: X)`` for a flag's help; nothing for secrets or empty defaults."""
    from pydantic import SecretStr

    from task.duration import format_duration
    from task.settings import is_duration

    default = info.get_default(call_default_factory=True)
    if isinstance(default, SecretStr) or default in ("", None, [], ()):
        return ""
    if "default" in (info.description or ""):
        return ""  # the description already says it in words
    if is_duration(info):
        text = format_duration(float(default))
    elif isinstance(default, bool):
        text = "on" if default else "off"
    else:
        text = str(default)
    return f" (default: {text})".replace("%", "%%")


def build_parser(name: str, settings_cls: type[AppSettings], summary: str) -> argparse.ArgumentParser:
    """The parser of one subcommand: its settings' fields as flags (each help line ends with
    its default), plus the common ones."""
    parser = _Parser(prog=f"taskbus {name}", description=summary)
    parser.add_argument("-c", "--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--gen-config", action="store_true", help="print a commented TOML of every setting")
    parser.add_argument("--show-config", action="store_true", help="print the effective settings (secrets masked)")
    parser.add_argument("--version", action="version", version=f"taskbus {__version__}")
    for field_name, info in settings_cls.model_fields.items():
        kind, _ = _flag_type(info.annotation)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        help_text = (info.description or field_name).replace("%", "%%")
        if extra.get("positional"):
            nargs = "*" if kind == "list" else "?"
            parser.add_argument(field_name, nargs=nargs, default=None, help=help_text)
            continue
        flag = str(extra.get("flag") or "--" + field_name.replace("_", "-"))
        short = extra.get("short")
        names = [flag, short] if isinstance(short, str) else [flag]
        help_text += _default_text(info)
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


async def _run_app(app: App, early: EarlyStop | None = None) -> int:
    """Run ``app`` with the loop's signal handlers: the first signal calls ``app.stop()``,
    a second exits at once (the first one repeated within ``SAME_STOP_WITHIN`` is the same
    stop, delivered twice). A stop that came during start-up (``early``) ends here, before
    ``run()``: the app has connected nothing and run no task yet, so there is nothing to
    stop and the exit is clean."""
    loop = asyncio.get_running_loop()
    first: tuple[int, float] | None = None  # the first stop signal and when it came
    #: the stop() started by a signal: kept, so it is not collected mid-way and its failure is seen
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        nonlocal first
        now = loop.time()
        if first is None:
            first = signum, now
            logger.info("signal received: stopping")
            stopping.append(loop.create_task(app.stop()))
        elif signum == first[0] and now - first[1] < SAME_STOP_WITHIN:
            logger.debug("%s again at once: the same stop, delivered twice", signal.Signals(signum).name)
        else:
            logger.warning("second signal: exiting now")
            raise SystemExit(1)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        if early is not None and early.signum is not None:
            logger.info("%s received while starting: exiting before the first task",
                        signal.Signals(early.signum).name)
            return 0
        status = await app.run()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        if early is not None:
            early.install()  # a signal while the loop closes is still a clean stop
        for task in stopping:
            try:
                await task
            except Exception:
                logger.exception("stopping %s failed", type(app).__name__)
    return int(status or 0)


def _unknown_command(name: str) -> _Usage:
    import difflib

    close = difflib.get_close_matches(name, COMMANDS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"commands: {', '.join(COMMANDS)}"
    return _Usage(f"taskbus: unknown command {name!r}; {hint}")


def run_command(argv: Sequence[str], early: EarlyStop | None = None) -> int:
    """Run ``taskbus`` with ``argv`` (without the program name); returns the exit status.
    ``early`` holds a stop signal received before the app runs (``main()`` installs it)."""
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
        raise _unknown_command(name)
    from task.settings import gen_config, load_settings, show_config

    app_cls = _load_app(name)
    parser = build_parser(name, app_cls.Settings, COMMANDS[name][2])
    args = vars(parser.parse_args(rest))
    config_file = args.pop("config")
    if args.pop("gen_config"):
        print(gen_config(app_cls.Settings))
        return 0
    want_show = args.pop("show_config")
    settings = load_settings(app_cls.Settings, config_file, section=name, sections=COMMANDS, **args)
    if want_show:
        print(show_config(settings))
        return 0
    configure_logging(settings.log_level, settings.log_format)
    app = app_cls.from_settings(settings)
    return asyncio.run(_run_app(app, early))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskbus`` command."""
    early = EarlyStop()
    early.install()  # first: a SIGTERM while starting must not kill the process (status 143)
    try:
        status = run_command(sys.argv[1:] if argv is None else argv, early)
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
        sys.exit(status)  # the handlers stay: a late signal cannot turn this status into 143
    early.restore()
    return status


__all__ += ["STOP_SIGNALS", "EarlyStop", "build_parser", "run_command"]

if __name__ == "__main__":
    main()
