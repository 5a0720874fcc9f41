"""Server-rendered pages: the worker's status page and the shared stylesheet.

HTML is built with the escaping helpers of ``task.web.page``; ``style.css`` is the one
stylesheet every taskbus page links (the workflow console reuses it).
"""

from task.web.page import STYLESHEET_PATH, Markup, document, esc, stylesheet, tag
from task.web.worker_page import render_status_page

__all__ = ["STYLESHEET_PATH", "Markup", "document", "esc", "render_status_page", "stylesheet", "tag"]
