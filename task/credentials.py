"""Secrets and TLS files for a bus, given as settings so they stay out of URLs and logs.

Shared by the settings (which read them), the bus registry (which passes them on) and each
bus (which uses what applies to it), so it lives at the top of the package, not in one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Credentials"]


@dataclass(frozen=True)
class Credentials:
    """Secrets and TLS files given as settings, so they stay out of URLs and logs."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed_file: str | None = None
    creds_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
