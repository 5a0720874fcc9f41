"""The web console of ``taskbus flow``: server-rendered pages on its status port (tasks by
day, a task's chain, alerts, files, workflows as graphs, backload, about). See
``docs/console.md``."""

from task.flow.console.routes import ConsoleRoutes, ConsoleView

__all__ = ["ConsoleRoutes", "ConsoleView"]
