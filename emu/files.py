"""Read an input file whole, but only a regular file of bounded size.

`/dev/zero`, a FIFO or a huge file given where a small file is expected must give a one-line error,
not a MemoryError, the OOM killer or a reader waiting for ever. `read_bounded` opens without
blocking, checks the opened file (so nothing can be swapped in between a check and the read), and
never reads more than its limit plus one byte.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | sum(getattr(os, flag, 0) for flag in ("O_NONBLOCK", "O_CLOEXEC", "O_NOCTTY", "O_BINARY"))
"""Never wait for a FIFO's writer, never make a terminal ours."""


class FileReadError(Exception):
    """Why a file cannot be read; the message does not repeat the path (the caller names it)."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def describe_size(size: int) -> str:
    """`64 MiB` for whole mebibytes, else bytes."""
    return f"{size >> 20} MiB" if size and size % (1 << 20) == 0 else f"{size} bytes"


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The contents of the regular file at `path` (symbolic links followed), at most `limit` bytes.

    Raises FileReadError if it cannot be opened, is not a regular file, or holds more than `limit`
    bytes (checked before reading, and again while reading, in case it grows).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise FileReadError(f"cannot read: {exc.strerror or exc}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise FileReadError(f"is {_kind(status.st_mode)}, not a regular file")
        too_large = FileReadError(f"is larger than the limit of {describe_size(limit)}")
        if status.st_size > limit:
            raise too_large
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            except OSError as exc:
                raise FileReadError(f"cannot read: {exc.strerror or exc}") from None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise too_large
    finally:
        os.close(fd)
