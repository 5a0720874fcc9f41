"""Shared fixtures: every module in tests/servers/ contributes the fixtures in its __all__."""

from __future__ import annotations

import importlib
import pkgutil

import tests.servers as _servers

for _info in pkgutil.iter_modules(_servers.__path__):
    _module = importlib.import_module(f"tests.servers.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
