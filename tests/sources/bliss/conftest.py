"""A Redis server with blissdata's modules for every test here (tests/support/redis.py)."""

import pytest

from tests.support.redis import redis_server


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server
