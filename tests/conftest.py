"""Session fixtures shared by several test modules: a real redis-server for the
fleet's store tests (tests/redis_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer, start_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (tests keep apart by key prefix). Skips
    without the binary, but fails under CI=true, where .ci/run installs it."""
    server = start_redis(Path(tmp_path_factory.mktemp("redis")))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that kill or stop it."""
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.close()
