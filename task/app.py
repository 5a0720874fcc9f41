"""What every ``taskbus`` app is: built from settings, run until done or stopped.

The CLI finds an app class by import string, builds its ``Settings`` from TOML, environment
and flags, then awaits ``run()``. ``asyncio.run`` and signal handling live in the CLI only.
The taskmasters and utilities share one lifecycle (open their parts and status server, run,
close): they subclass ``task.apps.lifecycle.LifecycleApp``.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from task.settings import AppSettings

__all__ = ["App"]


@runtime_checkable
class App(Protocol):
    """A taskmaster, worker or utility run by ``taskbus <name>``."""

    #: the settings model; its fields become the command's flags
    Settings: ClassVar[type[AppSettings]]

    @classmethod
    def from_settings(cls, settings: AppSettings) -> App:
        """Build the app. No I/O here.

        Raises:
            ConfigError: the settings are inconsistent.
        """

    async def run(self) -> int | None:
        """Run until finished or stopped; the return value is the exit status (None: 0)."""

    async def stop(self) -> None:
        """Finish cleanly and make ``run()`` return. Idempotent; called on SIGTERM/SIGINT."""
