"""Fixtures of the fault tests: a PostgreSQL server each test may stop and restart (function scope)."""
from __future__ import annotations

import pytest

from tests.faults.pgserver import server_or_skip


@pytest.fixture
def pg():
    """A fresh PostgreSQL server (see :class:`tests.faults.pgserver.PgServer`), removed afterwards."""
    server = server_or_skip().start()
    try:
        yield server
    finally:
        server.remove()
