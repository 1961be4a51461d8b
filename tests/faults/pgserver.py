"""The PostgreSQL server of the fault tests: :class:`harness.bench.pgserver.PgServer`, or the test is skipped."""
from __future__ import annotations

import pytest

from harness.bench.pgserver import PgServer, missing

__all__ = ["PgServer", "server_or_skip"]


def server_or_skip() -> PgServer:
    """A new (not yet started) server; skip the test, with the reason, when none can be started here."""
    why = missing()
    if why:
        pytest.skip(why)
    return PgServer()
