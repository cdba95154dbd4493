"""The example database a campaign shares: a folder, or a Redis server for several machines.

`--db DIR` is Hypothesis's `DirectoryBasedExampleDatabase` (safe for several processes on one
machine); `--db redis://HOST:PORT[/N]` its `RedisExampleDatabase`, so campaigns on several
machines share one corpus and their failures.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase

DEFAULT_DATABASE = ".procd-emu/fuzz-db"


class DatabaseError(ValueError):
    """A --db the campaign cannot use: one line naming it and the problem."""


def open_database(spec: str | None) -> ExampleDatabase | None:
    """The database `spec` names (None: none, examples are not kept)."""
    if spec is None:
        return None
    if not spec.startswith("redis://"):
        path = Path(spec)
        if path.exists() and not path.is_dir():
            raise DatabaseError(f"--db {spec}: not a folder")
        return DirectoryBasedExampleDatabase(path)
    return _redis(spec)


def _redis(spec: str) -> ExampleDatabase:
    try:
        parts = urlsplit(spec)
        host, port = parts.hostname, parts.port or 6379
        number = int(parts.path.strip("/") or 0)
    except ValueError:
        raise DatabaseError(f"--db {spec}: expected redis://HOST:PORT[/DB]") from None
    if not host:
        raise DatabaseError(f"--db {spec}: expected redis://HOST:PORT[/DB]")
    try:
        from hypothesis.extra.redis import RedisExampleDatabase
        from redis import Redis
        from redis.exceptions import RedisError
    except ImportError:
        raise DatabaseError(f"--db {spec}: the redis package is not installed (pip install redis)") from None
    client = Redis(host=host, port=port, db=number, socket_connect_timeout=5)
    try:
        client.ping()
    except RedisError as exc:
        raise DatabaseError(f"--db {spec}: cannot reach the Redis server ({exc})") from None
    return RedisExampleDatabase(client)
