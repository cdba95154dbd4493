"""Campaigns on several machines share one corpus through a real redis-server (started here on
loopback, stopped by the test): a second campaign starts from what the first one kept."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from emu.cli import main
from procd_model.fuzz.campaign import CORPUS_KEY
from procd_model.fuzz.database import DatabaseError, open_database

REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if REDIS is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    server = subprocess.Popen(
        [REDIS, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:  # its log, until it says it is ready (EOF if it exits)
            if "Ready to accept connections" in line:
                break
        else:
            pytest.fail("redis-server exited at start")
        url = f"redis://127.0.0.1:{port}"
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_two_campaigns_share_one_corpus_through_redis(redis_url: str, tmp_path: Path) -> None:
    args = ["fuzz", "--examples", "30", "--db", redis_url, "--failures", str(tmp_path / "failures")]
    assert main([*args, "--seed", "1"]) == 0
    database = open_database(redis_url)
    assert database is not None
    first = set(database.fetch(CORPUS_KEY))
    assert first, "the first campaign kept inputs that reached new procd blocks"
    assert main([*args, "--seed", "2"]) == 0
    assert first <= set(database.fetch(CORPUS_KEY)), "the second campaign started from (and kept) the first's corpus"


def test_an_unreachable_redis_is_one_clear_line() -> None:
    with pytest.raises(DatabaseError, match="cannot reach the Redis server"):
        open_database(f"redis://127.0.0.1:{free_port()}")
    with pytest.raises(DatabaseError, match="expected redis://HOST:PORT"):
        open_database("redis://:1/x")
