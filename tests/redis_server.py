"""The fleet tests' redis-server (bench/redis_server.py): skipped locally without the
binary, a failure under CI=true (where .ci/run installs it)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from bench.redis_server import RedisServer, server_binary

__all__ = ["RedisServer", "prefix", "start_redis"]


def start_redis(directory: Path) -> RedisServer:
    binary = server_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed: .ci/run installs it under CI")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return RedisServer(binary, directory)


def prefix() -> str:
    """A key prefix of one test's own, so tests sharing the server never meet."""
    return f"t{uuid.uuid4().hex[:10]}"
