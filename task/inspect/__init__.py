"""Looking into the bus: backlog per topic and channel, the next tasks, dead letters."""

from task.inspect.base import CannotInspect, CannotPeek, Inspector, TopicStats, open_inspector

__all__ = ["CannotInspect", "CannotPeek", "Inspector", "TopicStats", "open_inspector"]
